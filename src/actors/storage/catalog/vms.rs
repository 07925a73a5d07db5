//! What VMs do with VDIs, through the storage handle: the inventory
//! attaches a VDI when a VM's spec comes to name it (one writer at a
//! time) and detaches it when it no longer does; the domain actor
//! activates it while the VM runs (an LV is activated, the SR counts the
//! VM as a user) and deactivates it when the VM stops.

use futures_util::future::join_all;

use super::handle::StorageHandle;
use crate::actors::storage::view::ActiveVdi;
use crate::actors::storage::SrError;
use crate::storage::Attachment;
use crate::vm::VdiDisk;

impl StorageHandle {
    /// Attaches the VDI named `key` (uuid, name or SR/NAME) to a VM's
    /// device; answers where its volume is.
    pub async fn attach_disk(
        &self,
        key: &str,
        vm: uuid::Uuid,
        device: &str,
        writable: bool,
    ) -> Result<VdiDisk, SrError> {
        let (sr, vdi) = self.vdi(key).await?;
        sr.attach(
            vdi,
            Attachment {
                vm,
                device: device.to_owned(),
                writable,
            },
        )
        .await
    }

    /// The VM's device no longer names the VDI (its SR gone: nothing to do).
    pub async fn detach_disk(&self, vdi: uuid::Uuid, vm: uuid::Uuid, device: &str) {
        match self.vdi(&vdi.to_string()).await {
            Ok((sr, vdi)) => sr.detach(vdi, vm, device.to_owned()).await,
            Err(e) => {
                tracing::debug!(%vdi, %vm, error = %crate::error::chain(&e), "detaching a VDI no SR has")
            }
        }
    }

    /// A VM starts using the VDI: answers how its backend reaches it.
    pub async fn activate(&self, vdi: uuid::Uuid, vm: uuid::Uuid) -> Result<ActiveVdi, SrError> {
        let (sr, vdi) = self.vdi(&vdi.to_string()).await?;
        sr.activate(vdi, vm).await
    }

    /// A VM stopped using the VDI.
    pub async fn deactivate(&self, vdi: uuid::Uuid, vm: uuid::Uuid) {
        match self.vdi(&vdi.to_string()).await {
            Ok((sr, vdi)) => sr.deactivate(vdi, vm).await,
            Err(e) => {
                tracing::debug!(%vdi, %vm, error = %crate::error::chain(&e), "deactivating a VDI no SR has")
            }
        }
    }

    /// Every VDI's attachments are those the VMs' records name: each SR
    /// keeps those of its own VDIs and drops the others'.
    pub async fn reconcile(&self, all: Vec<(uuid::Uuid, Attachment)>) -> Result<(), SrError> {
        let srs = self.srs().await?;
        for r in join_all(srs.iter().map(|sr| sr.reconcile(all.clone()))).await {
            r?;
        }
        Ok(())
    }
}
