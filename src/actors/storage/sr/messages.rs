//! Messages an SR actor answers.

use std::path::PathBuf;

use actix::Message;

use crate::actors::storage::view::{ActiveVdi, ScanResult, SrView, VdiView};
use crate::actors::storage::SrError;
use crate::drivers::storage::{Job, VdiFormat};
use crate::storage::Attachment;

/// The SR, with its space (read from the SR now).
#[derive(Debug)]
pub struct Info;

impl Message for Info {
    type Result = Result<SrView, SrError>;
}

/// Every VDI of the SR, from its records.
#[derive(Debug)]
pub struct ListVdis;

impl Message for ListVdis {
    type Result = Vec<VdiView>;
}

/// One VDI, with what it takes on the SR now.
#[derive(Debug)]
pub struct GetVdi(pub uuid::Uuid);

impl Message for GetVdi {
    type Result = Result<VdiView, SrError>;
}

/// The VDIs named `key` (a uuid, or a name).
#[derive(Debug)]
pub struct FindVdi(pub String);

impl Message for FindVdi {
    type Result = Vec<uuid::Uuid>;
}

/// A new VDI.
#[derive(Debug)]
pub struct CreateVdi {
    pub name: String,
    pub size_mib: u64,
    pub format: Option<VdiFormat>,
}

impl Message for CreateVdi {
    type Result = Result<uuid::Uuid, SrError>;
}

#[derive(Debug)]
pub struct DestroyVdi(pub uuid::Uuid);

impl Message for DestroyVdi {
    type Result = Result<(), SrError>;
}

#[derive(Debug)]
pub struct ResizeVdi {
    pub vdi: uuid::Uuid,
    pub size_mib: u64,
}

impl Message for ResizeVdi {
    type Result = Result<(), SrError>;
}

/// A read-only point-in-time snapshot; answers its uuid.
#[derive(Debug)]
pub struct Snapshot {
    pub vdi: uuid::Uuid,
    pub name: Option<String>,
}

impl Message for Snapshot {
    type Result = Result<uuid::Uuid, SrError>;
}

/// A writable clone sharing the VDI's blocks; answers its uuid.
#[derive(Debug)]
pub struct CloneVdi {
    pub vdi: uuid::Uuid,
    pub name: Option<String>,
}

impl Message for CloneVdi {
    type Result = Result<uuid::Uuid, SrError>;
}

/// An image to copy into the SR.
#[derive(Debug)]
pub struct Source {
    pub path: PathBuf,
    pub format: VdiFormat,
    pub virtual_bytes: u64,
    /// What it and the volumes under it (its backing chain) take now:
    /// what a thin copy needs.
    pub physical_bytes: u64,
    /// What it is, for the record ("vdi <uuid>", "file <path>").
    pub describe: String,
}

/// A new VDI holding a copy of `source`; answers its uuid.
#[derive(Debug)]
pub struct CopyIn {
    pub name: String,
    pub format: Option<VdiFormat>,
    pub source: Source,
    pub job: Job,
}

impl Message for CopyIn {
    type Result = Result<uuid::Uuid, SrError>;
}

/// A VDI held still (no other operation on it) while it is read from
/// elsewhere: a copy's source, an export.
#[derive(Debug)]
pub struct Lease {
    pub source: Source,
    pub name: String,
    /// Held until the reader is done.
    pub guard: tokio::sync::OwnedMutexGuard<()>,
}

/// Leases a VDI for reading (activating it if it must be).
#[derive(Debug)]
pub struct Hold(pub uuid::Uuid);

impl Message for Hold {
    type Result = Result<Lease, SrError>;
}

/// Ends a lease (deactivating the VDI unless a VM uses it).
#[derive(Debug)]
pub struct Release(pub uuid::Uuid);

impl Message for Release {
    type Result = ();
}

/// A VM's spec names the VDI (`vm.create`, `vbd.plug`, the inventory's
/// start): one writer at a time.
#[derive(Debug)]
pub struct Attach {
    pub vdi: uuid::Uuid,
    pub attachment: Attachment,
}

impl Message for Attach {
    /// Where the VDI's volume is and how its blocks are stored.
    type Result = Result<crate::vm::VdiDisk, SrError>;
}

/// A VM's spec no longer names the VDI.
#[derive(Debug)]
pub struct Detach {
    pub vdi: uuid::Uuid,
    pub vm: uuid::Uuid,
    pub device: String,
}

impl Message for Detach {
    type Result = ();
}

/// The attachments of every VM, as the inventory knows them (at its start):
/// what the records say of VMs that no longer name a VDI is dropped.
#[derive(Debug)]
pub struct Reconcile(pub Vec<(uuid::Uuid, Attachment)>);

impl Message for Reconcile {
    type Result = ();
}

/// A running VM's backend needs the VDI: made usable (an LV activated).
#[derive(Debug)]
pub struct Activate {
    pub vdi: uuid::Uuid,
    pub vm: uuid::Uuid,
}

impl Message for Activate {
    type Result = Result<ActiveVdi, SrError>;
}

/// A VM's backend no longer uses the VDI.
#[derive(Debug)]
pub struct Deactivate {
    pub vdi: uuid::Uuid,
    pub vm: uuid::Uuid,
}

impl Message for Deactivate {
    type Result = ();
}

/// Finds volumes xenith did not make, and records gone or changed.
#[derive(Debug)]
pub struct Scan;

impl Message for Scan {
    type Result = Result<ScanResult, SrError>;
}

/// Destroys every VDI (none may be attached), then what the SR made on the
/// host (`sr.destroy`); with `keep_volumes`, only checks that none is
/// attached (`sr.forget`).
#[derive(Debug)]
pub struct Dismantle {
    pub keep_volumes: bool,
}

impl Message for Dismantle {
    type Result = Result<(), SrError>;
}
