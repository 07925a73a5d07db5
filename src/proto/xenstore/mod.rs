//! The xenstore wire protocol (xen/include/public/io/xs_wire.h): the
//! 16-byte header, message types, error names, payload encoding, limits and
//! path rules. Shared by xenith's xenstored and its xenstore client.

pub mod codec;
pub mod path;
pub mod request;
pub mod server;
pub mod wire;

pub use codec::XsCodec;
pub use path::{PathError, XsPath};
pub use request::{parse_request, Perm, PermLetter, Perms, Request};
pub use wire::{MsgType, Packet, XsError, HEADER_LEN, PAYLOAD_MAX};
