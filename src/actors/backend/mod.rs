//! Device backend actors: one per VBD and per VIF, the same shape for both.
//! Each is the toolstack's side of one device, as libxl and its hotplug
//! scripts are for xl; the backend half itself is the dom0 kernel's
//! blkback or netback (the real ones on Xen, simulated ones on the
//! simulated host: drivers/sim/backends.rs), which own the backend's
//! `state`.
//!
//! - plug (hotplug.rs): the host side (a loop device for a disk image),
//!   both trees (docs/libxl-xenstore-layout.md §3) with state 1 and
//!   `physical-device`; for a NIC, netback's `vifD.N` brought up on its
//!   bridge and `hotplug-status = connected`;
//! - then: follows the backend's state (InitWait, Connected once the guest's
//!   frontend connects...) and tells the VM's [`DeviceStates`] and the
//!   event bus;
//! - unplug: `online = 0`, Closing; when blkback/netback say Closed (or
//!   after a timeout), both trees are removed and the host side released;
//! - release (the domain is going): the same without waiting for anyone.
//!
//! A backend actor that restarts (a panic in it) re-syncs from xenstore: it
//! reads the states there and carries on from them, without rewriting the
//! trees or disturbing the guest.

mod device_states;
mod handle;
mod handlers;
mod hotplug;
mod messages;
mod state;

use std::sync::Arc;
use std::time::Duration;

pub use device_states::{DeviceEvents, DeviceStates};
pub use handle::{BackendError, BackendHandle};
pub use hotplug::{Hotplug, HotplugError};
pub use messages::{DeviceStatus, Release, Unplug};
pub use state::BackendActor;

use crate::actors::child::ChildId;
use crate::drivers::devices::DeviceHost;
use crate::drivers::xenstore::XsClient;
use crate::vm::layout::DeviceTrees;
use crate::xs::DeviceKind;

/// How long an unplug waits for the frontend to close.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a backend drives.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    pub kind: DeviceKind,
    /// "xvda", "0"...: the device's name in the VM.
    pub name: String,
    pub trees: DeviceTrees,
    /// What the hotplug step does on the host.
    pub hotplug: Hotplug,
}

impl DeviceSpec {
    /// Its actor's id in the VM's supervisor: "vbd:xvda", "vif:0".
    pub fn child_id(&self) -> ChildId {
        ChildId::Device(self.kind, self.name.clone())
    }
}

/// Releases a device whose actor is not there to do it (it died and was
/// not restarted): what [`Release`] does.
pub async fn release_orphan(
    xs: &XsClient,
    devices: &Arc<dyn DeviceHost>,
    device: &DeviceSpec,
) -> Result<(), HotplugError> {
    hotplug::release(xs, devices, device).await
}
