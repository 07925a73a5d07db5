//! xenith's xenstored: the xenstore database and its semantics, as a
//! synchronous `Store` that one actor owns (src/actors/xenstored/).
//!
//! Permissions, transactions, watches, quotas and domains follow the C
//! daemon (tools/xenstored); ../shared/notes/xenstore.md has the facts.

#[doc(hidden)]
pub mod fuzz;
mod ops;
pub mod store;
pub mod tree;
pub mod txn;
pub mod watch;

pub use store::{Out, Quota, Store};
