//! Where suspended VMs' images are kept: `<state_dir>/suspend/UUID.xsi`,
//! written as `UUID.xsi.partial` and renamed once complete and synced, so
//! an image that exists is whole. Every call blocks (fsync): callers run
//! them on the blocking pool.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

/// The directory of suspend images.
#[derive(Debug, Clone)]
pub struct SuspendImages {
    dir: PathBuf,
}

impl SuspendImages {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        SuspendImages { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The VM's image, once complete.
    pub fn path(&self, vm: &uuid::Uuid) -> PathBuf {
        self.dir.join(format!("{vm}.xsi"))
    }

    fn partial(&self, vm: &uuid::Uuid) -> PathBuf {
        self.dir.join(format!("{vm}.xsi.partial"))
    }

    /// Whether the VM has a complete image.
    pub fn exists(&self, vm: &uuid::Uuid) -> bool {
        self.path(vm).is_file()
    }

    /// A new partial image for the VM (one left before is replaced).
    pub fn create(&self, vm: &uuid::Uuid) -> io::Result<File> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(self.partial(vm))
    }

    /// The partial image is complete: synced, renamed, the directory synced.
    pub fn commit(&self, vm: &uuid::Uuid, file: File) -> io::Result<()> {
        file.sync_all()?;
        drop(file);
        fs::rename(self.partial(vm), self.path(vm))?;
        File::open(&self.dir)?.sync_all()
    }

    /// Removes a partial image (a suspend that failed or was cut short).
    pub fn discard_partial(&self, vm: &uuid::Uuid) {
        let _ = fs::remove_file(self.partial(vm));
    }

    /// Removes the VM's image (resumed, or thrown away by a hard shutdown).
    pub fn remove(&self, vm: &uuid::Uuid) -> io::Result<()> {
        match fs::remove_file(self.path(vm)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Opens the VM's image to read.
    pub fn open(&self, vm: &uuid::Uuid) -> io::Result<File> {
        File::open(self.path(vm))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn an_image_exists_only_once_committed() {
        let dir = tempfile::tempdir().unwrap();
        let images = SuspendImages::new(dir.path().join("suspend"));
        let vm = uuid::Uuid::new_v4();
        let mut f = images.create(&vm).unwrap();
        f.write_all(b"x").unwrap();
        assert!(!images.exists(&vm));
        images.commit(&vm, f).unwrap();
        assert!(images.exists(&vm));
        images.remove(&vm).unwrap();
        images.remove(&vm).unwrap();
        assert!(!images.exists(&vm));
        let f = images.create(&vm).unwrap();
        drop(f);
        images.discard_partial(&vm);
        assert_eq!(fs::read_dir(images.dir()).unwrap().count(), 0);
    }
}
