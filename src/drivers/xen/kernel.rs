//! Decompressed kernels, cached: a Linux bzImage carries its kernel as a
//! compressed payload, and libxenguest decompresses it at every build. On
//! a slow host that is most of a start (measured in the Xen test bed: 6 of
//! 10 s for `xl create` of Debian's kernel under TCG). xenith decompresses
//! a kernel once, when a VM that uses it is defined or first started, into
//! `<cache>/<hash of path, size, mtime, inode>.elf`, and builds from that
//! ELF mapped in memory (`xc_dom_kernel_mem`).
//!
//! The payload is decompressed straight into a shared mapping of the cache
//! file, whose size the kernel's build appends to the payload: no buffer,
//! no copy, and the build reads the very pages the decompressor wrote. The
//! last few kernels used stay mapped (file pages, shared with the page
//! cache), so a later start neither reads nor faults them in again.
//!
//! Payloads in xz (Debian) and gzip are unpacked; others (zstd, lz4...),
//! plain ELF kernels and payloads whose size trailer does not match are
//! handed to libxenguest as files, as they are.
//!
//! A cached kernel stays as long as a VM defined uses its kernel, as it
//! is: [`KernelCache::retain`], when a VM is removed and when xenithd
//! starts, removes the others (a removed VM's, a kernel replaced since).

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::hash::{Hash, Hasher};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use memmap2::{Mmap, MmapMut};

/// Where in a bzImage the payload is described (arch/x86/boot/header.S).
const SETUP_SECTS: usize = 0x1f1;
const HEADER_MAGIC: usize = 0x202;
const PAYLOAD_OFFSET: usize = 0x248;
/// The largest kernel believed (libxenguest's default kernel size limit).
const MAX_ELF: u64 = 1 << 30;
/// How many decompressed kernels stay mapped.
const MAPPED_MAX: usize = 4;
const ELF_MAGIC: &[u8] = b"\x7fELF";

/// A kernel ready for libxenguest.
#[derive(Debug, Clone)]
pub enum Kernel {
    /// The decompressed ELF, mapped read-only from the cache.
    Elf(Arc<Mmap>),
    /// A kernel libxenguest reads (and decompresses, if it must) itself.
    File(PathBuf),
}

/// The cache of decompressed kernels.
#[derive(Debug, Clone)]
pub struct KernelCache {
    dir: PathBuf,
    /// The kernels mapped. Its lock also makes
    /// preparations one at a time: a start that finds one under way waits
    /// for it and uses its result instead of decompressing again.
    mapped: Arc<Mutex<Mapped>>,
}

/// The mapped kernels by cache key, least recently used first.
type Mapped = Vec<(String, Arc<Mmap>)>;

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

/// A decoder for a payload this unpacks, with the size the kernel's build
/// appended to it (the last four bytes, little-endian).
fn decoder(p: &[u8]) -> Option<(&'static str, Box<dyn Read + '_>, u64)> {
    let (format, decoder): (_, Box<dyn Read>) = if p.starts_with(b"\xfd7zXZ\x00") {
        // One xz stream (with the x86 BCJ filter); what follows it is not read.
        ("xz", Box::new(liblzma::read::XzDecoder::new(p)))
    } else if p.starts_with(b"\x1f\x8b") {
        ("gzip", Box::new(flate2::read::GzDecoder::new(p)))
    } else {
        return None;
    };
    let tail = p.get(p.len().checked_sub(4)?..)?;
    let size = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    (1..=MAX_ELF)
        .contains(&size)
        .then_some((format, decoder, size))
}

