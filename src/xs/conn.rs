//! A xenstore connection's identity, and what goes back to it.

use super::wire::Packet;

/// A connection to the store (a socket client, or an in-process one).
pub type ConnId = u64;

/// What goes back to a connection, on its outbound channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    Packet(Packet),
    /// The store dropped this connection (its domain was released).
    Close,
}
