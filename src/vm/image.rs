//! xenith's suspend image and migration stream (docs/migration.md): framed
//! records after a magic and a version, checked on input.
//!
//! ```text
//! "XENITHIM" | version u32
//! record*    = type u32 | flags u32 (0) | length u32 | body[length]
//! ```
//!
//! All integers little-endian. The records come in this order: Header
//! (JSON: [`ImageHeader`]), Vm (JSON: the VM's record), Memory+ (the
//! hypervisor's memory stream, cut into records; its own format is the
//! header's `memory_format`), DeviceModel? (QEMU's device state, HVM),
//! End (the SHA-256 of every byte before the End record). A reader refuses
//! anything else: a wrong magic or version, an unknown or misplaced
//! record, a body over [`MAX_BODY`], a stream cut short, a digest that
//! does not match.
//!
//! The codec works on `std::io::Read`/`Write` and blocks: callers run it
//! on the blocking pool.

use std::io::{self, Read, Write};

use ring::digest;
use serde::{Deserialize, Serialize};

pub const MAGIC: &[u8; 8] = b"XENITHIM";
pub const VERSION: u32 = 1;
/// The largest record body.
pub const MAX_BODY: u32 = 16 << 20;
/// The size of the Memory records a writer makes.
pub const MEMORY_CHUNK: usize = 1 << 20;

/// A record's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordType {
    Header = 1,
    Vm = 2,
    Memory = 3,
    DeviceModel = 4,
    End = 5,
}

impl RecordType {
    fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::Header,
            2 => Self::Vm,
            3 => Self::Memory,
            4 => Self::DeviceModel,
            5 => Self::End,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Header => "Header",
            Self::Vm => "Vm",
            Self::Memory => "Memory",
            Self::DeviceModel => "DeviceModel",
            Self::End => "End",
        }
    }
}

/// What an image is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageKind {
    /// A suspended VM's image, kept by xenith until it resumes.
    Suspend,
    /// A migration stream, read by the destination as it comes.
    Migration,
}

/// The Header record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageHeader {
    pub kind: ImageKind,
    /// The memory stream's format ("sim-memory-1", "libxc").
    pub memory_format: String,
    /// "pv", "pvh" or "hvm".
    pub domain_type: String,
    pub memory_mib: u64,
    /// Unix time the image was begun.
    pub created: u64,
}

/// An image could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("not a xenith image (bad magic)")]
    BadMagic,
    #[error("image version {0} is not supported (this xenith reads version {VERSION})")]
    Version(u32),
    #[error("the image is truncated: {what} cut short at byte {offset}")]
    Truncated { what: &'static str, offset: u64 },
    #[error("unknown record type {kind} at byte {offset}")]
    UnknownRecord { kind: u32, offset: u64 },
    #[error("record {found} at byte {offset} where {expected} was expected")]
    OutOfOrder {
        expected: &'static str,
        found: &'static str,
        offset: u64,
    },
    #[error("record at byte {offset} is {length} bytes long (at most {MAX_BODY})")]
    TooLong { length: u32, offset: u64 },
    #[error("the image is corrupt: its digest does not match its contents")]
    Digest,
    #[error("the {record} record is malformed: {message}")]
    Malformed {
        record: &'static str,
        message: String,
    },
    #[error("image I/O")]
    Io(#[source] io::Error),
}

impl ImageError {
    /// Wraps the error in an io::Error (what a memory stream's reader
    /// returns), and finds it again there.
    pub fn into_io(self) -> io::Error {
        match self {
            ImageError::Io(e) => e,
            e => io::Error::new(io::ErrorKind::InvalidData, e),
        }
    }

    pub fn from_io(e: io::Error) -> Self {
        if !e.get_ref().is_some_and(|inner| inner.is::<ImageError>()) {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                return ImageError::Malformed {
                    record: "Memory",
                    message: "the memory stream ends early".into(),
                };
            }
            return ImageError::Io(e);
        }
        let kind = e.kind();
        match e.into_inner().map(|inner| inner.downcast::<ImageError>()) {
            Some(Ok(image)) => *image,
            Some(Err(other)) => ImageError::Io(io::Error::new(kind, other)),
            None => ImageError::Io(io::Error::from(kind)),
        }
    }
}

/// The running SHA-256 of what went by.
#[derive(Clone)]
struct Digest(digest::Context);

impl Digest {
    fn new() -> Self {
        Digest(digest::Context::new(&digest::SHA256))
    }

    fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn sum(&self) -> digest::Digest {
        self.0.clone().finish()
    }
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Digest(SHA-256)")
    }
}

/// Writes an image: the header and the VM record first, then memory, the
/// device model's state, the end.
#[derive(Debug)]
pub struct ImageWriter<W: Write> {
    inner: W,
    digest: Digest,
    written: u64,
    memory: Vec<u8>,
}

impl<W: Write> ImageWriter<W> {
    /// Starts an image: the magic, the version, the Header and Vm records.
    pub fn begin(inner: W, header: &ImageHeader, vm: &[u8]) -> Result<Self, ImageError> {
        let mut w = ImageWriter {
            inner,
            digest: Digest::new(),
            written: 0,
            memory: Vec::with_capacity(MEMORY_CHUNK),
        };
        let mut start = MAGIC.to_vec();
        start.extend_from_slice(&VERSION.to_le_bytes());
        w.put(&start)?;
        let header = serde_json::to_vec(header).map_err(|e| ImageError::Malformed {
            record: "Header",
            message: e.to_string(),
        })?;
        w.record(RecordType::Header, &header)?;
        w.record(RecordType::Vm, vm)?;
        Ok(w)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), ImageError> {
        self.inner.write_all(bytes).map_err(ImageError::Io)?;
        self.digest.update(bytes);
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn record(&mut self, kind: RecordType, body: &[u8]) -> Result<(), ImageError> {
        let length = u32::try_from(body.len())
            .ok()
            .filter(|l| *l <= MAX_BODY)
            .ok_or(ImageError::TooLong {
                length: u32::MAX,
                offset: self.written,
            })?;
        let mut head = [0u8; 12];
        head[..4].copy_from_slice(&(kind as u32).to_le_bytes());
        head[8..].copy_from_slice(&length.to_le_bytes());
        self.put(&head)?;
        self.put(body)
    }

    fn flush_memory(&mut self) -> Result<(), ImageError> {
        if !self.memory.is_empty() {
            let chunk = std::mem::take(&mut self.memory);
            self.record(RecordType::Memory, &chunk)?;
            self.memory = chunk;
            self.memory.clear();
        }
        Ok(())
    }

    /// The device model's state (after all the memory).
    pub fn device_model(&mut self, state: &[u8]) -> Result<(), ImageError> {
        self.flush_memory()?;
        self.record(RecordType::DeviceModel, state)
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written + self.memory.len() as u64
    }

    /// Ends the image: the End record with the digest. Returns the writer.
    pub fn finish(mut self) -> Result<W, ImageError> {
        self.flush_memory()?;
        let sum = self.digest.sum();
        self.record(RecordType::End, sum.as_ref())?;
        self.inner.flush().map_err(ImageError::Io)?;
        Ok(self.inner)
    }
}

/// The memory stream goes in as bytes, out as Memory records.
impl<W: Write> Write for ImageWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = MEMORY_CHUNK - self.memory.len();
        let n = buf.len().min(room);
        self.memory.extend_from_slice(&buf[..n]);
        if self.memory.len() == MEMORY_CHUNK {
            self.flush_memory().map_err(ImageError::into_io)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_memory().map_err(ImageError::into_io)?;
        self.inner.flush()
    }
}

/// Where a reader is in the record order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Memory,
    AfterMemory,
    Done,
}

/// Reads an image, checking it as it goes; `Read` yields the memory
/// stream, then [`ImageReader::finish`] reads the rest and checks the end.
#[derive(Debug)]
pub struct ImageReader<R: Read> {
    inner: R,
    digest: Digest,
    offset: u64,
    header: ImageHeader,
    vm: Vec<u8>,
    /// The memory record being served, and how far.
    chunk: Vec<u8>,
    at: usize,
    stage: Stage,
    device_model: Option<Vec<u8>>,
}

impl<R: Read> ImageReader<R> {
    /// Reads and checks the magic, the version, the Header and Vm records.
    pub fn open(mut inner: R) -> Result<Self, ImageError> {
        let mut start = [0u8; 12];
        read_full(&mut inner, &mut start, "the magic", 0)?;
        if &start[..8] != MAGIC {
            return Err(ImageError::BadMagic);
        }
        let version = u32::from_le_bytes([start[8], start[9], start[10], start[11]]);
        if version != VERSION {
            return Err(ImageError::Version(version));
        }
        let mut digest = Digest::new();
        digest.update(&start);
        let mut r = ImageReader {
            inner,
            digest,
            offset: 12,
            header: ImageHeader {
                kind: ImageKind::Suspend,
                memory_format: String::new(),
                domain_type: String::new(),
                memory_mib: 0,
                created: 0,
            },
            vm: Vec::new(),
            chunk: Vec::new(),
            at: 0,
            stage: Stage::Memory,
            device_model: None,
        };
        let (_, header) = r.expect(RecordType::Header, "Header")?;
        r.header = serde_json::from_slice(&header).map_err(|e| ImageError::Malformed {
            record: "Header",
            message: e.to_string(),
        })?;
        r.vm = r.expect(RecordType::Vm, "Vm")?.1;
        Ok(r)
    }