/// Fills `out` from `from`; false when the stream is shorter or longer.
fn fill(from: &mut dyn Read, out: &mut [u8]) -> io::Result<bool> {
    let mut at = 0;
    while at < out.len() {
        match from.read(&mut out[at..]) {
            Ok(0) => return Ok(false),
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(from.read(&mut [0u8; 1])? == 0)
}

/// Maps a kernel the cache holds; a file that is not an ELF (left by a
/// crash of the host before it reached the disk) is removed.
fn map_cached(path: &Path) -> io::Result<Option<Mmap>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    // SAFETY: the cache directory is xenithd's own: a cached kernel is
    // renamed into place whole and is never written or truncated after.
    let map = unsafe { Mmap::map(&file)? };
    if map.starts_with(ELF_MAGIC) {
        return Ok(Some(map));
    }
    drop(map);
    std::fs::remove_file(path)?;
    Ok(None)
}

/// Decompresses into a new file of `size` bytes through a shared mapping;
/// `None` when the stream does not hold exactly `size` bytes.
fn write_mapped(
    path: &Path,
    size: u64,
    format: &str,
    decoder: &mut dyn Read,
) -> io::Result<Option<Mmap>> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    let len = i64::try_from(size).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // Blocks reserved first: a full disk is an error here, not a SIGBUS
    // when the decompressor writes into the mapping.
    nix::fcntl::posix_fallocate(file.as_raw_fd(), 0, len).map_err(io::Error::from)?;
    // SAFETY: the file was just made under a name of this process in the
    // cache directory, its blocks allocated; nothing else maps, writes or
    // truncates it.
    let mut map = unsafe { MmapMut::map_mut(&file)? };
    let whole = fill(decoder, &mut map)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{format}: {e}")))?;
    if !whole {
        return Ok(None);
    }
    if !map.starts_with(ELF_MAGIC) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the payload is not an ELF kernel",
        ));
    }
    // On disk before it is renamed into place: a reader never sees half a kernel.
    map.flush()?;
    file.sync_all()?;
    map.make_read_only().map(Some)
}

