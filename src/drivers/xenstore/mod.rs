//! The xenstore client: async and pipelined (replies matched by req_id),
//! transactions retried on EAGAIN, watches as streams. The same client talks
//! to a xenstored Unix socket (xenith's embedded one, or a host's cxenstored
//! or oxenstored) and, in process, to the embedded xenstored as a given
//! domain (with that domain's permissions and quotas).

mod client;

pub use client::{Transaction, WatchStream, XsClient, XsClientError};
