//! The inventory actor: the one owner of the VMs xenith knows. It creates
//! them (the name checked and reserved before the record is written, the
//! record persisted on the blocking pool, the VM's supervisor started under
//! `domains`, a `vm` event; everything undone on failure), takes them back
//! at start (from the records, onto the domains the hypervisor runs), and
//! removes them (the VM retired by its domain actor, so that no operation
//! races the removal; then its record, its supervisor, its console logs).
//! It resolves names and uuids to typed [`VmHandle`]s.
//!
//! It runs after `domains` under the `vms` supervisor (rest_for_one): when
//! `domains` is restarted (past its intensity), the inventory is too, and
//! takes every VM back through the same path as at start.

pub mod disks;
mod error;
mod handle;
mod handlers;
mod messages;
mod state;
mod vdis;

pub use error::InventoryError;
pub use handle::{InventoryHandle, VmCount};
pub use messages::{Create, List, Reconfigure, Remove, Resolve};
pub use state::InventoryActor;

pub use crate::actors::domain::VmHandle;
