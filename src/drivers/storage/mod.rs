//! Storage repository drivers: what holds VDIs on the host, behind one
//! trait ([`SrDriver`]) like the hypervisor's. `file` keeps a VDI as a qcow2
//! or sparse raw file in a directory (qemu-img from Debian's qemu-utils);
//! `lvm` keeps it as a thin LV in a volume group's thin pool (Debian's
//! lvm2). Every call blocks (tools run, files are written): the SR actors
//! call them through [`super::blocking::run`]. A tool's failure is an error
//! carrying the tool's own message; a missing tool names its package.

pub mod file;
pub mod lvm;
pub mod qcow2;
pub mod tool;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use file::FileSr;
pub use lvm::LvmSr;
pub use tool::{StorageTools, Tool};

/// What an SR is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SrType {
    /// A directory of qcow2 and raw files.
    File,
    /// An LVM volume group with a thin pool; a VDI is a thin LV.
    Lvm,
}

impl SrType {
    pub fn as_str(self) -> &'static str {
        match self {
            SrType::File => "file",
            SrType::Lvm => "lvm",
        }
    }
}

/// How a VDI's blocks are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VdiFormat {
    /// A qcow2 image (file SRs): thin, with backing chains.
    Qcow2,
    /// Raw blocks: a sparse file, or a thin LV.
    Raw,
}

impl VdiFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            VdiFormat::Qcow2 => "qcow2",
            VdiFormat::Raw => "raw",
        }
    }
}

/// A storage driver's call failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{tool} is not installed ({}): install Debian's {package}", .program.display())]
    ToolMissing {
        tool: &'static str,
        program: PathBuf,
        package: &'static str,
    },
    /// The tool ran and failed: its own message.
    #[error("{tool} failed: {message}")]
    Tool { tool: &'static str, message: String },
    #[error("cannot {what} {}: {source}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// What the tool printed could not be read.
    #[error("{tool}'s output: {message}")]
    Output { tool: &'static str, message: String },
    #[error("cancelled")]
    Cancelled,
    #[error("{0}")]
    Unsupported(String),
    #[error("{0} exists in the SR already")]
    Exists(String),
}

impl StorageError {
    pub(crate) fn io(what: &'static str, path: &Path, source: std::io::Error) -> Self {
        StorageError::Io {
            what,
            path: path.to_owned(),
            source,
        }
    }
}

/// A volume as the SR holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// Its file name or LV name.
    pub location: String,
    pub format: VdiFormat,
    pub virtual_bytes: u64,
    /// What it takes on the SR now.
    pub physical_bytes: u64,
    /// The location of the volume it is backed by (a qcow2 backing file,
    /// a thin snapshot's origin).
    pub backing: Option<String>,
    /// Read-only on the SR (an LV's permission, a file's mode).
    pub read_only: bool,
    /// A file's (bytes on disk, mtime in ns): what changes when someone
    /// writes it.
    pub stamp: Option<(u64, u64)>,
}

/// An SR's space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub size_bytes: u64,
    pub free_bytes: u64,
}

/// How a backend reaches an attached volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    /// A file or a block device.
    pub path: PathBuf,
    pub format: VdiFormat,
    /// A block device (an LV): blkback takes it directly.
    pub block: bool,
}

/// A long operation's progress and cancellation, shared between the task
/// that reports it and the driver that does the work.
#[derive(Debug, Clone, Default)]
pub struct Job {
    inner: Arc<JobInner>,
}

#[derive(Debug, Default)]
struct JobInner {
    /// Millionths done.
    progress: AtomicU32,
    cancelled: AtomicBool,
}

impl Job {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records progress (0.0 to 1.0; it never goes back).
    pub fn set_progress(&self, done: f64) {
        let millionths = (done.clamp(0.0, 1.0) * 1_000_000.0).round();
        // In 0..=1e6 after the clamp.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let m = millionths as u32;
        self.inner.progress.fetch_max(m, Ordering::Relaxed);
    }

    pub fn progress(&self) -> f64 {
        f64::from(self.inner.progress.load(Ordering::Relaxed)) / 1_000_000.0
    }

    pub fn cancel(&self) {
        self.inner.cancelled.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::Relaxed)
    }
}

/// An SR on the host. `loc` is always one name in the SR (a file name, an
/// LV name), checked by the caller; every call blocks.
pub trait SrDriver: Send + Sync + std::fmt::Debug {
    fn kind(&self) -> SrType;

    /// Makes the SR ready to hold VDIs (the directory; the volume group and
    /// its thin pool), or checks it is.
    fn prepare(&self) -> Result<(), StorageError>;

    /// Its size and free space.
    fn usage(&self) -> Result<Usage, StorageError>;

    /// Every volume it holds.
    fn volumes(&self) -> Result<Vec<Volume>, StorageError>;

