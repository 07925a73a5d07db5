//! Disks that name VDIs: the inventory attaches each VDI to its VM's
//! device in the VDI's SR (one writer at a time, VDI_IN_USE otherwise)
//! before the VM is made or the disk plugged, and detaches it when the
//! disk or the VM goes, or when what it was attached for fails.

use crate::actors::storage::StorageHandle;
use crate::drivers::storage::VdiFormat;
use crate::vm::{vdi_refs, DiskFile, DiskMode, VdiDisk, VdiDisks, VmSpec, VmSpecError, VmSpecFile};

use super::InventoryError;

/// The spec checked with every VDI it names standing for a volume: all
/// that validation refuses, short of the VDIs themselves, is refused
/// before anything is attached.
pub fn probe(file: &VmSpecFile, uuid: &uuid::Uuid) -> Result<VmSpec, VmSpecError> {
    file.clone().validate_with(uuid, &stand_ins(&file.disks))
}

/// A disk of `vbd.plug` checked the same way against the VM's spec.
pub fn probe_disk(spec: &VmSpec, disk: &DiskFile) -> Result<(), VmSpecError> {
    spec.with_disk(disk.clone(), &stand_ins(std::slice::from_ref(disk)))
        .map(drop)
}

fn stand_ins(disks: &[DiskFile]) -> VdiDisks {
    vdi_refs(disks)
        .into_iter()
        .map(|key| {
            let stand_in = VdiDisk {
                uuid: uuid::Uuid::nil(),
                path: "/".into(),
                format: VdiFormat::Raw,
            };
            (key, stand_in)
        })
        .collect()
}

/// Attaches the VDIs `disks` name to VM `vm`, in order; if one cannot be,
/// those attached are detached again and its error answered.
pub async fn attach(
    storage: &StorageHandle,
    vm: uuid::Uuid,
    disks: &[DiskFile],
) -> Result<VdiDisks, InventoryError> {
    let mut done: Vec<(uuid::Uuid, String)> = Vec::new();
    let mut found = VdiDisks::new();
    for d in disks {
        let Some(key) = &d.vdi else { continue };
        match storage
            .attach_disk(key, vm, &d.device, d.mode == DiskMode::Rw)
            .await
        {
            Ok(v) => {
                done.push((v.uuid, d.device.clone()));
                found.insert(key.clone(), v);
            }
            Err(e) => {
                detach(storage, vm, done).await;
                return Err(e.into());
            }
        }
    }
    Ok(found)
}

/// The VDIs a spec's disks are, with their devices.
pub fn uses(spec: &VmSpec) -> Vec<(uuid::Uuid, String)> {
    spec.disks
        .iter()
        .filter_map(|d| d.vdi.map(|v| (v, d.device.clone())))
        .collect()
}

/// The VDIs of a spec (or of what was attached for one) as attached for
/// `vm`: what the SRs' records should say.
pub fn attachments(vm: uuid::Uuid, spec: &VmSpec) -> Vec<(uuid::Uuid, crate::storage::Attachment)> {
    spec.disks
        .iter()
        .filter_map(|d| {
            d.vdi.map(|v| {
                let a = crate::storage::Attachment {
                    vm,
                    device: d.device.clone(),
                    writable: d.mode == DiskMode::Rw,
                };
                (v, a)
            })
        })
        .collect()
}

/// Detaches VDIs from VM `vm`'s devices.
pub async fn detach(storage: &StorageHandle, vm: uuid::Uuid, uses: Vec<(uuid::Uuid, String)>) {
    for (vdi, device) in uses {
        storage.detach_disk(vdi, vm, &device).await;
    }
}

/// What was attached for disks `disks` (when what they were attached for
/// fails).
pub fn attached_for(disks: &[DiskFile], vdis: &VdiDisks) -> Vec<(uuid::Uuid, String)> {
    disks
        .iter()
        .filter_map(|d| {
            let v = vdis.get(d.vdi.as_ref()?)?;
            Some((v.uuid, d.device.clone()))
        })
        .collect()
}
