//! Framing: header, then `len` bytes of payload. A header announcing more
//! than 4096 bytes is a protocol violation: the connection is dropped (as the
//! C and OCaml daemons do).

use std::io;

use tokio_util::bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::wire::{parse_header, Packet, HEADER_LEN, PAYLOAD_MAX};

/// Why a stream cannot be read further.
#[derive(Debug, thiserror::Error)]
pub enum XsCodecError {
    #[error("payload length {0} over the {PAYLOAD_MAX}-byte limit")]
    TooLong(u32),
    #[error("connection error")]
    Io(#[from] io::Error),
}

/// Decodes and encodes xenstore packets.
#[derive(Debug, Clone, Copy, Default)]
pub struct XsCodec;

impl Decoder for XsCodec {
    type Item = Packet;
    type Error = XsCodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Packet>, XsCodecError> {
        let Some(head) = src.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let mut h = [0u8; HEADER_LEN];
        h.copy_from_slice(head);
        let (ty, req_id, tx_id, len) = parse_header(&h);
        if len as usize > PAYLOAD_MAX {
            return Err(XsCodecError::TooLong(len));
        }
        let total = HEADER_LEN + len as usize;
        if src.len() < total {
            src.reserve(total - src.len());
            return Ok(None);
        }
        src.advance(HEADER_LEN);
        let payload = src.split_to(len as usize).to_vec();
        Ok(Some(Packet {
            ty,
            req_id,
            tx_id,
            payload,
        }))
    }
}

impl Encoder<Packet> for XsCodec {
    type Error = XsCodecError;

    fn encode(&mut self, item: Packet, dst: &mut BytesMut) -> Result<(), XsCodecError> {
        dst.reserve(HEADER_LEN + item.payload.len());
        // Payloads are at most PAYLOAD_MAX (4096) bytes where they are made.
        let len = u32::try_from(item.payload.len()).unwrap_or(u32::MAX);
        for field in [item.ty, item.req_id, item.tx_id, len] {
            dst.extend_from_slice(&field.to_le_bytes());
        }
        dst.extend_from_slice(&item.payload);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xs::wire::MsgType;

    #[test]
    fn split_packets_reassemble_and_oversized_ones_fail() {
        let a = Packet::new(MsgType::Write, 1, 0, b"/a\0hello".to_vec());
        let b = Packet::new(MsgType::Read, 2, 3, b"/a\0".to_vec());
        let bytes = [a.encode(), b.encode()].concat();
        for cut in 0..bytes.len() {
            let mut buf = BytesMut::from(&bytes[..cut]);
            let mut got = Vec::new();
            while let Some(p) = XsCodec.decode(&mut buf).unwrap() {
                got.push(p);
            }
            buf.extend_from_slice(&bytes[cut..]);
            while let Some(p) = XsCodec.decode(&mut buf).unwrap() {
                got.push(p);
            }
            assert_eq!(got, vec![a.clone(), b.clone()]);
        }
        let mut buf = BytesMut::from(&[2u8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x10, 0, 0][..]);
        assert!(matches!(
            XsCodec.decode(&mut buf),
            Err(XsCodecError::TooLong(4097))
        ));
    }
}
