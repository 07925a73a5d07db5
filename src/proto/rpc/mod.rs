//! MessagePack-RPC (CONTRACT.md "RPC"): request `[0, msgid, method, params]`,
//! response `[1, msgid, error, result]`, notification `[2, method, params]`.
//! Frames are self-delimiting MessagePack values on a stream.

pub mod client;
pub mod codec;
pub mod gate;
pub mod methods;
pub mod server;
mod storage_methods;
pub mod tls;
pub mod wire;

pub use client::{ClientError, Notification, RemoteError, RpcClient};
pub use codec::{CodecError, MsgpackCodec};
pub use server::{RpcListener, RpcService};

/// Fuzz harness: bytes → frames → messages → calls. Must never panic.
#[doc(hidden)]
pub fn fuzz_frames(data: &[u8]) {
    use tokio_util::codec::Decoder;
    let mut buf = tokio_util::bytes::BytesMut::from(data);
    let mut codec = MsgpackCodec::new(1 << 20);
    while let Ok(Some(frame)) = codec.decode(&mut buf) {
        if let Ok(wire::Incoming::Request { method, params, .. }) = wire::parse(frame) {
            let _ = methods::parse_call(&method, params);
        }
    }
}