    pub fn header(&self) -> &ImageHeader {
        &self.header
    }

    /// The Vm record's body (JSON).
    pub fn vm(&self) -> &[u8] {
        &self.vm
    }

    /// Bytes read so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    fn next_record(&mut self) -> Result<(RecordType, Vec<u8>, u64), ImageError> {
        let at = self.offset;
        let mut head = [0u8; 12];
        read_full(&mut self.inner, &mut head, "a record header", at)?;
        let kind = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let flags = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let length = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
        let kind =
            RecordType::from_u32(kind).ok_or(ImageError::UnknownRecord { kind, offset: at })?;
        if flags != 0 {
            return Err(ImageError::Malformed {
                record: kind.name(),
                message: format!("reserved flags {flags:#x} set"),
            });
        }
        if length > MAX_BODY {
            return Err(ImageError::TooLong { length, offset: at });
        }
        if kind == RecordType::End {
            // The digest covers everything before the End record.
            let expected = self.digest.sum();
            let mut sum = vec![0u8; length as usize];
            read_full(&mut self.inner, &mut sum, "the End record", at + 12)?;
            self.offset += 12 + u64::from(length);
            if sum != expected.as_ref() {
                return Err(ImageError::Digest);
            }
            return Ok((kind, sum, at));
        }
        let mut body = vec![0u8; length as usize];
        read_full(&mut self.inner, &mut body, kind.name(), at + 12)?;
        self.digest.update(&head);
        self.digest.update(&body);
        self.offset += 12 + u64::from(length);
        Ok((kind, body, at))
    }

    fn expect(
        &mut self,
        want: RecordType,
        expected: &'static str,
    ) -> Result<(RecordType, Vec<u8>), ImageError> {
        let (kind, body, offset) = self.next_record()?;
        if kind != want {
            return Err(ImageError::OutOfOrder {
                expected,
                found: kind.name(),
                offset,
            });
        }
        Ok((kind, body))
    }

    /// Takes a record after the memory stream: the device model's or the end.
    fn after_memory(
        &mut self,
        kind: RecordType,
        body: Vec<u8>,
        offset: u64,
    ) -> Result<(), ImageError> {
        match (kind, self.device_model.is_some()) {
            (RecordType::DeviceModel, false) => {
                self.device_model = Some(body);
                self.stage = Stage::AfterMemory;
            }
            (RecordType::End, _) => self.stage = Stage::Done,
            (found, _) => {
                return Err(ImageError::OutOfOrder {
                    expected: "DeviceModel or End",
                    found: found.name(),
                    offset,
                })
            }
        }
        Ok(())
    }

    /// Reads what follows the memory stream (a memory record left unread
    /// is an error: the hypervisor's stream ended early) and checks the
    /// end. Returns the device model's state, if the image has one.
    pub fn finish(mut self) -> Result<Option<Vec<u8>>, ImageError> {
        if self.stage == Stage::Memory && self.at < self.chunk.len() {
            return Err(ImageError::Malformed {
                record: "Memory",
                message: "the memory stream ended before its records did".into(),
            });
        }
        while self.stage != Stage::Done {
            let (kind, body, offset) = self.next_record()?;
            if self.stage == Stage::Memory && kind == RecordType::Memory {
                return Err(ImageError::Malformed {
                    record: "Memory",
                    message: "the memory stream ended before its records did".into(),
                });
            }
            self.after_memory(kind, body, offset)?;
        }
        Ok(self.device_model)
    }
}