impl KernelCache {
    pub fn new(dir: PathBuf) -> Self {
        // Half-written kernels of an earlier run (killed mid-decompression).
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                if entry.file_name().as_encoded_bytes().starts_with(b".") {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Self {
            dir,
            mapped: Arc::default(),
        }
    }

    /// The kernel to build from: the decompressed ELF of `kernel` (made
    /// now if the cache lacks it), or `kernel` itself when it is not a
    /// bzImage this unpacks. Blocking (reads and may decompress tens of MiB).
    pub fn prepare(&self, kernel: &Path) -> io::Result<Kernel> {
        let mut mapped = self.mapped.lock().unwrap_or_else(|p| p.into_inner());
        let key = key(kernel)?;
        if let Some(i) = mapped.iter().position(|(k, _)| *k == key) {
            let entry = mapped.remove(i);
            let elf = entry.1.clone();
            mapped.push(entry);
            return Ok(Kernel::Elf(elf));
        }
        let plain = self.dir.join(format!("{key}.plain"));
        if plain.exists() {
            return Ok(Kernel::File(kernel.to_owned()));
        }
        std::fs::create_dir_all(&self.dir)?;
        let cached = self.dir.join(format!("{key}.elf"));
        let elf = match map_cached(&cached)? {
            Some(elf) => elf,
            None => match self.unpack(kernel, &key, &cached)? {
                Some(elf) => elf,
                None => {
                    // Remember that this one is used as it is.
                    File::create(&plain)?;
                    return Ok(Kernel::File(kernel.to_owned()));
                }
            },
        };
        let elf = Arc::new(elf);
        if mapped.len() == MAPPED_MAX {
            mapped.remove(0);
        }
        mapped.push((key, elf.clone()));
        Ok(Kernel::Elf(elf))
    }

    /// Removes the cached kernels made from none of `kernels` (a kernel
    /// replaced since it was cached, or one no VM uses any more), but for
    /// those written after `since`: a preparation for a VM defined after
    /// the caller made its list. Returns how many went. Blocking.
    pub fn retain(&self, kernels: &[PathBuf], since: SystemTime) -> io::Result<usize> {
        // A kernel that is gone keeps nothing: no start can use it.
        let keep: HashSet<String> = kernels.iter().filter_map(|k| key(k).ok()).collect();
        let mut mapped = self.mapped.lock().unwrap_or_else(|p| p.into_inner());
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut removed = 0;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            // Only `<key>.elf` and `<key>.plain`; files being written start with a dot.
            let Some(key) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".elf").or_else(|| n.strip_suffix(".plain")))
            else {
                continue;
            };
            if keep.contains(key) {
                continue;
            }
            match entry.metadata().and_then(|m| m.modified()) {
                Ok(made) if made < since => {}
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
            match std::fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            // A build holding the mapping keeps it; the next start makes it again.
            mapped.retain(|(k, _)| k != key);
        }
        Ok(removed)
    }

    /// Decompresses `kernel`'s payload into `cached` (in the cache
    /// directory, which exists); `None` if it is not one this unpacks.
    fn unpack(&self, kernel: &Path, key: &str, cached: &Path) -> io::Result<Option<Mmap>> {
        let t0 = std::time::Instant::now();
        let image = std::fs::read(kernel)?;
        let Some(payload) = payload(&image) else {
            return Ok(None);
        };
        let Some((format, mut decoder, size)) = decoder(payload) else {
            return Ok(None);
        };
        let tmp = self.dir.join(format!(".{key}.{}", std::process::id()));
        let made = write_mapped(&tmp, size, format, &mut decoder).and_then(|map| {
            if map.is_some() {
                std::fs::rename(&tmp, cached)?;
            }
            Ok(map)
        });
        if !matches!(made, Ok(Some(_))) {
            let _ = std::fs::remove_file(&tmp);
        }
        tracing::debug!(
            kernel = %kernel.display(),
            format,
            bytes = size,
            unpacked = matches!(made, Ok(Some(_))),
            elapsed_ms = u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX),
            "kernel decompressed"
        );
        made
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A minimal bzImage around `payload`: the header fields this reads.
    fn bzimage(payload: &[u8]) -> Vec<u8> {
        let mut img = vec![0u8; 5 * 512];
        img[SETUP_SECTS] = 4;
        img[HEADER_MAGIC..HEADER_MAGIC + 4].copy_from_slice(b"HdrS");
        img[PAYLOAD_OFFSET..PAYLOAD_OFFSET + 4].copy_from_slice(&0u32.to_le_bytes());
        img[PAYLOAD_OFFSET + 4..PAYLOAD_OFFSET + 8]
            .copy_from_slice(&u32::try_from(payload.len()).unwrap().to_le_bytes());
        img.extend_from_slice(payload);
        img
    }

    /// gzip's own trailer ends with the size, as the kernel's payloads do.
    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut gz = Vec::new();
        let mut enc = flate2::write::GzEncoder::new(&mut gz, flate2::Compression::fast());
        enc.write_all(data).unwrap();
        enc.finish().unwrap();
        gz
    }

    /// An xz payload as the kernel's build makes it: the size after the stream.
    fn xz(data: &[u8], size: u32) -> Vec<u8> {
        let mut xz = Vec::new();
        let mut enc = liblzma::write::XzEncoder::new(&mut xz, 1);
        enc.write_all(data).unwrap();
        enc.finish().unwrap();
        xz.extend_from_slice(&size.to_le_bytes());
        xz
    }

    fn elf_bytes(kernel: &Kernel) -> Vec<u8> {
        match kernel {
            Kernel::Elf(map) => map.to_vec(),
            Kernel::File(path) => panic!("used as a file: {}", path.display()),
        }
    }

    fn is_file(kernel: &Kernel, path: &Path) -> bool {
        matches!(kernel, Kernel::File(p) if p == path)
    }

    #[test]
    fn gzip_and_xz_payloads_become_the_mapped_elf_and_are_cached() {
        let elf = b"\x7fELF and the rest of a kernel".repeat(1000);
        let dir = tempfile::tempdir().unwrap();
        let cache = KernelCache::new(dir.path().join("cache"));
        for (name, payload) in [
            ("gz", gzip(&elf)),
            ("xz", xz(&elf, u32::try_from(elf.len()).unwrap())),
        ] {
            let kernel = dir.path().join(name);
            std::fs::write(&kernel, bzimage(&payload)).unwrap();
            let first = cache.prepare(&kernel).unwrap();
            assert_eq!(elf_bytes(&first), elf, "{name}");
            let (Kernel::Elf(a), Kernel::Elf(b)) = (&first, &cache.prepare(&kernel).unwrap())
            else {
                unreachable!()
            };
            assert!(Arc::ptr_eq(a, b), "{name}: the same mapping again");
        }
        // Another run of xenithd maps the ELFs its predecessor wrote.
        let files: Vec<_> = std::fs::read_dir(dir.path().join("cache"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(files.len(), 2, "{files:?}");
        assert!(files.iter().all(|f| f.ends_with(".elf")), "{files:?}");
        let again = KernelCache::new(dir.path().join("cache"));
        assert_eq!(
            elf_bytes(&again.prepare(&dir.path().join("xz")).unwrap()),
            elf
        );
    }

    #[test]
    fn kernels_it_does_not_unpack_are_used_as_files() {
        let elf = b"\x7fELF...".repeat(100);
        let dir = tempfile::tempdir().unwrap();
        let cache = KernelCache::new(dir.path().join("cache"));
        let cases = [
            ("vmlinux", elf.clone()),
            ("zstd", bzimage(b"\x28\xb5\x2f\xfd zstd payload")),
            // The size after the stream is not the stream's size.
            (
                "short",
                bzimage(&xz(&elf, u32::try_from(elf.len()).unwrap() - 1)),
            ),
            (
                "long",
                bzimage(&xz(&elf, u32::try_from(elf.len()).unwrap() + 1)),
            ),
            ("zero", bzimage(&xz(&elf, 0))),
        ];
        for (name, image) in cases {
            let kernel = dir.path().join(name);
            std::fs::write(&kernel, image).unwrap();
            assert!(is_file(&cache.prepare(&kernel).unwrap(), &kernel), "{name}");
            assert!(
                is_file(&cache.prepare(&kernel).unwrap(), &kernel),
                "{name} again"
            );
        }
        let left: Vec<_> = std::fs::read_dir(dir.path().join("cache"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|f| !f.ends_with(".plain"))
            .collect();
        assert!(left.is_empty(), "nothing half-written is left: {left:?}");
    }

    #[test]
    fn a_corrupt_payload_is_an_error_and_a_torn_cache_file_is_made_again() {
        let elf = b"\x7fELF and more".repeat(1000);
        let dir = tempfile::tempdir().unwrap();
        let cache_dir = dir.path().join("cache");
        let kernel = dir.path().join("vmlinuz");
        let mut payload = xz(&elf, u32::try_from(elf.len()).unwrap());
        let mid = payload.len() / 2;
        payload[mid] ^= 0xff;
        std::fs::write(&kernel, bzimage(&payload)).unwrap();
        let err = KernelCache::new(cache_dir.clone())
            .prepare(&kernel)
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        assert!(err.to_string().starts_with("xz: "), "{err}");

        let not_elf = b"MZ not an ELF".repeat(100);
        std::fs::write(&kernel, bzimage(&gzip(&not_elf))).unwrap();
        let err = KernelCache::new(cache_dir.clone())
            .prepare(&kernel)
            .unwrap_err();
        assert!(err.to_string().contains("not an ELF"), "{err}");

        std::fs::write(
            &kernel,
            bzimage(&xz(&elf, u32::try_from(elf.len()).unwrap())),
        )
        .unwrap();
        let cached = cache_dir.join(format!("{}.elf", key(&kernel).unwrap()));
        std::fs::write(&cached, vec![0u8; elf.len()]).unwrap();
        std::fs::write(cache_dir.join(".stale.1"), b"half").unwrap();
        let cache = KernelCache::new(cache_dir.clone());
        assert!(!cache_dir.join(".stale.1").exists());
        assert_eq!(elf_bytes(&cache.prepare(&kernel).unwrap()), elf);
        assert_eq!(std::fs::read(&cached).unwrap(), elf);
    }

    #[test]
    fn kernels_no_vm_uses_leave_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let cache_dir = dir.path().join("cache");
        let cache = KernelCache::new(cache_dir.clone());
        let kernel = |name: &str, elf: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, bzimage(&gzip(elf))).unwrap();
            path
        };
        let kept = kernel("kept", &b"\x7fELF kept".repeat(100));
        let gone = kernel("gone", &b"\x7fELF gone".repeat(100));
        let plain = dir.path().join("plain");
        std::fs::write(&plain, b"\x7fELF a plain one").unwrap();
        for k in [&kept, &gone, &plain] {
            cache.prepare(k).unwrap();
        }
        let listing = || {
            let mut names: Vec<String> = std::fs::read_dir(&cache_dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            names
        };
        assert_eq!(listing().len(), 3);
        // What was made after the list was taken stays.
        let before = SystemTime::now() - std::time::Duration::from_secs(60);
        assert_eq!(
            cache.retain(std::slice::from_ref(&kept), before).unwrap(),
            0
        );
        assert_eq!(listing().len(), 3);

        let now = SystemTime::now() + std::time::Duration::from_secs(1);
        assert_eq!(cache.retain(std::slice::from_ref(&kept), now).unwrap(), 2);
        assert_eq!(listing(), [format!("{}.elf", key(&kept).unwrap())]);
        let held: Vec<String> = cache
            .mapped
            .lock()
            .unwrap()
            .iter()
            .map(|(k, _)| k.clone())
            .collect();
        assert_eq!(held, [key(&kept).unwrap()]);
        // Kernels replaced in place: the old one's cache goes, the new one
        // is made at its next start.
        std::fs::write(&kept, bzimage(&gzip(&b"\x7fELF new".repeat(100)))).unwrap();
        let later = SystemTime::now() + std::time::Duration::from_secs(1);
        assert_eq!(cache.retain(std::slice::from_ref(&kept), later).unwrap(), 1);
        assert!(listing().is_empty());
        assert!(elf_bytes(&cache.prepare(&kept).unwrap()).starts_with(b"\x7fELF new"));
        // Files being written (dot-named) are not its business.
        std::fs::write(cache_dir.join(".x.1"), b"half").unwrap();
        let later = SystemTime::now() + std::time::Duration::from_secs(1);
        assert_eq!(cache.retain(&[], later).unwrap(), 1);
        assert_eq!(listing(), [".x.1"]);
        // No cache directory yet: nothing to do.
        let empty = KernelCache::new(dir.path().join("none"));
        assert_eq!(empty.retain(&[], later).unwrap(), 0);
    }

    #[test]
    fn only_the_last_few_kernels_stay_mapped() {
        let dir = tempfile::tempdir().unwrap();
        let cache = KernelCache::new(dir.path().join("cache"));
        let kernels: Vec<PathBuf> = (0..=MAPPED_MAX)
            .map(|i| {
                let elf = format!("\x7fELF kernel {i}").repeat(100);
                let path = dir.path().join(format!("k{i}"));
                std::fs::write(&path, bzimage(&gzip(elf.as_bytes()))).unwrap();
                cache.prepare(&path).unwrap();
                path
            })
            .collect();
        let held = cache.mapped.lock().unwrap().len();
        assert_eq!(held, MAPPED_MAX);
        // The first was dropped from memory, not from the cache.
        let first = cache.prepare(&kernels[0]).unwrap();
        assert!(elf_bytes(&first).starts_with(b"\x7fELF kernel 0"));
    }
}
