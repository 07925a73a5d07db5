//! Messages the inventory answers.

use actix::Message;

use super::InventoryError;
use crate::actors::domain::{DeviceChange, VmHandle, VmSnapshot};
use crate::vm::VmSpecFile;

/// Defines a VM; answers its uuid.
#[derive(Debug)]
pub struct Create(pub Box<VmSpecFile>);

impl Message for Create {
    type Result = Result<uuid::Uuid, InventoryError>;
}

/// Forgets a Halted VM (by uuid or name); answers its last state.
#[derive(Debug)]
pub struct Remove(pub String);

impl Message for Remove {
    type Result = Result<VmSnapshot, InventoryError>;
}

/// Changes a VM's devices (by uuid or name); answers the VM's uuid and the
/// device's name. A disk is checked against every VM's first.
#[derive(Debug)]
pub struct Reconfigure(pub String, pub DeviceChange);

impl Message for Reconfigure {
    type Result = Result<(uuid::Uuid, String), InventoryError>;
}

/// A VM by uuid or name.
#[derive(Debug)]
pub struct Resolve(pub String);

impl Message for Resolve {
    type Result = Option<VmHandle>;
}

/// Every VM, by name.
#[derive(Debug)]
pub struct List;

impl Message for List {
    type Result = Vec<VmHandle>;
}
