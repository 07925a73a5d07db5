//! The qcow2 header (QEMU's docs/interop/qcow2.txt): enough of it to know
//! an image's virtual size and backing file without running qemu-img, so
//! that `sr.scan` of a thousand images reads a thousand headers, not a
//! thousand processes. All fields are big-endian.

use std::io::Read;
use std::path::Path;

/// "QFI\xfb".
pub const MAGIC: u32 = 0x5146_49fb;

/// What xenith reads of a qcow2 header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub version: u32,
    pub virtual_size: u64,
    /// The backing file's name as written (relative to the image's
    /// directory when not absolute).
    pub backing: Option<String>,
}

/// The longest backing file name qemu accepts.
const MAX_BACKING: u32 = 1023;

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn be64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The header of an image whose first bytes are `head` (at least the
/// first 4 KiB, or the whole file if shorter); None when it is not qcow2
/// or its header does not hold together.
pub fn parse(head: &[u8]) -> Option<Header> {
    if be32(head, 0)? != MAGIC {
        return None;
    }
    let version = be32(head, 4)?;
    if !(2..=3).contains(&version) {
        return None;
    }
    let backing_offset = be64(head, 8)?;
    let backing_size = be32(head, 16)?;
    let virtual_size = be64(head, 24)?;
    let backing = if backing_offset == 0 || backing_size == 0 {
        None
    } else {
        if backing_size > MAX_BACKING {
            return None;
        }
        let start = usize::try_from(backing_offset).ok()?;
        let end = start.checked_add(usize::try_from(backing_size).ok()?)?;
        Some(String::from_utf8(head.get(start..end)?.to_vec()).ok()?)
    };
    Some(Header {
        version,
        virtual_size,
        backing,
    })
}

/// How much of an image [`read_header`] reads: the header and its
/// extensions, where qemu-img writes the backing file's name.
const HEAD: u64 = 64 * 1024;

/// The header of the image at `path`: None when it is not qcow2 (blocking).
pub fn read_header(path: &Path) -> std::io::Result<Option<Header>> {
    let mut head = Vec::with_capacity(4096);
    std::fs::File::open(path)?
        .take(HEAD)
        .read_to_end(&mut head)?;
    Ok(parse(&head))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(size: u64, backing: Option<&str>) -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[0..4].copy_from_slice(&MAGIC.to_be_bytes());
        h[4..8].copy_from_slice(&3u32.to_be_bytes());
        if let Some(b) = backing {
            h[8..16].copy_from_slice(&112u64.to_be_bytes());
            h[16..20].copy_from_slice(&u32::try_from(b.len()).unwrap().to_be_bytes());
            h[112..112 + b.len()].copy_from_slice(b.as_bytes());
        }
        h[24..32].copy_from_slice(&size.to_be_bytes());
        h
    }

    #[test]
    fn headers_parse_and_garbage_does_not() {
        assert_eq!(
            parse(&header(10 << 20, Some("base.qcow2"))),
            Some(Header {
                version: 3,
                virtual_size: 10 << 20,
                backing: Some("base.qcow2".into())
            })
        );
        assert_eq!(parse(&header(1, None)).unwrap().backing, None);
        assert_eq!(parse(b"QFI"), None);
        assert_eq!(parse(&[0u8; 512]), None);
        let mut bad = header(1, Some("x"));
        bad[8..16].copy_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(parse(&bad), None, "a backing offset past the end");
        let mut v9 = header(1, None);
        v9[4..8].copy_from_slice(&9u32.to_be_bytes());
        assert_eq!(parse(&v9), None);
    }

    #[test]
    fn qemu_img_images_read_back() {
        let Ok(out) = std::process::Command::new("qemu-img")
            .arg("--version")
            .output()
        else {
            panic!("qemu-img is missing: install Debian's qemu-utils");
        };
        assert!(out.status.success());
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.qcow2");
        let top = dir.path().join("top.qcow2");
        let run = |args: &[&std::ffi::OsStr]| {
            let s = std::process::Command::new("qemu-img")
                .args(args)
                .status()
                .unwrap();
            assert!(s.success());
        };
        run(&[
            "create".as_ref(),
            "-q".as_ref(),
            "-f".as_ref(),
            "qcow2".as_ref(),
            base.as_os_str(),
            "64M".as_ref(),
        ]);
        run(&[
            "create".as_ref(),
            "-q".as_ref(),
            "-f".as_ref(),
            "qcow2".as_ref(),
            "-F".as_ref(),
            "qcow2".as_ref(),
            "-b".as_ref(),
            "base.qcow2".as_ref(),
            top.as_os_str(),
        ]);
        let h = read_header(&top).unwrap().unwrap();
        assert_eq!(h.virtual_size, 64 << 20);
        assert_eq!(h.backing.as_deref(), Some("base.qcow2"));
        assert_eq!(read_header(&base).unwrap().unwrap().backing, None);
        std::fs::write(dir.path().join("raw"), vec![0u8; 4096]).unwrap();
        assert_eq!(read_header(&dir.path().join("raw")).unwrap(), None);
    }
}