    /// One volume, if the SR holds it.
    fn volume(&self, loc: &str) -> Result<Option<Volume>, StorageError> {
        Ok(self.volumes()?.into_iter().find(|v| v.location == loc))
    }

    /// The formats it makes (the first is the default).
    fn formats(&self) -> &'static [VdiFormat];

    /// A new empty volume.
    fn create(&self, loc: &str, format: VdiFormat, bytes: u64) -> Result<(), StorageError>;

    /// Removes a volume (one already gone is fine).
    fn destroy(&self, loc: &str) -> Result<(), StorageError>;

    /// Grows a volume to `bytes`.
    fn resize(&self, loc: &str, format: VdiFormat, bytes: u64) -> Result<(), StorageError>;

    /// A read-only point-in-time volume `snap` of `live`; `live` keeps its
    /// location and goes on changing.
    fn snapshot(&self, live: &str, snap: &str, format: VdiFormat) -> Result<(), StorageError>;

    /// Finishes a snapshot a crash cut short, if it can: `snap` holds the
    /// data and `live` is missing (file SRs move the data first).
    fn finish_snapshot(
        &self,
        live: &str,
        snap: &str,
        format: VdiFormat,
    ) -> Result<(), StorageError>;

    /// A writable volume `new` sharing the blocks of the snapshot `base`.
    fn clone_of(&self, base: &str, new: &str, format: VdiFormat) -> Result<(), StorageError>;

    /// A new volume `loc` of `bytes` holding a copy of the image at `from`.
    fn copy_in(
        &self,
        from: &Path,
        from_format: VdiFormat,
        loc: &str,
        format: VdiFormat,
        bytes: u64,
        job: &Job,
    ) -> Result<(), StorageError>;

    /// Where a volume is (a file, a block device) for reading it.
    fn path(&self, loc: &str) -> PathBuf;

    /// Makes a volume usable by a backend (activates an LV).
    fn attach(&self, loc: &str, format: VdiFormat) -> Result<Attached, StorageError>;

    /// Undoes [`SrDriver::attach`].
    fn detach(&self, loc: &str) -> Result<(), StorageError>;

    /// Checks a volume's structure (`qemu-img check`); an error says what
    /// is wrong.
    fn check(&self, loc: &str, format: VdiFormat) -> Result<(), StorageError>;

    /// Removes what [`SrDriver::prepare`] made, once the SR holds nothing.
    fn remove(&self) -> Result<(), StorageError>;
}

/// Copies the image at `from` to the file `to` (`vdi.export`), converting
/// it to `format`, reporting progress on `job`.
pub fn export(
    tools: &StorageTools,
    from: &Path,
    from_format: VdiFormat,
    to: &Path,
    format: VdiFormat,
    job: &Job,
) -> Result<(), StorageError> {
    super::blocking::debug_assert_blocking_allowed("a VDI export");
    let result = tool::convert(tools, from, from_format, to, format, false, job);
    if result.is_err() {
        let _ = std::fs::remove_file(to);
    }
    result
}

/// What `qemu-img info` says of an image to import: its format and size.
pub fn probe_image(tools: &StorageTools, path: &Path) -> Result<(VdiFormat, u64), StorageError> {
    super::blocking::debug_assert_blocking_allowed("an image probe");
    let meta = std::fs::metadata(path).map_err(|e| StorageError::io("read", path, e))?;
    if meta.is_dir() {
        return Err(StorageError::Unsupported(format!(
            "{} is a directory, not an image",
            path.display()
        )));
    }
    match qcow2::read_header(path).map_err(|e| StorageError::io("read", path, e))? {
        Some(h) => {
            if h.backing.is_some() {
                // Checked by qemu-img too; said plainly here.
                tools.qemu_img.run(&[
                    "info".as_ref(),
                    "--backing-chain".as_ref(),
                    path.as_os_str(),
                ])?;
            }
            Ok((VdiFormat::Qcow2, h.virtual_size))
        }
        None => Ok((VdiFormat::Raw, block_or_file_size(path, meta.len())?)),
    }
}

/// A file's length, or a block device's size.
fn block_or_file_size(path: &Path, len: u64) -> Result<u64, StorageError> {
    use std::io::Seek;
    if len > 0 {
        return Ok(len);
    }
    let mut f = std::fs::File::open(path).map_err(|e| StorageError::io("open", path, e))?;
    f.seek(std::io::SeekFrom::End(0))
        .map_err(|e| StorageError::io("size", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_only_goes_forward_and_cancel_sticks() {
        let job = Job::new();
        job.set_progress(0.5);
        job.set_progress(0.25);
        job.set_progress(7.0);
        assert!((job.progress() - 1.0).abs() < 1e-9);
        assert!(!job.is_cancelled());
        job.clone().cancel();
        assert!(job.is_cancelled());
    }
}
