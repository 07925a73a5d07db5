//! The `file` SR: a directory; a VDI is a qcow2 file (through qemu-img) or
//! a sparse raw file.
//!
//! A qcow2 snapshot is a backing chain: the live file's data moves to the
//! snapshot's name (a rename: O(1)), becomes read-only, and a new empty
//! overlay backed by it takes the live name. A clone is a new overlay on a
//! snapshot. So the live VDI keeps its file name across snapshots, and
//! neither costs more for a larger disk. Raw files have no chains: their
//! snapshots and clones are copies (`cp --reflink=auto`: O(1) where the
//! file system shares extents, a full copy elsewhere).

use std::ffi::OsStr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::tool::{convert, StorageTools};
use super::{qcow2, Attached, Job, SrDriver, SrType, StorageError, Usage, VdiFormat, Volume};

/// A directory of images.
#[derive(Debug, Clone)]
pub struct FileSr {
    dir: PathBuf,
    tools: StorageTools,
}

impl FileSr {
    pub fn new(dir: PathBuf, tools: StorageTools) -> Self {
        Self { dir, tools }
    }

    fn file(&self, loc: &str) -> PathBuf {
        self.dir.join(loc)
    }

    fn io(&self, what: &'static str, loc: &str) -> impl FnOnce(std::io::Error) -> StorageError {
        let path = self.file(loc);
        move |e| StorageError::io(what, &path, e)
    }

    fn qemu_img(&self, args: &[&OsStr]) -> Result<(), StorageError> {
        self.tools.qemu_img.run(args).map(drop)
    }

    /// A new qcow2 overlay `top` backed by `base` (by its name: both live
    /// in this directory, so the chain survives the SR moving).
    fn overlay(&self, base: &str, top: &str) -> Result<(), StorageError> {
        self.qemu_img(&[
            "create".as_ref(),
            "-q".as_ref(),
            "-f".as_ref(),
            "qcow2".as_ref(),
            "-F".as_ref(),
            "qcow2".as_ref(),
            "-b".as_ref(),
            base.as_ref(),
            self.file(top).as_os_str(),
        ])
    }

    fn copy_file(&self, from: &str, to: &str) -> Result<(), StorageError> {
        self.tools
            .cp
            .run(&[
                "--reflink=auto".as_ref(),
                "--sparse=always".as_ref(),
                "--no-clobber".as_ref(),
                self.file(from).as_os_str(),
                self.file(to).as_os_str(),
            ])
            .map(drop)
    }

    fn set_read_only(&self, loc: &str) -> Result<(), StorageError> {
        std::fs::set_permissions(self.file(loc), std::fs::Permissions::from_mode(0o440))
            .map_err(self.io("make read-only", loc))
    }

    fn absent(&self, loc: &str) -> Result<(), StorageError> {
        match std::fs::symlink_metadata(self.file(loc)) {
            Ok(_) => Err(StorageError::Exists(loc.to_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io("look at", loc)(e)),
        }
    }
}

/// A volume from one directory entry: its format by its first bytes.
fn volume(path: &Path, name: String, meta: &std::fs::Metadata) -> Result<Volume, std::io::Error> {
    let header = qcow2::read_header(path)?;
    let (format, virtual_bytes, backing) = match header {
        Some(h) => (VdiFormat::Qcow2, h.virtual_size, h.backing),
        None => (VdiFormat::Raw, meta.len(), None),
    };
    let mtime_ns = u64::try_from(meta.mtime()).unwrap_or(0) * 1_000_000_000
        + u64::try_from(meta.mtime_nsec()).unwrap_or(0);
    Ok(Volume {
        location: name,
        format,
        virtual_bytes,
        physical_bytes: meta.blocks() * 512,
        backing,
        read_only: meta.permissions().mode() & 0o222 == 0,
        stamp: Some((meta.len(), mtime_ns)),
    })
}

impl SrDriver for FileSr {
    fn kind(&self) -> SrType {
        SrType::File
    }

