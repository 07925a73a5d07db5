//! The xenstore client: async and pipelined (replies matched by req_id),
//! transactions retried on EAGAIN, watches as streams. The same client talks
//! to a xenstored Unix socket (xenith's embedded one, or a host's cxenstored
//! or oxenstored) and, in process, to the embedded xenstored as a given
//! domain (with that domain's permissions and quotas).

mod client;
mod connection;

use std::future::Future;
use std::pin::Pin;

use tokio::sync::mpsc;

pub use client::{Dial, Transaction, WatchStream, XsClient, XsClientError, XsLink};

use crate::xs::{ConnId, Outbound, Packet};

/// An in-process xenstored the client can reach without a socket (xenith's
/// embedded one implements this in its actor's handle).
pub trait EmbeddedStore: Send + Sync + std::fmt::Debug + 'static {
    /// Opens a connection: privileged with `None`, else as that domain.
    #[allow(clippy::type_complexity)]
    fn connect(
        &self,
        domid: Option<u32>,
    ) -> Pin<
        Box<
            dyn Future<Output = Result<(ConnId, mpsc::UnboundedReceiver<Outbound>), String>> + Send,
        >,
    >;

    /// Sends requests of one connection; false if the store is gone.
    fn send(&self, conn: ConnId, packets: Vec<Packet>) -> bool;

    fn disconnect(&self, conn: ConnId);
}

/// A driver that follows xenstore on the toolstack's connection, once it is
/// up (the Xen driver watches `@releaseDomain` to notice shutdowns and
/// deaths when xenstored sees them).
pub trait XenstoreFollower: Send + Sync + std::fmt::Debug {
    /// Starts following on `xs` (from the runtime; returns at once).
    fn follow(&self, xs: &XsClient);
}
