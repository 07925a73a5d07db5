//! Framing: one MessagePack value per frame, bounded in size.

use std::io;

use tokio_util::bytes::{Buf, BufMut, BytesMut};
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

fn is_eof(e: &rmpv::decode::Error) -> bool {
    match e {
        rmpv::decode::Error::InvalidMarkerRead(e) | rmpv::decode::Error::InvalidDataRead(e) => {
            e.kind() == io::ErrorKind::UnexpectedEof
        }
        rmpv::decode::Error::DepthLimitExceeded => false,
    }
}

impl Decoder for MsgpackCodec {
    type Item = rmpv::Value;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<rmpv::Value>, CodecError> {
        if src.is_empty() {
            return Ok(None);
        }
        let mut cursor: &[u8] = src;
        match rmpv::decode::read_value_with_max_depth(&mut cursor, MAX_DEPTH) {
            Ok(value) => {
                let used = src.len() - cursor.len();
                if used > self.max_frame {
                    return Err(CodecError::TooLarge(self.max_frame));
                }
                src.advance(used);
                Ok(Some(value))
            }
            Err(e) if is_eof(&e) => {
                if src.len() > self.max_frame {
                    Err(CodecError::TooLarge(self.max_frame))
                } else {
                    src.reserve(4096);
                    Ok(None)
                }
            }
            Err(e) => Err(CodecError::Malformed(e.to_string())),
        }
    }
}

impl Encoder<rmpv::Value> for MsgpackCodec {
    type Error = CodecError;

    fn encode(&mut self, item: rmpv::Value, dst: &mut BytesMut) -> Result<(), CodecError> {
        rmpv::encode::write_value(&mut dst.writer(), &item).map_err(|e| CodecError::Io(e.into()))
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
        let v = Value::Array(vec![0.into(), 7.into(), "host.info".into(), Value::Array(vec![])]);
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
        assert!(matches!(MsgpackCodec::new(4096).decode(&mut buf), Err(CodecError::TooLarge(4096))));
        // A string header announcing 4 GiB: refused once the buffer passes the limit, not allocated.
        let mut buf = BytesMut::from(&[0xdb, 0xff, 0xff, 0xff, 0xff][..]);
        buf.extend_from_slice(&[b'a'; 5000]);
        assert!(matches!(MsgpackCodec::new(4096).decode(&mut buf), Err(CodecError::TooLarge(_))));
        // 0xc1 is the one byte MessagePack never uses.
        let mut buf = BytesMut::from(&[0xc1][..]);
        assert!(matches!(MsgpackCodec::new(4096).decode(&mut buf), Err(CodecError::Malformed(_))));
        // Deep nesting.
        let mut buf = BytesMut::from(&[0x91u8; 200][..]);
        buf.extend_from_slice(&[0xc0]);
        assert!(matches!(MsgpackCodec::new(4096).decode(&mut buf), Err(CodecError::Malformed(_))));
    }
}