    fn prepare(&self) -> Result<(), StorageError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| StorageError::io("create", &self.dir, e))?;
        let meta =
            std::fs::metadata(&self.dir).map_err(|e| StorageError::io("look at", &self.dir, e))?;
        if !meta.is_dir() {
            return Err(StorageError::Unsupported(format!(
                "{} is not a directory",
                self.dir.display()
            )));
        }
        Ok(())
    }

    fn usage(&self) -> Result<Usage, StorageError> {
        let st = nix::sys::statvfs::statvfs(&self.dir)
            .map_err(|e| StorageError::io("statvfs", &self.dir, e.into()))?;
        let frag = st.fragment_size();
        Ok(Usage {
            size_bytes: st.blocks().saturating_mul(frag),
            free_bytes: st.blocks_available().saturating_mul(frag),
        })
    }

    fn volumes(&self) -> Result<Vec<Volume>, StorageError> {
        let mut out = Vec::new();
        let entries =
            std::fs::read_dir(&self.dir).map_err(|e| StorageError::io("list", &self.dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| StorageError::io("list", &self.dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            let meta = match std::fs::symlink_metadata(&path) {
                Ok(m) if m.is_file() => m,
                _ => continue,
            };
            match volume(&path, name, &meta) {
                Ok(v) => out.push(v),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StorageError::io("read", &path, e)),
            }
        }
        out.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(out)
    }

    fn volume(&self, loc: &str) -> Result<Option<Volume>, StorageError> {
        let path = self.file(loc);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() => volume(&path, loc.to_owned(), &m)
                .map(Some)
                .map_err(|e| StorageError::io("read", &path, e)),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StorageError::io("look at", &path, e)),
        }
    }

    fn formats(&self) -> &'static [VdiFormat] {
        &[VdiFormat::Qcow2, VdiFormat::Raw]
    }

    fn create(&self, loc: &str, format: VdiFormat, bytes: u64) -> Result<(), StorageError> {
        self.absent(loc)?;
        match format {
            VdiFormat::Qcow2 => self.qemu_img(&[
                "create".as_ref(),
                "-q".as_ref(),
                "-f".as_ref(),
                "qcow2".as_ref(),
                self.file(loc).as_os_str(),
                bytes.to_string().as_ref(),
            ]),
            VdiFormat::Raw => {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode_rw()
                    .open(self.file(loc))
                    .map_err(self.io("create", loc))?;
                f.set_len(bytes).map_err(self.io("size", loc))
            }
        }
    }

    fn destroy(&self, loc: &str) -> Result<(), StorageError> {
        match std::fs::remove_file(self.file(loc)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io("remove", loc)(e)),
        }
    }

    fn resize(&self, loc: &str, format: VdiFormat, bytes: u64) -> Result<(), StorageError> {
        match format {
            VdiFormat::Qcow2 => self.qemu_img(&[
                "resize".as_ref(),
                "-q".as_ref(),
                "-f".as_ref(),
                "qcow2".as_ref(),
                self.file(loc).as_os_str(),
                bytes.to_string().as_ref(),
            ]),
            VdiFormat::Raw => std::fs::OpenOptions::new()
                .write(true)
                .open(self.file(loc))
                .and_then(|f| f.set_len(bytes))
                .map_err(self.io("resize", loc)),
        }
    }

    fn snapshot(&self, live: &str, snap: &str, format: VdiFormat) -> Result<(), StorageError> {
        self.absent(snap)?;
        match format {
            VdiFormat::Qcow2 => {
                std::fs::rename(self.file(live), self.file(snap))
                    .map_err(self.io("move the data of", live))?;
                if let Err(e) = self.overlay(snap, live) {
                    // Put the data back where it was.
                    let _ = std::fs::remove_file(self.file(live));
                    std::fs::rename(self.file(snap), self.file(live))
                        .map_err(self.io("move back the data of", live))?;
                    return Err(e);
                }
                // The snapshot is made: its file backs the live VDI now, so
                // a failure from here on must not undo it. Read-only is a
                // safeguard; without it the snapshot is still right.
                if let Err(e) = self.set_read_only(snap) {
                    tracing::warn!(snapshot = snap, error = %crate::error::chain(&e), "cannot make a snapshot's file read-only");
                }
                Ok(())
            }
            VdiFormat::Raw => {
                self.copy_file(live, snap)?;
                self.set_read_only(snap)
            }
        }
    }

    fn finish_snapshot(
        &self,
        live: &str,
        snap: &str,
        format: VdiFormat,
    ) -> Result<(), StorageError> {
        if format == VdiFormat::Qcow2 {
            self.overlay(snap, live)?;
            self.set_read_only(snap)?;
        }
        Ok(())
    }

    fn clone_of(&self, base: &str, new: &str, format: VdiFormat) -> Result<(), StorageError> {
        self.absent(new)?;
        match format {
            VdiFormat::Qcow2 => self.overlay(base, new),
            VdiFormat::Raw => {
                self.copy_file(base, new)?;
                std::fs::set_permissions(self.file(new), std::fs::Permissions::from_mode(0o600))
                    .map_err(self.io("make writable", new))
            }
        }
    }

    fn copy_in(
        &self,
        from: &Path,
        from_format: VdiFormat,
        loc: &str,
        format: VdiFormat,
        _bytes: u64,
        job: &Job,
    ) -> Result<(), StorageError> {
        self.absent(loc)?;
        let result = convert(
            &self.tools,
            from,
            from_format,
            &self.file(loc),
            format,
            false,
            job,
        );
        if result.is_err() {
            let _ = std::fs::remove_file(self.file(loc));
        }
        result
    }

    fn path(&self, loc: &str) -> PathBuf {
        self.file(loc)
    }

    fn attach(&self, loc: &str, format: VdiFormat) -> Result<Attached, StorageError> {
        let path = self.file(loc);
        std::fs::metadata(&path).map_err(self.io("find", loc))?;
        Ok(Attached {
            path,
            format,
            block: false,
        })
    }

    fn detach(&self, _loc: &str) -> Result<(), StorageError> {
        Ok(())
    }

    fn check(&self, loc: &str, format: VdiFormat) -> Result<(), StorageError> {
        match format {
            VdiFormat::Qcow2 => self.qemu_img(&[
                "check".as_ref(),
                "-q".as_ref(),
                "-f".as_ref(),
                "qcow2".as_ref(),
                self.file(loc).as_os_str(),
            ]),
            VdiFormat::Raw => std::fs::metadata(self.file(loc))
                .map(drop)
                .map_err(self.io("find", loc)),
        }
    }

    fn remove(&self) -> Result<(), StorageError> {
        match std::fs::remove_dir(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            // Files xenith does not know of stay, and so does the directory.
            Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => {
                tracing::info!(sr = %self.dir.display(), "the SR's directory holds other files: kept");
                Ok(())
            }
            Err(e) => Err(StorageError::io("remove", &self.dir, e)),
        }
    }
}

