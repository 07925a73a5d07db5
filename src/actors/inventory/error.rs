//! What the inventory's requests can fail with.

use crate::actors::domain::VmError;
use crate::actors::storage::SrError;
use crate::actors::supervisor::SupervisorError;
use crate::vm::{RecordError, VmSpecError};

/// An inventory request failed.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("no VM {0:?}")]
    NotFound(String),
    /// The name is another VM's, or one being created now.
    #[error("a VM named {name} exists{}", .uuid.map(|u| format!(" ({u})")).unwrap_or_default())]
    NameTaken {
        name: String,
        uuid: Option<uuid::Uuid>,
    },
    #[error("spec.{0}")]
    InvalidSpec(VmSpecError),
    /// The disk has a writer already, or readers and it would be written.
    #[error("{} is attached {} to VM {vm} ({device}): a disk has one writer; {hint}", .path.display(), if *.writable { "read-write" } else { "read-only" })]
    DiskInUse {
        path: std::path::PathBuf,
        vm: String,
        device: String,
        /// Whether the holder writes it.
        writable: bool,
        hint: &'static str,
    },
    #[error(transparent)]
    Vm(#[from] VmError),
    /// A VDI a disk names could not be attached (not found, in use...).
    #[error(transparent)]
    Storage(#[from] SrError),
    #[error("the VM record")]
    Record(#[source] RecordError),
    #[error("start the VM's supervisor")]
    Supervisor(#[source] SupervisorError),
    #[error("the VM inventory is not running (it may be restarting)")]
    Unavailable,
}

impl From<actix::MailboxError> for InventoryError {
    fn from(_: actix::MailboxError) -> Self {
        InventoryError::Unavailable
    }
}
