//! Decompressed kernels, cached: a Linux bzImage carries its kernel as a
//! compressed payload, and libxenguest decompresses it at every build. On
//! a slow host that is most of a start (measured in the Xen test bed: 6 of
//! 10 s for `xl create` of Debian's kernel under TCG). xenith decompresses
//! a kernel once, when a VM that uses it is defined or first started, into
//! `<cache>/<hash of path, size, mtime>.elf`, and builds from that ELF.
//!
//! Payloads in xz (Debian) and gzip are unpacked; others (zstd, lz4...) and
//! plain ELF kernels are handed to libxenguest as they are.

use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where in a bzImage the payload is described (arch/x86/boot/header.S).
const SETUP_SECTS: usize = 0x1f1;
const HEADER_MAGIC: usize = 0x202;
const PAYLOAD_OFFSET: usize = 0x248;

/// The cache of decompressed kernels.
#[derive(Debug, Clone)]
pub struct KernelCache {
    dir: PathBuf,
    /// One preparation at a time: a start that finds one under way waits
    /// for it and uses its result instead of decompressing again.
    busy: std::sync::Arc<std::sync::Mutex<()>>,
}

fn key(path: &Path) -> io::Result<String> {
    let meta = std::fs::metadata(path)?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    path.hash(&mut h);
    meta.len().hash(&mut h);
    meta.mtime().hash(&mut h);
    meta.mtime_nsec().hash(&mut h);
    meta.ino().hash(&mut h);
    Ok(format!("{:016x}", h.finish()))
}

/// The compressed payload of a bzImage, if it is one.
fn payload(image: &[u8]) -> Option<&[u8]> {
    if image.get(HEADER_MAGIC..HEADER_MAGIC + 4)? != b"HdrS" {
        return None;
    }
    let setup_sects = match *image.get(SETUP_SECTS)? {
        0 => 4,
        n => usize::from(n),
    };
    let field = |at: usize| -> Option<usize> {
        let b = image.get(at..at + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let (offset, length) = (field(PAYLOAD_OFFSET)?, field(PAYLOAD_OFFSET + 4)?);
    let start = (setup_sects + 1) * 512 + offset;
    image.get(start..start.checked_add(length)?)
}

/// Decompresses a bzImage payload into an ELF, when it knows how.
pub fn decompress(image: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let Some(p) = payload(image) else {
        return Ok(None);
    };
    let mut out = Vec::with_capacity(p.len() * 4);
    if p.starts_with(b"\xfd7zXZ\x00") {
        // One xz stream (with the x86 BCJ filter); the size the kernel's
        // build appends after it is not read.
        liblzma::read::XzDecoder::new(p)
            .read_to_end(&mut out)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("xz: {e}")))?;
    } else if p.starts_with(b"\x1f\x8b") {
        flate2::read::GzDecoder::new(p).read_to_end(&mut out)?;
    } else {
        return Ok(None);
    }
    if !out.starts_with(b"\x7fELF") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the payload is not an ELF kernel",
        ));
    }
    Ok(Some(out))
}

impl KernelCache {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            busy: std::sync::Arc::new(std::sync::Mutex::new(())),
        }
    }

    /// The kernel to build from: the cached ELF of `kernel` (made now if
    /// missing), or `kernel` itself when it is not a compressed bzImage.
    /// Blocking (reads and may decompress tens of MiB).
    pub fn prepare(&self, kernel: &Path) -> io::Result<PathBuf> {
        let _one_at_a_time = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        let cached = self.dir.join(format!("{}.elf", key(kernel)?));
        let plain = self.dir.join(format!("{}.plain", key(kernel)?));
        if cached.exists() {
            return Ok(cached);
        }
        if plain.exists() {
            return Ok(kernel.to_owned());
        }
        let mut image = Vec::new();
        File::open(kernel)?.read_to_end(&mut image)?;
        std::fs::create_dir_all(&self.dir)?;
        match decompress(&image)? {
            Some(elf) => {
                // Written aside, then renamed: a reader never sees half a kernel.
                let tmp = self
                    .dir
                    .join(format!(".{}.{}", key(kernel)?, std::process::id()));
                let mut f = File::create(&tmp)?;
                f.write_all(&elf)?;
                f.sync_all()?;
                std::fs::rename(&tmp, &cached)?;
                Ok(cached)
            }
            None => {
                // Remember that this one is used as it is.
                File::create(&plain)?;
                Ok(kernel.to_owned())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal bzImage around `payload`: the header fields this reads.
    fn bzimage(payload: &[u8]) -> Vec<u8> {
        let mut img = vec![0u8; 5 * 512];
        img[SETUP_SECTS] = 4;
        img[HEADER_MAGIC..HEADER_MAGIC + 4].copy_from_slice(b"HdrS");
        img[PAYLOAD_OFFSET..PAYLOAD_OFFSET + 4].copy_from_slice(&0u32.to_le_bytes());
        img[PAYLOAD_OFFSET + 4..PAYLOAD_OFFSET + 8]
            .copy_from_slice(&(payload.len() as u32).to_le_bytes());
        img.extend_from_slice(payload);
        img
    }

    #[test]
    fn gzip_and_xz_payloads_become_the_elf_and_are_cached() {
        let elf = b"\x7fELF and the rest of a kernel".repeat(100);
        let mut gz = Vec::new();
        let mut enc = flate2::write::GzEncoder::new(&mut gz, flate2::Compression::fast());
        enc.write_all(&elf).unwrap();
        enc.finish().unwrap();
        assert_eq!(decompress(&bzimage(&gz)).unwrap().unwrap(), elf);

        let mut xz = Vec::new();
        let mut enc = liblzma::write::XzEncoder::new(&mut xz, 1);
        enc.write_all(&elf).unwrap();
        enc.finish().unwrap();
        // As the kernel's build does: the size after the stream.
        xz.extend_from_slice(&(elf.len() as u32).to_le_bytes());
        assert_eq!(decompress(&bzimage(&xz)).unwrap().unwrap(), elf);

        // Not a bzImage, or a payload it does not unpack: used as it is.
        assert_eq!(decompress(b"\x7fELF...").unwrap(), None);
        assert_eq!(
            decompress(&bzimage(b"\x28\xb5\x2f\xfd zstd")).unwrap(),
            None
        );

        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("vmlinuz");
        std::fs::write(&kernel, bzimage(&gz)).unwrap();
        let cache = KernelCache::new(dir.path().join("cache"));
        let first = cache.prepare(&kernel).unwrap();
        assert_eq!(std::fs::read(&first).unwrap(), elf);
        assert_eq!(cache.prepare(&kernel).unwrap(), first, "cached");
        let plain = dir.path().join("vmlinux");
        std::fs::write(&plain, &elf).unwrap();
        assert_eq!(cache.prepare(&plain).unwrap(), plain);
    }
}
