//! Transports: they parse bytes into the API's domain types and know
//! nothing else. `rpc` is MessagePack-RPC (the admin socket).

pub mod rpc;
pub mod socket;
pub mod xenstore;
