//! The VDIs a VM's disks are, while its domain runs: each is activated in
//! its SR before the domain's backends open it (an LV is activated; the SR
//! counts the VM as a user, so that the VDI is not destroyed, and a scan
//! does not take the VM's writes for a change behind xenith's back) and
//! deactivated once the domain is gone or the disk unplugged.

use super::env::Ctx;
use super::error::VmError;
use crate::vm::Disk;

/// Activates the VDI of each of `disks` that is one; if one cannot be,
/// those activated are deactivated again and its error answered.
pub async fn activate(c: &Ctx, disks: &[Disk]) -> Result<(), VmError> {
    let mut done: Vec<uuid::Uuid> = Vec::new();
    for d in disks {
        let Some(vdi) = d.vdi else { continue };
        match activate_one(c, d, vdi).await {
            Ok(()) => done.push(vdi),
            Err(e) => {
                for vdi in done {
                    c.env.storage.deactivate(vdi, c.uuid).await;
                }
                return Err(e);
            }
        }
    }
    Ok(())
}

async fn activate_one(c: &Ctx, d: &Disk, vdi: uuid::Uuid) -> Result<(), VmError> {
    let step = format!("activate VDI {vdi} ({})", d.device);
    let active = c.env.storage.activate(vdi, c.uuid).await?;
    if active.path != d.path {
        c.env.storage.deactivate(vdi, c.uuid).await;
        return Err(VmError::DoesNotFit {
            step,
            reason: format!(
                "the VDI's volume is {} now, not {} as when it was attached: unplug the disk and plug it again",
                active.path.display(),
                d.path.display()
            ),
        });
    }
    tracing::debug!(vm = %c.spec.name, %vdi, device = %d.device, path = %active.path.display(), "VDI activated");
    Ok(())
}

/// Deactivates the VDI of each of `disks` that is one.
pub async fn deactivate(c: &Ctx, disks: &[Disk]) {
    for d in disks {
        if let Some(vdi) = d.vdi {
            c.env.storage.deactivate(vdi, c.uuid).await;
        }
    }
}
