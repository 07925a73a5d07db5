//! Drivers: what xenith's actors use to reach the host (the hypervisor,
//! xenstored, processes). Each is a trait with backends chosen at run time.

pub mod devices;
pub mod emulator;
pub mod hypervisor;
pub mod sim;
pub mod xen;
pub mod xenstore;

pub use hypervisor::{
    select, BootImage, Built, DomId, DomainConfig, DomainEvent, DomainInfo, DomainType, GuestFault,
    Hypervisor, HypervisorError, HypervisorKind, PhysInfo, ShutdownReason,
};
