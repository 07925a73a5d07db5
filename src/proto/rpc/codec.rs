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
#[derive(Debug, Clone, Copy)]
pub struct MsgpackCodec {
    max_frame: usize,
}

impl MsgpackCodec {
    pub fn new(max_frame: usize) -> Self {
        Self { max_frame }
    }
}

/// Where scanning a frame stopped short.
enum Scan {
    /// More bytes are needed.
    Incomplete,
    Malformed(String),
}

fn take(buf: &[u8], pos: &mut usize, n: usize) -> Result<(), Scan> {
    let end = pos.checked_add(n).ok_or(Scan::Incomplete)?;
    if end > buf.len() {
        return Err(Scan::Incomplete);
    }
    *pos = end;
    Ok(())
}

fn be_len(buf: &[u8], pos: &mut usize, width: usize) -> Result<usize, Scan> {
    let start = *pos;
    take(buf, pos, width)?;
    Ok(buf[start..*pos]
        .iter()
        .fold(0usize, |acc, b| (acc << 8) | usize::from(*b)))
}

/// Skips one MessagePack value starting at `pos`, checking its structure
/// (no reserved byte 0xc1, bounded nesting) without building anything.
fn skip(buf: &[u8], pos: &mut usize, depth: usize) -> Result<(), Scan> {
    if depth > MAX_DEPTH {
        return Err(Scan::Malformed(format!("nested deeper than {MAX_DEPTH}")));
    }
    let marker = *buf.get(*pos).ok_or(Scan::Incomplete)?;
    *pos += 1;
    let (items, bytes) = match marker {
        0x00..=0x7f | 0xc0 | 0xc2 | 0xc3 | 0xe0..=0xff => (0, 0),
        0x80..=0x8f => (2 * usize::from(marker & 0x0f), 0),
        0x90..=0x9f => (usize::from(marker & 0x0f), 0),
        0xa0..=0xbf => (0, usize::from(marker & 0x1f)),
        0xc1 => return Err(Scan::Malformed("reserved byte 0xc1".into())),
        0xc4 | 0xd9 => (0, be_len(buf, pos, 1)?),
        0xc5 | 0xda => (0, be_len(buf, pos, 2)?),
        0xc6 | 0xdb => (0, be_len(buf, pos, 4)?),
        0xc7 => (0, be_len(buf, pos, 1)? + 1),
        0xc8 => (0, be_len(buf, pos, 2)? + 1),
        0xc9 => (0, be_len(buf, pos, 4)? + 1),
        0xcc | 0xd0 => (0, 1),
        0xcd | 0xd1 => (0, 2),
        0xca | 0xce | 0xd2 => (0, 4),
        0xcb | 0xcf | 0xd3 => (0, 8),
        0xd4 => (0, 2),
        0xd5 => (0, 3),
        0xd6 => (0, 5),
        0xd7 => (0, 9),
        0xd8 => (0, 17),
        0xdc => (be_len(buf, pos, 2)?, 0),
        0xdd => (be_len(buf, pos, 4)?, 0),
        0xde => (2 * be_len(buf, pos, 2)?, 0),
        0xdf => (2 * be_len(buf, pos, 4)?, 0),
    };
    take(buf, pos, bytes)?;
    // Each element takes at least a byte, so a huge announced count runs
    // out of input (Incomplete) long before it costs anything.
    for _ in 0..items {
        skip(buf, pos, depth + 1)?;
    }
    Ok(())
}

impl Decoder for MsgpackCodec {
    type Item = rmpv::Value;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<rmpv::Value>, CodecError> {
        if src.is_empty() {
            return Ok(None);
        }
        let mut len = 0;
        match skip(src, &mut len, 0) {
            Ok(()) if len > self.max_frame => Err(CodecError::TooLarge(self.max_frame)),
            Ok(()) => {
                let frame = src.split_to(len);
                let mut cursor: &[u8] = &frame;
                rmpv::decode::read_value_with_max_depth(&mut cursor, MAX_DEPTH + 1)
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
        // An array announcing 4 billion elements is just incomplete.
        let mut buf = BytesMut::from(&[0xdd, 0xff, 0xff, 0xff, 0xff, 0x01][..]);
        assert!(matches!(MsgpackCodec::new(4096).decode(&mut buf), Ok(None)));
        // Deep nesting.
        let mut buf = BytesMut::from(&[0x91u8; 200][..]);
        buf.extend_from_slice(&[0xc0]);
        assert!(matches!(
            MsgpackCodec::new(4096).decode(&mut buf),
            Err(CodecError::Malformed(_))
        ));
    }
}
