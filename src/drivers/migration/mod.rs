//! Saving a domain's memory and restoring it: what libxenguest's
//! xc_domain_save and xc_domain_restore do for libxl (through
//! libxl-save-helper) and for XAPI (through emu-manager). The driver
//! writes and reads the hypervisor's own memory stream; xenith's image
//! format (crate::vm::image) frames it, and the domain actor orchestrates
//! (the guest's suspend, the devices, the records).
//!
//! Every call blocks for as long as the memory takes to move: callers run
//! them on the blocking pool. The one thing a save needs of the toolstack
//! midway, the guest's suspend, it asks through [`SaveHooks`].

pub mod images;

use std::io::{Read, Write};

pub use images::SuspendImages;

use super::hypervisor::{Built, DomId, DomainType, HypervisorError};

/// How a save goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaveOptions {
    /// Pre-copy while the guest runs (a live migration); otherwise the
    /// guest is suspended first and its memory sent once.
    pub live: bool,
    /// The most pre-copy iterations before the guest is suspended.
    pub max_iterations: u32,
    /// Pre-copy stops once no more pages than this are dirty (what
    /// remains is sent with the guest suspended: the downtime).
    pub dirty_threshold_pages: u64,
}

impl SaveOptions {
    pub fn suspend() -> Self {
        SaveOptions {
            live: false,
            max_iterations: 1,
            dirty_threshold_pages: 0,
        }
    }

    /// libxc's own bounds: 5 iterations, 50 pages.
    pub fn live() -> Self {
        SaveOptions {
            live: true,
            max_iterations: 5,
            dirty_threshold_pages: 50,
        }
    }
}

/// What a save did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SaveStats {
    /// Bytes of memory stream written.
    pub bytes: u64,
    /// Pages sent, resends included.
    pub pages_sent: u64,
    /// Iterations, the last (the guest suspended) included.
    pub iterations: u32,
    /// Pages sent while the guest was suspended.
    pub final_pages: u64,
}

/// Progress through a save, as the precopy policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaveProgress {
    pub iteration: u32,
    /// Pages sent in this iteration so far, of `pages`.
    pub sent: u64,
    pub pages: u64,
    /// The domain's pages.
    pub total_pages: u64,
}

/// What a save asks of the toolstack as it goes.
pub trait SaveHooks {
    /// Suspends the guest now (control/shutdown = "suspend", then waits
    /// for SHUTDOWN_suspend): the last iteration follows. An error ends
    /// the save; the guest keeps running.
    fn suspend(&mut self) -> Result<(), SaveError>;

    fn progress(&mut self, progress: SaveProgress);

    /// Whether the save should stop (a cancel, the peer gone).
    fn cancelled(&self) -> bool {
        false
    }
}

/// A save or a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error("{0}")]
    Unsupported(String),
    #[error(transparent)]
    Hypervisor(#[from] HypervisorError),
    #[error("the memory stream cannot be written or read")]
    Io(#[source] std::io::Error),
    #[error("the memory stream is corrupt: {0}")]
    Corrupt(String),
    #[error("the guest did not suspend: {0}")]
    Suspend(String),
    #[error("cancelled")]
    Cancelled,
    #[error("the save helper failed: {0}")]
    Helper(String),
}

impl SaveError {
    /// An I/O error of the stream, or the image error it carries.
    pub fn from_io(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            return SaveError::Corrupt("the memory stream ends early".into());
        }
        SaveError::Io(e)
    }
}

/// Saving and restoring domains on this host.
pub trait DomainSaver: Send + Sync + std::fmt::Debug {
    /// The memory stream format it writes and reads (an image's
    /// `memory_format`; a restore refuses another).
    fn memory_format(&self) -> &'static str;

    /// Whether a domain of this type can be saved here (an error says why not).
    fn supports(&self, domain_type: DomainType) -> Result<(), SaveError>;

    /// Writes the domain's memory stream to `out`, suspending the guest
    /// through `hooks` when the time comes. The domain is left suspended
    /// (the caller destroys it, or resumes it if the save is abandoned).
    fn save(
        &self,
        domid: DomId,
        options: &SaveOptions,
        out: &mut dyn Write,
        hooks: &mut dyn SaveHooks,
    ) -> Result<SaveStats, SaveError>;

    /// Loads a memory stream into a domain just created (paused, not
    /// built): it is then as the guest left it, paused; what it needs for
    /// xenstore and its console is answered.
    fn restore(&self, domid: DomId, input: &mut dyn Read) -> Result<Built, SaveError>;

    /// Resumes a domain whose save was abandoned (xc_domain_resume): the
    /// guest carries on where it was suspended.
    fn resume(&self, domid: DomId) -> Result<(), SaveError>;
}

/// A host whose saves are not available, saying why.
#[derive(Debug)]
pub struct NoSaver(pub &'static str);

impl DomainSaver for NoSaver {
    fn memory_format(&self) -> &'static str {
        "none"
    }

    fn supports(&self, _: DomainType) -> Result<(), SaveError> {
        Err(SaveError::Unsupported(self.0.to_owned()))
    }

    fn save(
        &self,
        _: DomId,
        _: &SaveOptions,
        _: &mut dyn Write,
        _: &mut dyn SaveHooks,
    ) -> Result<SaveStats, SaveError> {
        Err(SaveError::Unsupported(self.0.to_owned()))
    }

    fn restore(&self, _: DomId, _: &mut dyn Read) -> Result<Built, SaveError> {
        Err(SaveError::Unsupported(self.0.to_owned()))
    }

    fn resume(&self, _: DomId) -> Result<(), SaveError> {
        Err(SaveError::Unsupported(self.0.to_owned()))
    }
}
