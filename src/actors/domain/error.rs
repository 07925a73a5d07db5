//! What a VM's operations can fail with. The API's edge maps each variant
//! to its wire code (src/api/error.rs); the hypervisor's errors become one
//! of these in one place ([`From<HvError>`]).

use std::time::Duration;

use super::state::PowerState;
use crate::actors::supervisor::SupervisorError;
use crate::drivers::{HvError, HypervisorError};

/// A VM operation failed.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// The operation cannot run from the VM's power state.
    #[error("cannot {op} a VM that is {state}")]
    BadPowerState {
        vm: uuid::Uuid,
        op: &'static str,
        state: PowerState,
        /// The state it could have run from.
        expected: PowerState,
    },
    /// Another operation is under way on the VM (it is refused, not queued).
    #[error("another operation is under way on the VM ({op}): try again once it is done")]
    OtherOperation { vm: uuid::Uuid, op: &'static str },
    /// A step of the operation took longer than it may.
    #[error("{step} did not finish within {after:?}")]
    StepTimeout { step: String, after: Duration },
    /// A device plugged into a running guest did not connect in time (it
    /// was taken out again).
    #[error("the guest did not connect {device} within {after:?} (its backend reached {reached}); the device was taken out again")]
    NotConnected {
        device: String,
        reached: crate::xs::XenbusState,
        after: Duration,
    },
    /// The guest did not do what it was asked in time.
    #[error("the guest did not {what} within {after:?} (use force)")]
    GuestTimeout { what: &'static str, after: Duration },
    #[error("{needed_mib} MiB needed, {free_mib} MiB free")]
    NotEnoughMemory { needed_mib: u64, free_mib: u64 },
    /// A parameter of the operation is out of range.
    #[error("{message}")]
    InvalidParam { field: String, message: String },
    /// A device change that the VM's spec refuses.
    #[error(transparent)]
    InvalidDevice(#[from] crate::vm::VmSpecError),
    /// The VM's spec asks for what this host cannot run (a disk or bridge
    /// that is missing, PVH without HAP, a kernel it cannot read).
    #[error("{step}: the VM's spec does not fit this host: {reason}")]
    DoesNotFit { step: String, reason: String },
    /// A VDI a disk names could not be used (its SR gone, its volume
    /// missing, an LV that does not activate).
    #[error(transparent)]
    Storage(#[from] crate::actors::storage::SrError),
    /// The VM has no such device.
    #[error("the VM has no {what} {name:?}")]
    NoDevice { what: &'static str, name: String },
    /// The actor asked for runs only while the domain does.
    #[error("VM {vm} has no running {id} (it runs only while the domain does)")]
    NotRunning { vm: String, id: String },
    /// What was asked is not offered here (a fault on a part that has none).
    #[error("{0}")]
    Unsupported(String),
    /// A step failed; the message is its cause.
    #[error("{step}: {message}")]
    Step { step: String, message: String },
    /// The domain went away (destroyed behind xenith's back): the VM is
    /// being cleaned up.
    #[error("the VM's domain is gone (it is being cleaned up: see vm.get)")]
    DomainGone,
    #[error("the VM's domain actor is not running (it may be restarting)")]
    Unavailable,
    #[error("the VM's domain actor stopped during the operation (it re-reads the domain's state when it restarts: see vm.get)")]
    Interrupted,
    /// The guest did not suspend (it keeps running).
    #[error("the guest did not suspend: {reason}; it keeps running")]
    NoSuspend { reason: String },
    /// A suspend image or migration stream that cannot be used (corrupt,
    /// cut short, another VM's, another host's format).
    #[error("the VM's image cannot be used: {0}")]
    BadImage(String),
    /// The VM is being removed: it takes no more operations.
    #[error("the VM is being removed")]
    Removed,
}

impl VmError {
    /// A step that failed with `error` (its whole chain of causes).
    pub fn step(step: impl Into<String>, error: &dyn std::error::Error) -> Self {
        VmError::Step {
            step: step.into(),
            message: crate::error::chain(error),
        }
    }

    /// A child of the VM's supervisor that did not start: the spec's fault
    /// (a disk that does not exist, a bridge that is missing) or the host's.
    pub fn child(step: impl Into<String>, error: SupervisorError) -> Self {
        match &error {
            SupervisorError::StartFailed { source, .. } if source.is_config() => {
                VmError::DoesNotFit {
                    step: step.into(),
                    reason: source.to_string(),
                }
            }
            _ => VmError::step(step, &error),
        }
    }
}

impl From<actix::MailboxError> for VmError {
    fn from(_: actix::MailboxError) -> Self {
        VmError::Unavailable
    }
}

impl From<HvError> for VmError {
    fn from(e: HvError) -> Self {
        let step = e.call();
        match e {
            HvError::Failed {
                source:
                    HypervisorError::NotEnoughMemory {
                        needed_mib,
                        free_mib,
                    },
                ..
            } => VmError::NotEnoughMemory {
                needed_mib,
                free_mib,
            },
            HvError::Failed {
                source: HypervisorError::InvalidConfig(reason),
                ..
            } => VmError::DoesNotFit {
                step: step.to_owned(),
                reason,
            },
            HvError::Failed {
                source: e @ HypervisorError::Unsupported(_),
                ..
            } => VmError::Unsupported(e.to_string()),
            HvError::Failed {
                source: HypervisorError::NoSuchDomain(_),
                ..
            } => VmError::DomainGone,
            HvError::Timeout { after, .. } => VmError::StepTimeout {
                step: step.to_owned(),
                after,
            },
            HvError::Failed { source, .. } => VmError::step(step, &source),
            HvError::Pool { source, .. } => VmError::step(step, &source),
        }
    }
}
