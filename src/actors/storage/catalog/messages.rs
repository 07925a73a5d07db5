//! Messages the storage catalog answers.

use actix::Message;

use crate::actors::storage::sr::SrHandle;
use crate::actors::storage::SrError;
use crate::storage::{SrConfigFile, SrType};

/// A new SR (made ready on the host, recorded, its actor started).
#[derive(Debug)]
pub struct CreateSr {
    pub name: String,
    pub kind: SrType,
    pub config: SrConfigFile,
}

impl Message for CreateSr {
    type Result = Result<uuid::Uuid, SrError>;
}

/// Ends an SR: its VDIs and what it made on the host too (`sr.destroy`),
/// or its records only (`sr.forget`, `keep_volumes`).
#[derive(Debug)]
pub struct RemoveSr {
    pub key: String,
    pub keep_volumes: bool,
}

impl Message for RemoveSr {
    type Result = Result<(), SrError>;
}

/// An SR by uuid or name.
#[derive(Debug)]
pub struct ResolveSr(pub String);

impl Message for ResolveSr {
    type Result = Option<SrHandle>;
}

/// Every SR, by name.
#[derive(Debug)]
pub struct ListSrs;

impl Message for ListSrs {
    type Result = Vec<SrHandle>;
}
