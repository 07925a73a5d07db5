//! VM definitions: the spec (CONTRACT.md `vm.create`, and config/vms/*.toml
//! files, field for field) and the records xenith keeps of its VMs.

pub mod disk;
pub mod image;
pub mod layout;
pub mod record;
pub mod spec;

pub use disk::{vdi_refs, Disk, DiskFile, DiskMode, VbdBackend, VdiDisk, VdiDisks};
pub use record::{RecordError, RecordStore, VmRecord};
pub use spec::{Nic, NicFile, OnEvent, VmSpec, VmSpecError, VmSpecFile, MIN_MEMORY_MIB};
