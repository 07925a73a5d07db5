//! MessagePack-RPC (CONTRACT.md "RPC"): request `[0, msgid, method, params]`,
//! response `[1, msgid, error, result]`, notification `[2, method, params]`.
//! Frames are self-delimiting MessagePack values on a stream.

pub mod client;
pub mod codec;
pub mod methods;
pub mod server;
pub mod wire;

pub use client::{ClientError, RemoteError, RpcClient};
pub use codec::{CodecError, MsgpackCodec};
pub use server::{RpcListener, RpcService};
