//! Messages the domain actor answers, and the operations a VM runs.

use std::time::Duration;

use actix::Message;

use super::devices::DeviceChange;
use super::error::VmError;
use super::state::PowerState;

/// A power operation on a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmOp {
    Start {
        paused: bool,
    },
    /// Clean (the guest acknowledges control/shutdown within `timeout`),
    /// or at once with `force`; with `fallback`, a clean shutdown that
    /// times out becomes a hard one.
    Shutdown {
        force: bool,
        timeout: Duration,
        fallback: bool,
    },
    Reboot {
        force: bool,
    },
    Pause,
    Unpause,
    Kill,
    /// The balloon target, in MiB (at most the VM's memory): the
    /// hypervisor's side, then the guest's `memory/target`.
    SetMemoryTarget {
        mib: u64,
    },
}

/// Everything a VM's domain actor runs, one at a time, through one gate
/// (the power states it may start from), with one busy marker and one reply.
#[derive(Debug, Clone)]
pub enum Operation {
    Power(VmOp),
    /// A device plugged or unplugged (in every state but Suspended and
    /// Crashed; on a running VM its backend is started or stopped).
    Device(DeviceChange),
    /// The VM is about to be removed: it must be Halted, and takes no
    /// operation after this one.
    Retire,
    /// A retirement undone (the removal failed): operations are taken again.
    Unretire,
    /// The running VM's memory saved into its suspend image (the guest
    /// asked, within `timeout`); the domain then goes. Progress on `job`.
    Suspend {
        timeout: Duration,
        job: crate::drivers::storage::Job,
    },
    /// The Suspended VM running again from its image (paused if asked).
    Resume {
        paused: bool,
    },
}

impl Operation {
    /// The operation's name, as its busy marker and errors say it.
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Power(op) => match op {
                VmOp::Start { .. } => "start",
                VmOp::Shutdown { .. } => "shutdown",
                VmOp::Reboot { .. } => "reboot",
                VmOp::Pause => "pause",
                VmOp::Unpause => "unpause",
                VmOp::Kill => "kill",
                VmOp::SetMemoryTarget { .. } => "set_memory_target",
            },
            Operation::Device(change) if change.plugs() => "plug",
            Operation::Device(_) => "unplug",
            Operation::Retire => "remove",
            Operation::Unretire => "keep",
            Operation::Suspend { .. } => "suspend",
            Operation::Resume { .. } => "resume",
        }
    }

    /// The states it may start from, the first being the one to name.
    pub fn allowed(&self) -> &'static [PowerState] {
        use PowerState::*;
        match self {
            Operation::Power(op) => match op {
                VmOp::Start { .. } => &[Halted],
                VmOp::Shutdown { force: false, .. } | VmOp::Reboot { force: false } => &[Running],
                VmOp::Shutdown { force: true, .. } | VmOp::Reboot { force: true } | VmOp::Kill => {
                    &[Running, Paused, Suspended, Crashed]
                }
                VmOp::Pause => &[Running],
                VmOp::Unpause => &[Paused],
                VmOp::SetMemoryTarget { .. } => &[Running, Paused],
            },
            Operation::Device(_) => &[Running, Halted, Paused],
            Operation::Retire | Operation::Unretire => &[Halted],
            Operation::Suspend { .. } => &[Running],
            Operation::Resume { .. } => &[Suspended],
        }
    }
}

/// What an operation answers once the VM has reached its new state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpReply {
    Done,
    /// The VM halted while the operation waited for it; why it did (the
    /// guest powered off, it was killed meanwhile...).
    Halted(String),
    /// A device change: the device's name ("xvdb", "1").
    Device(String),
}

/// Runs an operation; answers when the VM has reached its new state.
#[derive(Debug)]
pub struct Run(pub Operation);

impl Message for Run {
    type Result = Result<OpReply, VmError>;
}
