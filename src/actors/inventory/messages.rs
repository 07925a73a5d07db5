//! Messages the inventory answers.

use actix::Message;

use super::InventoryError;
use crate::actors::domain::{VmHandle, VmSnapshot};
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
