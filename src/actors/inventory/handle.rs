//! The typed handle to the inventory.

use tokio::sync::watch;

use super::messages::{Create, List, Reconfigure, Remove, Resolve};
use super::state::InventoryActor;
use super::InventoryError;
use crate::actors::domain::{DeviceChange, VmHandle, VmSnapshot};
use crate::actors::slot::AddrSlot;
use crate::vm::VmSpecFile;

/// How many VMs the inventory holds, as it last said.
pub type VmCount = watch::Receiver<usize>;

/// What the API and the host actor hold of the inventory.
#[derive(Debug, Clone)]
pub struct InventoryHandle {
    slot: AddrSlot<InventoryActor>,
}

impl InventoryHandle {
    pub fn new(slot: AddrSlot<InventoryActor>) -> Self {
        Self { slot }
    }

    fn addr(&self) -> Result<actix::Addr<InventoryActor>, InventoryError> {
        self.slot.get().ok_or(InventoryError::Unavailable)
    }

    /// Defines a VM; returns its uuid.
    pub async fn create(&self, spec: VmSpecFile) -> Result<uuid::Uuid, InventoryError> {
        self.addr()?.send(Create(Box::new(spec))).await?
    }

    /// Forgets a Halted VM; returns its last state.
    pub async fn remove(&self, key: &str) -> Result<VmSnapshot, InventoryError> {
        self.addr()?.send(Remove(key.to_owned())).await?
    }

    /// Plugs or unplugs a VM's device (one writer per disk is checked
    /// first); returns the VM's uuid and the device's name.
    pub async fn reconfigure(
        &self,
        key: &str,
        change: DeviceChange,
    ) -> Result<(uuid::Uuid, String), InventoryError> {
        self.addr()?
            .send(Reconfigure(key.to_owned(), change))
            .await?
    }

    /// The VM named `key` (its uuid or its name).
    pub async fn resolve(&self, key: &str) -> Result<VmHandle, InventoryError> {
        self.addr()?
            .send(Resolve(key.to_owned()))
            .await?
            .ok_or_else(|| InventoryError::NotFound(key.to_owned()))
    }

    /// Every VM, by name.
    pub async fn list(&self) -> Result<Vec<VmHandle>, InventoryError> {
        Ok(self.addr()?.send(List).await?)
    }
}
