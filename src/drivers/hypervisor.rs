//! The hypervisor interface, shaped after libxenctrl: what the toolstack
//! asks of Xen. Calls may block (they are hypercalls on a real host): actors
//! run them on tokio's blocking pool, never on an arbiter thread.

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::config::{Config, HypervisorChoice};

/// Where the privileged command interface of a Xen dom0 lives.
pub const PRIVCMD: &str = "/dev/xen/privcmd";

/// Which backend drives the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HypervisorKind {
    /// The simulated hypervisor (no Xen involved).
    Sim,
    /// Real Xen through libxenctrl.
    Xen,
}

impl HypervisorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HypervisorKind::Sim => "sim",
            HypervisorKind::Xen => "xen",
        }
    }
}

/// The host's physical facts, as `xc_physinfo` and `xc_version` report them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PhysInfo {
    pub xen_version: String,
    pub total_mib: u64,
    pub free_mib: u64,
    pub cpus: u32,
}

/// A hypervisor call failed.
#[derive(Debug, thiserror::Error)]
pub enum HypervisorError {
    /// The backend cannot be used on this host.
    #[error("the {0} hypervisor backend is unavailable: {1}")]
    Unavailable(&'static str, String),
    /// A call failed with an errno, as libxenctrl reports it.
    #[error("{call} failed")]
    Call {
        call: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// What the toolstack needs from the hypervisor.
pub trait Hypervisor: Send + Sync + std::fmt::Debug {
    fn kind(&self) -> HypervisorKind;

    /// Host memory, CPUs and the hypervisor's version (`xl info`).
    fn physinfo(&self) -> Result<PhysInfo, HypervisorError>;
}

/// Picks the backend the configuration asks for (`auto`: xen when
/// /dev/xen/privcmd exists, sim otherwise).
pub fn select(config: &Config) -> Result<Arc<dyn Hypervisor>, HypervisorError> {
    let kind = match config.hypervisor {
        HypervisorChoice::Sim => HypervisorKind::Sim,
        HypervisorChoice::Xen => HypervisorKind::Xen,
        HypervisorChoice::Auto if Path::new(PRIVCMD).exists() => HypervisorKind::Xen,
        HypervisorChoice::Auto => HypervisorKind::Sim,
    };
    match kind {
        HypervisorKind::Sim => Ok(Arc::new(super::sim::SimHypervisor::new(config.sim))),
        // The libxenctrl backend is the subject of its own work item.
        HypervisorKind::Xen => Err(HypervisorError::Unavailable(
            "xen",
            "this build has no libxenctrl backend yet; run with --hypervisor sim".into(),
        )),
    }
}
