//! Which backends drive this host, chosen at run time: the hypervisor and
//! what goes with it (devices, boot images, fault injection, xenstore
//! wiring), composed once and handed to whoever needs each part.

use std::path::Path;
use std::sync::Arc;

use super::devices::DeviceHost;
use super::faults::GuestFaults;
use super::hypervisor::{Hypervisor, HypervisorError, HypervisorKind};
use super::images::{BootImages, NoPreparation};
use super::xenstore::{EmbeddedStore, XenstoreFollower};
use crate::config::{Config, HypervisorChoice};

/// Where the privileged command interface of a Xen dom0 lives.
pub const PRIVCMD: &str = "/dev/xen/privcmd";

/// A host's drivers, each behind its own trait.
#[derive(Debug, Clone)]
pub struct HostDrivers {
    pub hypervisor: Arc<dyn Hypervisor>,
    /// The host side of guest devices: Linux's loop devices and bridges on
    /// a Xen host, the simulated host's own on the simulated one.
    pub devices: Arc<dyn DeviceHost>,
    pub images: Arc<dyn BootImages>,
    /// Guests that can be told to misbehave (the simulated host only).
    pub faults: Option<Arc<dyn GuestFaults>>,
    /// Follows xenstore on the toolstack's connection once it is up.
    pub follower: Option<Arc<dyn XenstoreFollower>>,
}

impl HostDrivers {
    pub fn kind(&self) -> HypervisorKind {
        self.hypervisor.kind()
    }

    /// The simulated host's drivers.
    pub fn sim(sim: super::sim::SimHypervisor) -> Self {
        let sim = Arc::new(sim);
        HostDrivers {
            devices: sim.sim_devices(),
            hypervisor: sim.clone(),
            images: Arc::new(NoPreparation),
            faults: Some(sim),
            follower: None,
        }
    }
}

/// Picks the backend the configuration asks for (`auto`: xen when
/// /dev/xen/privcmd exists, sim otherwise).
///
/// On the simulated host, `guests` (the embedded xenstored) is where the
/// simulated guests run their xenstore side; without it they are silent.
pub fn select(
    config: &Config,
    guests: Option<Arc<dyn EmbeddedStore>>,
) -> Result<HostDrivers, HypervisorError> {
    let kind = match config.hypervisor {
        HypervisorChoice::Sim => HypervisorKind::Sim,
        HypervisorChoice::Xen => HypervisorKind::Xen,
        HypervisorChoice::Auto if Path::new(PRIVCMD).exists() => HypervisorKind::Xen,
        HypervisorChoice::Auto => HypervisorKind::Sim,
    };
    match kind {
        HypervisorKind::Sim => {
            let sim = super::sim::SimHypervisor::with_devices(
                config.sim,
                super::devices::sim::SimDevices::new(config.create_bridges),
            );
            if let (Some(store), Ok(rt)) = (guests, tokio::runtime::Handle::try_current()) {
                sim.attach_guests(store, rt);
            }
            Ok(HostDrivers::sim(sim))
        }
        HypervisorKind::Xen => {
            let (xen, images) = super::xen::XenHypervisor::open(config.state_dir.join("kernels"))?;
            let xen = Arc::new(xen);
            Ok(HostDrivers {
                hypervisor: xen.clone(),
                devices: Arc::new(super::devices::linux::LinuxDevices::new(
                    config.create_bridges,
                )),
                images,
                faults: None,
                follower: Some(xen),
            })
        }
    }
}
