//! Which backends drive this host, chosen at run time: the hypervisor and
//! what goes with it (devices, boot images, fault injection, xenstore
//! wiring), composed once and handed to whoever needs each part.

use std::path::Path;
use std::sync::Arc;

use super::devices::DeviceHost;
use super::faults::GuestFaults;
use super::hypervisor::{Hypervisor, HypervisorError, HypervisorKind};
use super::images::{BootImages, NoPreparation};
use super::migration::{DomainSaver, NoSaver};
use super::xenstore::{EmbeddedStore, XenstoreFollower};
use crate::config::{Config, HypervisorChoice};

/// Where the privileged command interface of a Xen dom0 lives.
pub const PRIVCMD: &str = "/dev/xen/privcmd";

/// Why a Xen host cannot save domains yet.
const XEN_SAVE_UNAVAILABLE: &str =
    "suspend, resume and migration on Xen need xenith's save helper (xc_domain_save), which this build does not have yet";

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
    /// Saves and restores domains (suspend, resume, migration).
    pub saver: Arc<dyn DomainSaver>,
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
            faults: Some(sim.clone()),
            follower: None,
            saver: sim,
        }
    }
}

/// The XENFEAT_dom0 bit of Xen's feature flags (xen/include/public/features.h).
const XENFEAT_DOM0: u32 = 11;

/// Why the host under `root` looks like a Xen dom0, if it does: the tests
/// systemd-detect-virt makes (the XENFEAT_dom0 bit of
/// /sys/hypervisor/properties/features, or `control_d` in
/// /proc/xen/capabilities).
pub fn xen_dom0_evidence(root: &Path) -> Option<String> {
    let features = root.join("sys/hypervisor/properties/features");
    if let Ok(text) = std::fs::read_to_string(&features) {
        let hex = text.trim().trim_start_matches("0x");
        if u64::from_str_radix(hex, 16).is_ok_and(|f| f & (1 << XENFEAT_DOM0) != 0) {
            return Some(format!("{} has XENFEAT_dom0", features.display()));
        }
    }
    let caps = root.join("proc/xen/capabilities");
    match std::fs::read_to_string(&caps) {
        Ok(text) if text.contains("control_d") => {
            Some(format!("{} says control_d", caps.display()))
        }
        _ => None,
    }
}

/// The backend `choice` means on the host under `root`. `auto` is xen when
/// privcmd exists, and never the simulator on a Xen dom0 (without privcmd
/// it is refused, saying why); the simulator elsewhere.
pub fn choose(choice: HypervisorChoice, root: &Path) -> Result<HypervisorKind, HypervisorError> {
    let privcmd = root.join(PRIVCMD.trim_start_matches('/'));
    Ok(match choice {
        HypervisorChoice::Sim => HypervisorKind::Sim,
        HypervisorChoice::Xen => HypervisorKind::Xen,
        HypervisorChoice::Auto if privcmd.exists() => HypervisorKind::Xen,
        HypervisorChoice::Auto => {
            if let Some(evidence) = xen_dom0_evidence(root) {
                return Err(HypervisorError::Unavailable(
                    "xen",
                    format!(
                        "this host is a Xen dom0 ({evidence}) but {PRIVCMD} is missing: load \
                         xen_privcmd and mount xenfs (Debian's xen-utils-common does both at \
                         boot); --hypervisor sim runs the simulator instead, on purpose"
                    ),
                ));
            }
            HypervisorKind::Sim
        }
    })
}

/// Opens the backend of `kind` ([`choose`] tells which) with what goes
/// with it.
///
/// On the simulated host, `guests` (the embedded xenstored) is where the
/// simulated guests run their xenstore side; without it they are silent.
pub fn select(
    kind: HypervisorKind,
    config: &Config,
    guests: Option<Arc<dyn EmbeddedStore>>,
) -> Result<HostDrivers, HypervisorError> {
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
                saver: Arc::new(NoSaver(XEN_SAVE_UNAVAILABLE)),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(files: &[(&str, &str)]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let p = root.path().join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        root
    }

    #[test]
    fn auto_never_picks_the_simulator_on_a_xen_dom0() {
        // Not Xen at all, or a Xen guest (domU): the simulator.
        for files in [
            &[][..],
            &[
                ("sys/hypervisor/type", "xen\n"),
                ("sys/hypervisor/properties/features", "00002705\n"),
            ],
            &[("proc/xen/capabilities", "")],
        ] {
            let root = host(files);
            assert_eq!(
                choose(HypervisorChoice::Auto, root.path()).unwrap(),
                HypervisorKind::Sim,
                "{files:?}"
            );
        }
        // A dom0 (either sign), privcmd missing: refused, saying why.
        for files in [
            &[("sys/hypervisor/properties/features", "0x00000f05\n")][..],
            &[("proc/xen/capabilities", "control_d\n")],
        ] {
            let root = host(files);
            let e = choose(HypervisorChoice::Auto, root.path()).unwrap_err();
            assert!(e.to_string().contains("is a Xen dom0"), "{e}");
            assert!(e.to_string().contains(PRIVCMD), "{e}");
            // Asked for, the simulator still runs.
            assert_eq!(
                choose(HypervisorChoice::Sim, root.path()).unwrap(),
                HypervisorKind::Sim
            );
        }
        // With privcmd: xen.
        let root = host(&[
            ("dev/xen/privcmd", ""),
            ("proc/xen/capabilities", "control_d"),
        ]);
        assert_eq!(
            choose(HypervisorChoice::Auto, root.path()).unwrap(),
            HypervisorKind::Xen
        );
    }
}
