//! Framing: one MessagePack value per frame, bounded in size.

use std::io;

use tokio_util::bytes::{BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Nesting deeper than this is refused (a hostile frame could otherwise
/// recurse the decoder's stack away).
const MAX_DEPTH: usize = 64;

/// A stream that is not MessagePack, or a frame over the limit.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("frame larger than {0} bytes")]
    TooLarge(usize),
    #[error("malformed MessagePack: {0}")]
    Malformed(String),
    #[error("connection error")]
    Io(#[from] io::Error),
}

/// Decodes and encodes MessagePack values; a frame over `max_frame` bytes is
/// an error (the connection is then closed).
#[derive(Debug, Clone)]
pub struct MsgpackCodec {
    max_frame: usize,
    max_elements: usize,
    scanner: Scanner,
}

impl MsgpackCodec {
    /// A codec for what peers send: frames up to `max_frame` bytes and
    /// [`MAX_ELEMENTS`] elements.
    pub fn new(max_frame: usize) -> Self {
        Self {
            max_frame,
            max_elements: MAX_ELEMENTS,
            scanner: Scanner::default(),
        }
    }

    /// A codec for what the daemon answers: a reply (a tree or a list of
    /// thousands of VMs) is bounded by its size alone.
    pub fn for_replies(max_frame: usize) -> Self {
        Self {
            max_elements: max_frame,
            ..Self::new(max_frame)
        }
    }

    /// Changes the frame limit (a TLS connection gets the full one once it
    /// has authenticated).
    pub fn set_max_frame(&mut self, max_frame: usize) {
        self.max_frame = max_frame;
    }
}

/// The most elements (values inside arrays and maps, keys included) one
/// frame may hold: what decoding it may cost is bounded by this and the
/// frame's size (a megabyte of one-byte nils would otherwise decode into
/// tens of megabytes of values).
pub const MAX_ELEMENTS: usize = 65_536;

/// Where scanning a frame stopped short.
enum Scan {
    /// More bytes are needed.
    Incomplete,
    Malformed(String),
}

fn be_len(buf: &[u8], pos: usize, width: usize) -> Result<usize, Scan> {
    let bytes = buf.get(pos..pos + width).ok_or(Scan::Incomplete)?;
    Ok(bytes
        .iter()
        .fold(0usize, |acc, b| (acc << 8) | usize::from(*b)))
}

/// One value's header at `pos`: (header length, elements it contains,
/// payload bytes after the header).
fn header(buf: &[u8], pos: usize) -> Result<(usize, usize, usize), Scan> {
    let marker = *buf.get(pos).ok_or(Scan::Incomplete)?;
    let at = pos + 1;
    Ok(match marker {
        0x00..=0x7f | 0xc0 | 0xc2 | 0xc3 | 0xe0..=0xff => (1, 0, 0),
        0x80..=0x8f => (1, 2 * usize::from(marker & 0x0f), 0),
        0x90..=0x9f => (1, usize::from(marker & 0x0f), 0),
        0xa0..=0xbf => (1, 0, usize::from(marker & 0x1f)),
        0xc1 => return Err(Scan::Malformed("reserved byte 0xc1".into())),
        0xc4 | 0xd9 => (2, 0, be_len(buf, at, 1)?),
        0xc5 | 0xda => (3, 0, be_len(buf, at, 2)?),
        0xc6 | 0xdb => (5, 0, be_len(buf, at, 4)?),
        0xc7 => (2, 0, be_len(buf, at, 1)? + 1),
        0xc8 => (3, 0, be_len(buf, at, 2)? + 1),
        0xc9 => (5, 0, be_len(buf, at, 4)? + 1),
        0xcc | 0xd0 => (1, 0, 1),
        0xcd | 0xd1 => (1, 0, 2),
        0xca | 0xce | 0xd2 => (1, 0, 4),
        0xcb | 0xcf | 0xd3 => (1, 0, 8),
        0xd4 => (1, 0, 2),
        0xd5 => (1, 0, 3),
        0xd6 => (1, 0, 5),
        0xd7 => (1, 0, 9),
        0xd8 => (1, 0, 17),
        0xdc => (3, be_len(buf, at, 2)?, 0),
        0xdd => (5, be_len(buf, at, 4)?, 0),
        0xde => (3, 2 * be_len(buf, at, 2)?, 0),
        0xdf => (5, 2 * be_len(buf, at, 4)?, 0),
    })
}

/// Scans a frame's structure as its bytes arrive (no reserved byte 0xc1,
/// nesting and element count bounded), without building anything and
/// without going over what it has scanned before: a frame that arrives
/// in many pieces costs time linear in its size.
#[derive(Debug, Clone, Default)]
struct Scanner {
    /// Where the next value starts.
    pos: usize,
    /// The elements left in each container still open, outermost first.
    open: Vec<usize>,
    /// Elements seen in this frame.
    elements: usize,
}

impl Scanner {
    /// The frame's length once it is whole.
    fn scan(&mut self, buf: &[u8], max_elements: usize) -> Result<usize, Scan> {
        loop {
            let (head, items, bytes) = header(buf, self.pos)?;
            let end = self.pos + head + bytes;
            if end > buf.len() {
                return Err(Scan::Incomplete);
            }
            self.pos = end;
            if items > 0 {
                if self.open.len() >= MAX_DEPTH {
                    return Err(Scan::Malformed(format!("nested deeper than {MAX_DEPTH}")));
                }
                self.elements = self.elements.saturating_add(items);
                if self.elements > max_elements {
                    return Err(Scan::Malformed(format!(
                        "more than {max_elements} elements in one frame"
                    )));
                }
                self.open.push(items);
                continue;
            }
            // A value is whole: so is each container it completes.
            loop {
                match self.open.last_mut() {
                    None => return Ok(self.pos),
                    Some(left) => {
                        *left -= 1;
                        if *left > 0 {
                            break;
                        }
                        self.open.pop();
                    }
                }
            }
        }
    }
}

impl Decoder for MsgpackCodec {
    type Item = rmpv::Value;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<rmpv::Value>, CodecError> {
        if src.is_empty() {
            return Ok(None);
        }
        match self.scanner.scan(src, self.max_elements) {
            Ok(len) if len > self.max_frame => Err(CodecError::TooLarge(self.max_frame)),
            Ok(len) => {
                self.scanner = Scanner::default();
                let frame = src.split_to(len);
                let mut cursor: &[u8] = &frame;
                // The scanner bounded the nesting already; rmpv counts a
                // map's keys and values as levels of their own.
                rmpv::decode::read_value_with_max_depth(&mut cursor, 4 * MAX_DEPTH + 4)
                    .map(Some)
                    .map_err(|e| CodecError::Malformed(e.to_string()))
            }
            Err(Scan::Incomplete) if src.len() > self.max_frame => {
                Err(CodecError::TooLarge(self.max_frame))
            }
            Err(Scan::Incomplete) => Ok(None),
            Err(Scan::Malformed(why)) => Err(CodecError::Malformed(why)),
        }
    }
}

impl Encoder<rmpv::Value> for MsgpackCodec {
    type Error = CodecError;

    fn encode(&mut self, item: rmpv::Value, dst: &mut BytesMut) -> Result<(), CodecError> {
        rmpv::encode::write_value(&mut dst.writer(), &item).map_err(|e| CodecError::Io(e.into()))
    }
}

/// A frame encoded already (results are serialised straight to bytes).
impl Encoder<Vec<u8>> for MsgpackCodec {
    type Error = CodecError;

    fn encode(&mut self, item: Vec<u8>, dst: &mut BytesMut) -> Result<(), CodecError> {
        dst.extend_from_slice(&item);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rmpv::Value;

    fn encode(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, v).unwrap();
        out
    }

    #[test]
    fn frames_split_anywhere_decode_whole() {
        let v = Value::Array(vec![
            0.into(),
            7.into(),
            "host.info".into(),
            Value::Array(vec![]),
        ]);
        let bytes = [encode(&v), encode(&v)].concat();
        for cut in 0..bytes.len() {
            let mut codec = MsgpackCodec::new(1024);
            let mut buf = BytesMut::from(&bytes[..cut]);
            let mut got = Vec::new();
            while let Some(f) = codec.decode(&mut buf).unwrap() {
                got.push(f);
            }
            buf.extend_from_slice(&bytes[cut..]);
            while let Some(f) = codec.decode(&mut buf).unwrap() {
                got.push(f);
            }
            assert_eq!(got, vec![v.clone(), v.clone()], "cut at {cut}");
        }
    }

    #[test]
    fn oversized_and_malformed_frames_are_errors() {
        let big = Value::String("x".repeat(5000).into());
        let mut buf = BytesMut::from(&encode(&big)[..]);
        assert!(matches!(
            MsgpackCodec::new(4096).decode(&mut buf),
            Err(CodecError::TooLarge(4096))
        ));
        // A string header announcing 4 GiB: refused once the buffer passes the limit, not allocated.
        let mut buf = BytesMut::from(&[0xdb, 0xff, 0xff, 0xff, 0xff][..]);
        buf.extend_from_slice(&[b'a'; 5000]);
        assert!(matches!(
            MsgpackCodec::new(4096).decode(&mut buf),
            Err(CodecError::TooLarge(_))
        ));
        // 0xc1 is the one byte MessagePack never uses.
        let mut buf = BytesMut::from(&[0xc1][..]);
        assert!(matches!(
            MsgpackCodec::new(4096).decode(&mut buf),
            Err(CodecError::Malformed(_))
        ));
        // 0xc1 nested inside an array, too.
        let mut buf = BytesMut::from(&[0x92, 0x01, 0xc1][..]);
        assert!(matches!(
            MsgpackCodec::new(4096).decode(&mut buf),
            Err(CodecError::Malformed(_))
        ));
        // An array announcing 4 billion elements is refused at once.
        let mut buf = BytesMut::from(&[0xdd, 0xff, 0xff, 0xff, 0xff, 0x01][..]);
        assert!(matches!(
            MsgpackCodec::new(4096).decode(&mut buf),
            Err(CodecError::Malformed(_))
        ));
        // Deep nesting: 64 levels of arrays and of maps decode; 65 do not.
        for (open, depth, ok) in [
            (0x91u8, 64, true),
            (0x91, 65, false),
            (0x81, 64, true),
            (0x81, 65, false),
        ] {
            let mut bytes = Vec::new();
            for _ in 0..depth {
                bytes.push(open);
                if open == 0x81 {
                    bytes.push(0xa1);
                    bytes.push(b'k');
                }
            }
            bytes.push(0xc0);
            let mut buf = BytesMut::from(&bytes[..]);
            let r = MsgpackCodec::new(4096).decode(&mut buf);
            assert_eq!(
                matches!(r, Ok(Some(_))),
                ok,
                "{depth} deep ({open:#x}): {r:?}"
            );
        }
        // Too many elements for one frame, however small they are.
        let mut bytes = vec![0xdd, 0x00, 0x01, 0x00, 0x01];
        bytes.extend(std::iter::repeat_n(0xc0u8, 65_537));
        let mut buf = BytesMut::from(&bytes[..]);
        assert!(matches!(
            MsgpackCodec::new(1 << 20).decode(&mut buf),
            Err(CodecError::Malformed(_))
        ));
        // A reply (a tree of a thousand VMs) is bounded by its size alone.
        let mut buf = BytesMut::from(&bytes[..]);
        assert!(matches!(
            MsgpackCodec::for_replies(1 << 20).decode(&mut buf),
            Ok(Some(Value::Array(a))) if a.len() == 65_537
        ));
    }

    #[test]
    fn a_frame_that_arrives_in_pieces_is_scanned_once() {
        // A 200 KiB array of small strings, fed 200 bytes at a time: each
        // call scans only what came since (counted by the scanner's position).
        let v = Value::Array(
            (0..20_000)
                .map(|i| Value::from(format!("{i:08}")))
                .collect(),
        );
        let bytes = encode(&v);
        let mut codec = MsgpackCodec::new(1 << 20);
        let mut buf = BytesMut::new();
        let mut got = None;
        for chunk in bytes.chunks(200) {
            let before = codec.scanner.pos;
            buf.extend_from_slice(chunk);
            if let Some(v) = codec.decode(&mut buf).unwrap() {
                got = Some(v);
                break;
            }
            assert!(codec.scanner.pos >= before, "it never goes back");
            assert!(
                codec.scanner.pos + 200 >= buf.len(),
                "it is never far behind"
            );
        }
        assert_eq!(got, Some(v));
    }
}
