//! What storage requests answer: SRs and VDIs as the API shows them.

use serde::Serialize;

use crate::drivers::storage::{SrType, VdiFormat};
use crate::storage::{Attachment, Pending, SrConfig, VdiRecord};

/// One VDI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VdiView {
    pub uuid: uuid::Uuid,
    pub name: String,
    pub sr: uuid::Uuid,
    pub format: VdiFormat,
    pub size_mib: u64,
    /// What it takes on the SR (vdi.get reads it; lists leave it out).
    pub physical_mib: Option<u64>,
    pub read_only: bool,
    pub snapshot_of: Option<uuid::Uuid>,
    pub parent: Option<uuid::Uuid>,
    pub attached: Vec<Attachment>,
    /// The file or LV name in its SR.
    pub location: String,
    pub adopted: bool,
    /// An operation under way.
    pub pending: Option<Pending>,
    /// Its volume was not found in the SR at the last scan.
    pub missing: bool,
    /// Running VMs using it now.
    pub active: usize,
}

impl VdiView {
    pub fn of(r: &VdiRecord, missing: bool) -> Self {
        VdiView {
            uuid: r.uuid,
            name: r.name.clone(),
            sr: r.sr,
            format: r.format,
            size_mib: r.size_mib,
            physical_mib: None,
            read_only: r.read_only,
            snapshot_of: r.snapshot_of,
            parent: r.parent,
            attached: r.attached.clone(),
            location: r.location.clone(),
            adopted: r.adopted,
            pending: r.pending.clone(),
            missing,
            active: r.active.len(),
        }
    }
}

/// One SR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SrView {
    pub uuid: uuid::Uuid,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: SrType,
    pub config: SrConfig,
    pub size_mib: u64,
    pub free_mib: u64,
    pub vdis: Vec<VdiRef>,
    /// Why the SR cannot be reached now (its directory gone, its volume
    /// group missing), if it cannot.
    pub fault: Option<String>,
}

/// A VDI named in an SR's view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VdiRef {
    pub uuid: uuid::Uuid,
    pub name: String,
}

/// What `sr.scan` found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ScanResult {
    /// VDIs adopted: volumes in the SR xenith did not know.
    pub added: Vec<VdiRef>,
    /// VDIs whose volume is gone (their records are kept, flagged).
    pub missing: Vec<VdiRef>,
    /// VDIs whose volume changed behind xenith's back (its size or
    /// modification time moved while no VM of xenith's was using it).
    pub changed: Vec<VdiRef>,
}

/// How a backend reaches a VDI a running VM uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveVdi {
    pub vdi: uuid::Uuid,
    pub path: std::path::PathBuf,
    pub format: VdiFormat,
    pub block: bool,
}

/// MiB, rounded up.
pub fn mib(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 20)
}
