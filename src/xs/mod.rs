//! The xenstore vocabulary, the bottom layer everything xenstore-related
//! shares: the wire protocol (xen/include/public/io/xs_wire.h: the 16-byte
//! header, message types, error names, payload encoding and limits), path
//! rules, parsed requests and permissions, the frame codec, a connection's
//! identity and what goes back to it, and the xenbus device states.
//!
//! The store (src/xenstored), its socket transport (src/proto/xenstore.rs),
//! the client (src/drivers/xenstore), the libxl layout (src/vm/layout.rs),
//! the actors and the simulated backends all speak it; it depends on
//! nothing of theirs.

pub mod codec;
pub mod conn;
pub mod path;
pub mod request;
pub mod wire;
pub mod xenbus;

pub use codec::XsCodec;
pub use conn::{ConnId, Outbound};
pub use path::{PathError, XsPath};
pub use request::{parse_request, Perm, PermLetter, Perms, Request};
pub use wire::{MsgType, Packet, XsError, HEADER_LEN, PAYLOAD_MAX};
pub use xenbus::{DeviceKind, XenbusState};
