//! What storage requests can fail with.

use crate::actors::supervisor::SupervisorError;
use crate::drivers::blocking::PoolError;
use crate::drivers::storage::StorageError;
use crate::storage::{StorageRecordError, StorageSpecError};

/// A storage request (an SR's, or the catalog's) failed.
#[derive(Debug, thiserror::Error)]
pub enum SrError {
    #[error("no {what} {key:?}")]
    NotFound { what: &'static str, key: String },
    #[error("{count} {what}s are named {key:?}: name it by its uuid{hint}")]
    Ambiguous {
        what: &'static str,
        key: String,
        count: usize,
        hint: &'static str,
    },
    #[error(transparent)]
    Invalid(#[from] StorageSpecError),
    #[error("VDI {vdi} is in use by VM {vm} ({device}): {why}")]
    InUse {
        vdi: uuid::Uuid,
        vm: uuid::Uuid,
        device: String,
        why: String,
    },
    #[error("VDI {vdi} is the parent of {}: destroy those first", .children.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    HasChildren {
        vdi: uuid::Uuid,
        children: Vec<uuid::Uuid>,
    },
    #[error("VDI {vdi} is read-only (a snapshot): {what}")]
    ReadOnly { vdi: uuid::Uuid, what: &'static str },
    #[error("SR {sr} has {free_mib} MiB free; {needed_mib} MiB are needed")]
    Full {
        sr: uuid::Uuid,
        needed_mib: u64,
        free_mib: u64,
    },
    #[error("an SR named {name} exists ({uuid})")]
    NameTaken { name: String, uuid: uuid::Uuid },
    #[error("{field}: {message}")]
    Param { field: String, message: String },
    #[error("VDI {vdi} is being changed ({op}): try again when that ends")]
    Busy { vdi: uuid::Uuid, op: &'static str },
    #[error(transparent)]
    Backend(#[from] StorageError),
    #[error("the storage records")]
    Record(#[from] StorageRecordError),
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error("start the SR's actor")]
    Supervisor(#[from] SupervisorError),
    #[error("{0} is not running (it may be restarting)")]
    Unavailable(&'static str),
}

impl SrError {
    pub(crate) fn param(field: &str, message: impl Into<String>) -> Self {
        SrError::Param {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}
