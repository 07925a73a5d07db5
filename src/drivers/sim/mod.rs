//! The simulated hypervisor: a Xen host in memory, for hosts without Xen
//! and for tests at scale. It is labelled as such everywhere it shows
//! (`host.info` says `hypervisor: "sim"` and a `(simulated)` version).

use crate::config::SimConfig;

use super::hypervisor::{Hypervisor, HypervisorError, HypervisorKind, PhysInfo};

/// The Xen version the simulation imitates.
pub const SIM_XEN_VERSION: &str = "4.17.0 (simulated)";

/// A simulated Xen host. So far it holds only dom0.
#[derive(Debug)]
pub struct SimHypervisor {
    config: SimConfig,
}

impl SimHypervisor {
    pub fn new(config: SimConfig) -> Self {
        Self { config }
    }
}

impl Hypervisor for SimHypervisor {
    fn kind(&self) -> HypervisorKind {
        HypervisorKind::Sim
    }

    fn physinfo(&self) -> Result<PhysInfo, HypervisorError> {
        Ok(PhysInfo {
            xen_version: SIM_XEN_VERSION.to_owned(),
            total_mib: self.config.total_mib,
            free_mib: self.config.total_mib - self.config.dom0_mib,
            cpus: self.config.cpus,
        })
    }
}
