//! xenith: a Xen toolstack for dom0.
//!
//! Layers run one way: `proto` (transports: MessagePack-RPC, xenstore wire)
//! calls `api`, which drives `actors` (the supervision tree), which use
//! `drivers` (hypervisor, xenstore, processes).

pub mod actors;
pub mod error;
pub mod config;
pub mod paths;
pub mod drivers;
pub mod api;
pub mod proto;
pub mod daemon;
