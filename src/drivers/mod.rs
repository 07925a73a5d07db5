//! Drivers: what xenith's actors use to reach the host (the hypervisor,
//! xenstored, devices, processes). Each is a trait with backends chosen at
//! run time ([`select`]); blocking calls go through [`blocking`] (the
//! hypervisor's through its async adapter, [`hv::Hv`]).
//!
//! Subsystems to come keep this shape: storage repositories (qemu-img,
//! lvm2) get a driver trait under drivers/storage, migration its stream
//! and helper under drivers/migration, metrics their samplers under
//! drivers/metrics, each with its actor under src/actors.

pub mod blocking;
pub mod devices;
pub mod emulator;
pub mod faults;
pub mod hv;
pub mod hypervisor;
pub mod images;
pub mod migration;
pub mod select;
pub mod sim;
pub mod statefile;
pub mod storage;
pub mod xen;
pub mod xenstore;

pub use faults::{GuestFault, GuestFaults};
pub use hv::{Hv, HvError};
pub use hypervisor::{
    BootImage, Built, DomId, DomainConfig, DomainEvent, DomainInfo, DomainType, Firmware,
    Hypervisor, HypervisorError, HypervisorKind, PhysInfo, ShutdownReason,
};
pub use images::BootImages;
pub use select::{select, HostDrivers};
