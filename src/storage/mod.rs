//! Storage as data: storage repositories (SRs) and the virtual disk images
//! (VDIs) they hold, as XAPI's Storage Manager models them. The DTOs of
//! `sr.create` and `vdi.*` are validated here into runtime types; the
//! records (one TOML file per SR and per VDI, written atomically) are read
//! and written here. Pure functions and record files: the SR actors
//! (src/actors/storage) own the state, the SR drivers (src/drivers/storage)
//! do the work on the host.

pub mod record;
pub mod spec;

pub use record::{
    plain_location, Attachment, Pending, SrRecord, Stamp, StorageRecordError, StorageRecords,
    VdiRecord,
};
pub use spec::{
    check_name, check_size, fit_name, paths_overlap, SrConfig, SrConfigFile, SrCreate, SrType,
    StorageSpecError, VdiFormat, MAX_SIZE_MIB,
};

use std::sync::Arc;

use crate::drivers::storage::{FileSr, LvmSr, SrDriver, StorageTools};

/// The driver of an SR, by its type (chosen at run time, like the
/// hypervisor's backend).
pub fn driver(config: &SrConfig, tools: &StorageTools) -> Arc<dyn SrDriver> {
    match config {
        SrConfig::File { path } => Arc::new(FileSr::new(path.clone(), tools.clone())),
        SrConfig::Lvm {
            vg,
            thin_pool,
            device,
        } => Arc::new(LvmSr::new(
            vg.clone(),
            thin_pool.clone(),
            device.clone(),
            tools.clone(),
        )),
    }
}

/// Where a new VDI lives in its SR: named for its uuid.
pub fn location_for(uuid: &uuid::Uuid, kind: SrType, format: VdiFormat) -> String {
    match kind {
        SrType::File => format!("{uuid}.{}", format.as_str()),
        SrType::Lvm => format!("vdi-{uuid}"),
    }
}