/// The memory stream, record after record; it ends where the records
/// after it begin.
impl<R: Read> Read for ImageReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.chunk.len() {
            if self.stage != Stage::Memory {
                return Ok(0);
            }
            let (kind, body, offset) = self.next_record().map_err(ImageError::into_io)?;
            if kind == RecordType::Memory {
                self.chunk = body;
                self.at = 0;
            } else {
                self.chunk.clear();
                self.at = 0;
                self.after_memory(kind, body, offset)
                    .map_err(ImageError::into_io)?;
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

fn read_full(
    r: &mut impl Read,
    buf: &mut [u8],
    what: &'static str,
    offset: u64,
) -> Result<(), ImageError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => {
                return Err(ImageError::Truncated {
                    what,
                    offset: offset + got as u64,
                })
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ImageError::Io(e)),
        }
    }
    Ok(())
}

/// Reads a whole image and checks it (records, order, digest) without
/// keeping its memory: what a resume does before it makes a domain.
pub fn verify(r: impl Read) -> Result<ImageHeader, ImageError> {
    let mut reader = ImageReader::open(r)?;
    io::copy(&mut reader, &mut io::sink()).map_err(ImageError::from_io)?;
    let header = reader.header().clone();
    reader.finish()?;
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> ImageHeader {
        ImageHeader {
            kind: ImageKind::Suspend,
            memory_format: "test".into(),
            domain_type: "pv".into(),
            memory_mib: 4,
            created: 1,
        }
    }

    fn image(memory: &[u8], dm: Option<&[u8]>) -> Vec<u8> {
        let mut w = ImageWriter::begin(Vec::new(), &header(), br#"{"vm":1}"#).unwrap();
        w.write_all(memory).unwrap();
        if let Some(dm) = dm {
            w.device_model(dm).unwrap();
        }
        w.finish().unwrap()
    }

    fn memory(n: usize) -> Vec<u8> {
        (0..n).map(|i| u8::try_from(i * 7 % 251).unwrap()).collect()
    }

    #[test]
    fn round_trip_with_memory_across_records_and_device_state() {
        let mem = memory(MEMORY_CHUNK * 2 + 123);
        let bytes = image(&mem, Some(b"qemu"));
        let mut r = ImageReader::open(&bytes[..]).unwrap();
        assert_eq!(r.header(), &header());
        assert_eq!(r.vm(), br#"{"vm":1}"#);
        let mut back = Vec::new();
        r.read_to_end(&mut back).unwrap();
        assert_eq!(back, mem);
        assert_eq!(r.finish().unwrap().as_deref(), Some(&b"qemu"[..]));
        assert_eq!(verify(&bytes[..]).unwrap(), header());
    }

    #[test]
    fn every_truncation_is_refused() {
        let bytes = image(&memory(3000), None);
        for cut in 0..bytes.len() {
            let err = verify(&bytes[..cut]).unwrap_err();
            assert!(
                matches!(err, ImageError::Truncated { .. }),
                "cut at {cut}: {err}"
            );
        }
    }

    #[test]
    fn a_flipped_byte_anywhere_is_refused() {
        let bytes = image(&memory(5000), Some(b"state"));
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x20;
            assert!(verify(&bad[..]).is_err(), "flipped byte {at} accepted");
        }
    }

    #[test]
    fn wrong_magic_version_order_and_length_are_named() {
        let bytes = image(b"mem", None);
        let mut bad = bytes.clone();
        bad[0] = b'Y';
        assert!(matches!(verify(&bad[..]), Err(ImageError::BadMagic)));
        let mut bad = bytes.clone();
        bad[8] = 9;
        assert!(matches!(verify(&bad[..]), Err(ImageError::Version(9))));
        // A Vm record where the Header belongs.
        let mut bad = bytes.clone();
        bad[12] = 2;
        assert!(matches!(
            verify(&bad[..]),
            Err(ImageError::OutOfOrder {
                expected: "Header",
                ..
            })
        ));
        let mut bad = bytes.clone();
        bad[12] = 77;
        assert!(matches!(
            verify(&bad[..]),
            Err(ImageError::UnknownRecord { kind: 77, .. })
        ));
        let mut bad = bytes;
        bad[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(verify(&bad[..]), Err(ImageError::TooLong { .. })));
    }

    #[test]
    fn a_memory_stream_read_short_is_an_error_at_the_end() {
        let bytes = image(&memory(100), None);
        let mut r = ImageReader::open(&bytes[..]).unwrap();
        let mut some = [0u8; 10];
        r.read_exact(&mut some).unwrap();
        assert!(matches!(r.finish(), Err(ImageError::Malformed { .. })));
    }

    #[test]
    fn errors_survive_the_io_boundary() {
        let e = ImageError::from_io(ImageError::Digest.into_io());
        assert!(matches!(e, ImageError::Digest));
    }
}
