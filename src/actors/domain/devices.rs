//! Device hotplug (`vbd.plug`, `vbd.unplug`, `vif.plug`, `vif.unplug`) as
//! a plan: the VM's spec after the change and the device it concerns. The
//! domain actor carries it out like its other operations (ops.rs): on a
//! running VM the device's backend actor is started (plug) or asked to
//! close and removed (unplug); in every state the VM's spec and record
//! change, so the device stays (or stays gone) across restarts of the VM
//! and of xenithd.

use super::error::VmError;
use crate::vm::{DiskFile, NicFile, VdiDisks, VmSpec};
use crate::xs::DeviceKind;

/// A change to a VM's devices.
#[derive(Debug, Clone)]
pub enum DeviceChange {
    /// A disk, with the VDI it names once the inventory has attached it.
    PlugDisk(DiskFile, VdiDisks),
    UnplugDisk(String),
    PlugNic(NicFile),
    /// The NIC's device id, as text ("0", "1"...).
    UnplugNic(String),
}

impl DeviceChange {
    /// Plugs a disk (a VDI it names is attached by the inventory first).
    pub fn plug_disk(disk: DiskFile) -> Self {
        DeviceChange::PlugDisk(disk, VdiDisks::new())
    }

    pub fn plugs(&self) -> bool {
        matches!(self, DeviceChange::PlugDisk(..) | DeviceChange::PlugNic(_))
    }
}

/// What a change comes to, before it is carried out.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The VM's spec once the change is made.
    pub spec: VmSpec,
    pub kind: DeviceKind,
    /// The device's name ("xvdb", "1").
    pub name: String,
    pub plug: bool,
}

fn no_device(what: &'static str, name: &str) -> VmError {
    VmError::NoDevice {
        what,
        name: name.to_owned(),
    }
}

/// The plan of `change` on a VM whose spec is `current`.
pub fn plan(current: &VmSpec, uuid: &uuid::Uuid, change: DeviceChange) -> Result<Plan, VmError> {
    Ok(match change {
        DeviceChange::PlugDisk(d, vdis) => {
            let (spec, disk) = current.with_disk(d, &vdis)?;
            Plan {
                spec,
                kind: DeviceKind::Vbd,
                name: disk.device,
                plug: true,
            }
        }
        DeviceChange::PlugNic(n) => {
            let (spec, nic) = current.with_nic(uuid, n)?;
            Plan {
                spec,
                kind: DeviceKind::Vif,
                name: nic.devid.to_string(),
                plug: true,
            }
        }
        DeviceChange::UnplugDisk(device) => {
            let spec = current
                .without_disk(&device)
                .ok_or_else(|| no_device("disk", &device))?;
            Plan {
                spec,
                kind: DeviceKind::Vbd,
                name: device,
                plug: false,
            }
        }
        DeviceChange::UnplugNic(device) => {
            let spec = device
                .parse::<u32>()
                .ok()
                .and_then(|devid| current.without_nic(devid))
                .ok_or_else(|| no_device("nic", &device))?;
            Plan {
                spec,
                kind: DeviceKind::Vif,
                name: device,
                plug: false,
            }
        }
    })
}
