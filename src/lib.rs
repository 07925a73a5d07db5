//! xenith: a Xen toolstack for dom0.
//!
//! Layers run one way, top to bottom (tests/layers.rs keeps them so):
//!
//! - [`proto`]: transports (MessagePack-RPC on the Unix socket and over
//!   TLS; the xenstore socket). They parse bytes into the API's calls and
//!   know nothing else.
//! - [`api`]: translation. A call goes to the actor that owns it, through
//!   its typed handle; each layer's error becomes the wire's `ApiError`
//!   in one place (src/api/error.rs).
//! - [`actors`]: state and orchestration, a supervision tree. The
//!   inventory owns the VMs; each VM's domain actor owns its operations;
//!   backends, consoles, agents and emulators are actors of their VM.
//! - [`vm`]: VM specs (DTOs validated into runtime types), records, the
//!   libxl xenstore layout, as data and pure functions.
//! - [`storage`]: SRs and VDIs as data: the storage DTOs validated, the
//!   storage records (beside `vm`, over the drivers).
//! - [`drivers`]: the host (the hypervisor behind `Hypervisor` and its
//!   async adapter `Hv`, the xenstore client, devices, processes); blocking
//!   work leaves the async threads through `drivers::blocking`.
//! - [`xenstored`]: the xenstore database (synchronous, effects as data).
//! - the bottom: [`xs`] (the xenstore vocabulary), [`config`], [`paths`],
//!   [`error`].
//!
//! The daemon ([`daemon`]: it composes the tree) and the admin shell
//! ([`shell`]) sit on top.
//!
//! Subsystems to come each get an actor folder under src/actors and a
//! driver trait under src/drivers: storage repositories (`actors/storage`:
//! a supervisor with one actor per SR; `drivers/storage`: file and LVM),
//! tasks (`actors/tasks`), migration (`actors/migration`,
//! `drivers/migration`: the stream and its helper) and metrics
//! (`actors/metrics`, `drivers/metrics`: the samplers).

pub mod actors;
pub mod api;
pub mod config;
pub mod daemon;
pub mod drivers;
pub mod error;
pub mod paths;
pub mod proto;
pub mod shell;
pub mod storage;
pub mod vm;
pub mod xenstored;
pub mod xs;