/// New VDI files are the daemon's alone.
trait ModeRw {
    fn mode_rw(&mut self) -> &mut Self;
}

impl ModeRw for std::fs::OpenOptions {
    fn mode_rw(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sr() -> (tempfile::TempDir, FileSr) {
        let dir = tempfile::tempdir().unwrap();
        let sr = FileSr::new(dir.path().join("sr"), StorageTools::default());
        sr.prepare().unwrap();
        (dir, sr)
    }

    fn write(sr: &FileSr, loc: &str, at: u64, byte: u8) {
        let s = std::process::Command::new("qemu-io")
            .args(["-f", "qcow2", "-c", &format!("write -P {byte} {at} 64k")])
            .arg(sr.path(loc))
            .output()
            .expect("qemu-io (qemu-utils)");
        assert!(s.status.success(), "{s:?}");
    }

    fn read_is(sr: &FileSr, loc: &str, at: u64, byte: u8) -> bool {
        let s = std::process::Command::new("qemu-io")
            .args([
                "-r",
                "-f",
                "qcow2",
                "-c",
                &format!("read -P {byte} {at} 64k"),
            ])
            .arg(sr.path(loc))
            .output()
            .unwrap();
        s.status.success()
            && !String::from_utf8_lossy(&s.stdout).contains("Pattern verification failed")
    }

    #[test]
    fn qcow2_snapshots_and_clones_are_chains_and_keep_their_data() {
        let (_d, sr) = sr();
        sr.create("live.qcow2", VdiFormat::Qcow2, 64 << 20).unwrap();
        write(&sr, "live.qcow2", 0, 0x11);
        sr.snapshot("live.qcow2", "snap.qcow2", VdiFormat::Qcow2)
            .unwrap();
        write(&sr, "live.qcow2", 0, 0x22);
        sr.clone_of("snap.qcow2", "clone.qcow2", VdiFormat::Qcow2)
            .unwrap();
        write(&sr, "clone.qcow2", 0, 0x33);
        assert!(read_is(&sr, "snap.qcow2", 0, 0x11));
        assert!(read_is(&sr, "live.qcow2", 0, 0x22));
        assert!(read_is(&sr, "clone.qcow2", 0, 0x33));
        let vols = sr.volumes().unwrap();
        let by = |l: &str| vols.iter().find(|v| v.location == l).unwrap().clone();
        assert_eq!(by("live.qcow2").backing.as_deref(), Some("snap.qcow2"));
        assert_eq!(by("clone.qcow2").backing.as_deref(), Some("snap.qcow2"));
        assert!(by("snap.qcow2").read_only);
        assert_eq!(by("live.qcow2").virtual_bytes, 64 << 20);
        for l in ["live.qcow2", "snap.qcow2", "clone.qcow2"] {
            sr.check(l, VdiFormat::Qcow2).unwrap();
        }
        sr.resize("live.qcow2", VdiFormat::Qcow2, 128 << 20)
            .unwrap();
        assert_eq!(
            qcow2::read_header(&sr.path("live.qcow2"))
                .unwrap()
                .unwrap()
                .virtual_size,
            128 << 20
        );
        assert!(matches!(
            sr.snapshot("live.qcow2", "snap.qcow2", VdiFormat::Qcow2),
            Err(StorageError::Exists(_))
        ));
    }

    #[test]
    fn raw_files_are_sparse_and_copied() {
        let (_d, sr) = sr();
        sr.create("a.raw", VdiFormat::Raw, 1 << 30).unwrap();
        let vols = sr.volumes().unwrap();
        assert_eq!(vols[0].format, VdiFormat::Raw);
        assert_eq!(vols[0].virtual_bytes, 1 << 30);
        assert!(vols[0].physical_bytes < 1 << 20, "sparse");
        sr.snapshot("a.raw", "s.raw", VdiFormat::Raw).unwrap();
        sr.clone_of("s.raw", "c.raw", VdiFormat::Raw).unwrap();
        sr.resize("c.raw", VdiFormat::Raw, 2 << 30).unwrap();
        let vols = sr.volumes().unwrap();
        assert_eq!(vols.len(), 3);
        assert!(
            vols.iter()
                .find(|v| v.location == "s.raw")
                .unwrap()
                .read_only
        );
        let c = vols.iter().find(|v| v.location == "c.raw").unwrap();
        assert!(!c.read_only);
        assert_eq!(c.virtual_bytes, 2 << 30);
        let u = sr.usage().unwrap();
        assert!(u.size_bytes > 0 && u.free_bytes <= u.size_bytes);
    }

    #[test]
    fn copies_convert_with_progress_and_a_failed_one_leaves_nothing() {
        let (d, sr) = sr();
        sr.create("src.qcow2", VdiFormat::Qcow2, 16 << 20).unwrap();
        write(&sr, "src.qcow2", 1 << 20, 0x44);
        let job = Job::new();
        sr.copy_in(
            &sr.path("src.qcow2"),
            VdiFormat::Qcow2,
            "dst.raw",
            VdiFormat::Raw,
            16 << 20,
            &job,
        )
        .unwrap();
        assert!((job.progress() - 1.0).abs() < 1e-9);
        let data = std::fs::read(sr.path("dst.raw")).unwrap();
        assert_eq!(data.len(), 16 << 20);
        assert_eq!(data[1 << 20], 0x44);
        let missing = d.path().join("nope.img");
        let e = sr
            .copy_in(
                &missing,
                VdiFormat::Raw,
                "x.qcow2",
                VdiFormat::Qcow2,
                1,
                &Job::new(),
            )
            .unwrap_err();
        assert!(
            matches!(
                e,
                StorageError::Tool {
                    tool: "qemu-img",
                    ..
                }
            ),
            "{e}"
        );
        assert!(!sr.path("x.qcow2").exists());
    }

    #[test]
    fn a_snapshot_cut_short_after_the_move_is_finished() {
        let (_d, sr) = sr();
        sr.create("live.qcow2", VdiFormat::Qcow2, 8 << 20).unwrap();
        write(&sr, "live.qcow2", 0, 0x55);
        // What a crash between the rename and the overlay leaves.
        std::fs::rename(sr.path("live.qcow2"), sr.path("snap.qcow2")).unwrap();
        sr.finish_snapshot("live.qcow2", "snap.qcow2", VdiFormat::Qcow2)
            .unwrap();
        assert!(read_is(&sr, "live.qcow2", 0, 0x55));
        sr.destroy("live.qcow2").unwrap();
        sr.destroy("live.qcow2").unwrap();
    }
}
