//! Fault injection into a guest itself (`fault.inject` kind `hang`): only a
//! simulated guest can be told to misbehave, so only the simulated host
//! offers it.

use super::hypervisor::{DomId, HypervisorError};
use crate::xs::DeviceKind;

/// A misbehaviour a simulated guest can be told to adopt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestFault {
    /// The guest stops answering xenstore (control/shutdown, its frontends).
    Hang,
    /// One frontend (its kind and devid) stops following its backend.
    HangFrontend { kind: DeviceKind, devid: u32 },
}

/// A host whose guests can be told to misbehave.
pub trait GuestFaults: Send + Sync + std::fmt::Debug {
    fn inject(&self, domid: DomId, fault: GuestFault) -> Result<(), HypervisorError>;
}
