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
    check_name, check_size, paths_overlap, SrConfig, SrConfigFile, SrCreate, SrType,
    StorageSpecError, VdiFormat, MAX_SIZE_MIB,
};
