//! xenith: a Xen toolstack for dom0.
//!
//! Layers run one way: `proto` (transports: MessagePack-RPC, xenstore wire)
//! calls `api`, which drives `actors` (the supervision tree), which use
//! `drivers` (hypervisor, xenstore, processes).

pub mod actors;
pub mod api;
pub mod config;
pub mod daemon;
pub mod drivers;
pub mod error;
pub mod paths;
pub mod proto;
pub mod shell;
pub mod vm;
pub mod xenstored;
pub mod xs;
