//! Directories of state files written atomically: write a temporary file,
//! fsync it, rename it over the old one, fsync the directory. A crash
//! leaves either the old file or the new one, never a mix. The VM records
//! and the storage records (SRs, VDIs) are kept this way.
//!
//! Every call blocks (fsync): callers run them through
//! [`super::blocking::run`] (checked in debug builds).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// A state file could not be written, listed, read or removed.
#[derive(Debug, thiserror::Error)]
#[error("cannot {what} {}", .path.display())]
pub struct StateFileError {
    pub what: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

fn io<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> StateFileError + 'a {
    move |source| StateFileError {
        what,
        path: path.to_owned(),
        source,
    }
}

/// One file read back.
#[derive(Debug, Clone)]
pub struct StateFile {
    pub path: PathBuf,
    /// Its name without the extension.
    pub stem: String,
    /// When it was last written.
    pub written: SystemTime,
    pub text: String,
}

/// A directory of state files.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

/// How old a temporary file must be before a listing removes it (a write
/// under way is never that slow).
const STALE: Duration = Duration::from_secs(60);

impl StateDir {
    /// The directory (created with its parents, 0700).
    pub fn open(dir: &Path) -> Result<Self, StateFileError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io("create", dir))?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Writes `name` atomically (blocking).
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<(), StateFileError> {
        super::blocking::debug_assert_blocking_allowed("a state file's write");
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let mut f = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
        let written = f
            .write_all(bytes)
            .map_err(io("write", &tmp))
            .and_then(|()| f.sync_all().map_err(io("fsync", &tmp)));
        drop(f);
        if let Err(e) = written {
            // A full disk: the old file stays, the half-written one goes.
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, &path).map_err(io("rename into place", &path))?;
        self.sync()
    }

    /// Removes `name`; a file already gone is fine (blocking).
    pub fn remove(&self, name: &str) -> Result<(), StateFileError> {
        super::blocking::debug_assert_blocking_allowed("a state file's removal");
        let path = self.dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("remove", &path)(e)),
        }
        self.sync()
    }

    fn sync(&self) -> Result<(), StateFileError> {
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io("fsync", &self.dir))
    }

    /// Every `*.{ext}` file (hidden ones aside), read (blocking). A file
    /// removed since it was listed is left out; one that cannot be read is
    /// logged and left out. Temporary files a write left behind (a crash)
    /// more than a minute ago are removed.
    pub fn read_all(&self, ext: &str) -> Result<Vec<StateFile>, StateFileError> {
        super::blocking::debug_assert_blocking_allowed("a state directory's read");
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(io("list", &self.dir))? {
            let entry = entry.map_err(io("list", &self.dir))?;
            let path = entry.path();
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            if hidden && path.extension().is_some_and(|e| e == "tmp") {
                remove_stale(&path);
                continue;
            }
            if hidden || path.extension().is_none_or(|e| e != ext) {
                continue;
            }
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(error) => {
                    tracing::warn!(file = %path.display(), %error, "unreadable state file: skipped");
                    continue;
                }
            };
            let written = entry
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            out.push(StateFile {
                path,
                stem,
                written,
                text,
            });
        }
        Ok(out)
    }
}

/// Removes a temporary file no write has touched for a minute.
fn remove_stale(path: &Path) {
    let old = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > STALE);
    if old {
        match std::fs::remove_file(path) {
            Ok(()) => {
                tracing::info!(file = %path.display(), "removed a state file write left unfinished")
            }
            Err(error) => {
                tracing::warn!(file = %path.display(), %error, "cannot remove an unfinished state file write")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replace_reads_skip_hidden_and_removes_are_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let d = StateDir::open(&dir.path().join("a/b")).unwrap();
        d.write("x.toml", b"one").unwrap();
        d.write("x.toml", b"two").unwrap();
        d.write("y.other", b"no").unwrap();
        std::fs::write(d.path().join(".z.toml.tmp"), "half").unwrap();
        let files = d.read_all("toml").unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(
            (files[0].stem.as_str(), files[0].text.as_str()),
            ("x", "two")
        );
        d.remove("x.toml").unwrap();
        d.remove("x.toml").unwrap();
        assert!(d.read_all("toml").unwrap().is_empty());
        assert!(
            d.path().join(".z.toml.tmp").exists(),
            "a write under way stays"
        );
    }
}
