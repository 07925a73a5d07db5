//! Boot images prepared ahead of a build: a Xen host keeps each kernel
//! decompressed once, when a VM is defined, so that a start does not pay
//! for it. Every call blocks (decompression, file I/O): callers run them
//! through [`super::blocking::run`].

use std::path::PathBuf;
use std::time::SystemTime;

use super::hypervisor::{BootImage, HypervisorError};

/// What a host prepares for the boot images of the VMs it defines.
pub trait BootImages: Send + Sync + std::fmt::Debug {
    /// Gets `image` ready ahead of a build.
    fn prepare(&self, image: &BootImage) -> Result<(), HypervisorError>;

    /// Drops what [`prepare`](Self::prepare) kept for kernels that are none
    /// of `kernels` (those of the VMs defined: a removed VM's kernel, a
    /// kernel replaced since), except what was prepared after `since`, for
    /// a VM defined after the list was made. Returns how many went.
    fn release(&self, kernels: &[PathBuf], since: SystemTime) -> Result<usize, HypervisorError>;
}

/// A host that builds from the image files as they are (the simulated one).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPreparation;

impl BootImages for NoPreparation {
    fn prepare(&self, _image: &BootImage) -> Result<(), HypervisorError> {
        Ok(())
    }

    fn release(&self, _kernels: &[PathBuf], _since: SystemTime) -> Result<usize, HypervisorError> {
        Ok(0)
    }
}
