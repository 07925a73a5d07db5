//! The simulated host's side of guest devices: its storage, loop devices,
//! network interfaces and bridges, in memory.
//!
//! - Storage is simulated: any absolute path names a disk; one under /dev
//!   is a block device (used as it is), anything else a file, bound to a
//!   simulated loop device (`/dev/loopN`, major 7) as Linux would.
//! - The host comes with the bridges [`SIM_BRIDGES`]; others exist once
//!   xenith creates them (`network.create_bridges`).
//! - The simulated netback (drivers/sim/backends.rs) makes and removes the
//!   `vifD.N` interfaces, as the real one does.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use super::{DeviceError, DeviceHost, DiskBacking, InterfaceInfo};

/// The bridges the simulated host is set up with.
pub const SIM_BRIDGES: &[&str] = &["xenbr0", "xenbr1"];

/// Linux's loop major.
const LOOP_MAJOR: u32 = 7;

#[derive(Debug, Default)]
struct Net {
    /// Loop devices by number, with what they are bound to.
    loops: BTreeMap<u32, PathBuf>,
    /// Interfaces: up or not, and the bridge they are attached to.
    interfaces: BTreeMap<String, Interface>,
    bridges: BTreeSet<String>,
    /// Simulated block devices, numbered as they are first seen.
    block_devices: BTreeMap<PathBuf, u32>,
}

/// A simulated network interface.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Interface {
    pub up: bool,
    pub bridge: Option<String>,
}

/// The simulated host's devices.
#[derive(Debug)]
pub struct SimDevices {
    create_bridges: bool,
    net: Mutex<Net>,
}

impl SimDevices {
    pub fn new(create_bridges: bool) -> Self {
        let net = Net {
            bridges: SIM_BRIDGES.iter().map(|b| (*b).to_owned()).collect(),
            ..Net::default()
        };
        Self {
            create_bridges,
            net: Mutex::new(net),
        }
    }

    fn net(&self) -> MutexGuard<'_, Net> {
        self.net.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// netback made an interface (down, on no bridge).
    pub fn add_interface(&self, name: &str) {
        self.net().interfaces.entry(name.to_owned()).or_default();
    }

    /// netback removed one (it leaves its bridge with it).
    pub fn remove_interface(&self, name: &str) {
        self.net().interfaces.remove(name);
    }

    /// An interface as it is now.
    pub fn interface(&self, name: &str) -> Option<Interface> {
        self.net().interfaces.get(name).cloned()
    }

    /// Every interface's name.
    pub fn interfaces(&self) -> Vec<String> {
        self.net().interfaces.keys().cloned().collect()
    }

    /// Whether the bridge exists.
    pub fn bridge_exists(&self, bridge: &str) -> bool {
        self.net().bridges.contains(bridge)
    }
}

impl DeviceHost for SimDevices {
    fn attach_disk(&self, path: &Path, _read_only: bool) -> Result<DiskBacking, DeviceError> {
        if !path.is_absolute() {
            return Err(DeviceError::BadDisk {
                path: path.to_owned(),
                reason: "not an absolute path".into(),
            });
        }
        let mut net = self.net();
        if path.starts_with("/dev") {
            let next = u32::try_from(net.block_devices.len()).unwrap_or(u32::MAX);
            let minor = *net.block_devices.entry(path.to_owned()).or_insert(next);
            return Ok(DiskBacking {
                node: path.to_owned(),
                major: 202,
                minor: minor * 16,
                loop_device: false,
            });
        }
        let n = (0..).find(|n| !net.loops.contains_key(n)).unwrap_or(0);
        net.loops.insert(n, path.to_owned());
        Ok(DiskBacking {
            node: PathBuf::from(format!("/dev/loop{n}")),
            major: LOOP_MAJOR,
            minor: n,
            loop_device: true,
        })
    }

    fn release_disk(&self, path: &Path, node: &Path) -> Result<(), DeviceError> {
        let Some(n) = node
            .to_str()
            .and_then(|s| s.strip_prefix("/dev/loop"))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            return Ok(());
        };
        let mut net = self.net();
        if net.loops.get(&n).map(PathBuf::as_path) == Some(path) {
            net.loops.remove(&n);
        }
        Ok(())
    }

    fn interface_exists(&self, name: &str) -> bool {
        self.net().interfaces.contains_key(name)
    }

    fn attach_interface(&self, name: &str, bridge: &str) -> Result<(), DeviceError> {
        let mut net = self.net();
        if !net.bridges.contains(bridge) {
            if !self.create_bridges {
                return Err(DeviceError::NoBridge(bridge.to_owned()));
            }
            net.bridges.insert(bridge.to_owned());
        }
        let Some(iface) = net.interfaces.get_mut(name) else {
            return Err(DeviceError::host(
                format!("bring {name} up"),
                std::io::Error::from_raw_os_error(libc::ENODEV),
            ));
        };
        iface.up = true;
        iface.bridge = Some(bridge.to_owned());
        Ok(())
    }

    fn detach_interface(&self, name: &str) -> Result<(), DeviceError> {
        if let Some(iface) = self.net().interfaces.get_mut(name) {
            iface.up = false;
            iface.bridge = None;
        }
        Ok(())
    }

    fn vif_interfaces(&self) -> Vec<InterfaceInfo> {
        self.net()
            .interfaces
            .iter()
            .map(|(name, i)| InterfaceInfo {
                name: name.clone(),
                up: i.up,
                bridge: i.bridge.clone(),
            })
            .collect()
    }

    fn loop_devices(&self) -> Vec<(PathBuf, PathBuf)> {
        self.net()
            .loops
            .iter()
            .map(|(n, p)| (PathBuf::from(format!("/dev/loop{n}")), p.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_get_loop_devices_and_block_devices_do_not() {
        let d = SimDevices::new(false);
        let a = d.attach_disk(Path::new("/a.img"), false).unwrap();
        let b = d.attach_disk(Path::new("/b.img"), true).unwrap();
        assert_eq!(
            (a.node.to_str(), a.physical_device()),
            (Some("/dev/loop0"), "7:0".into())
        );
        assert_eq!(b.node, Path::new("/dev/loop1"));
        let blk = d.attach_disk(Path::new("/dev/vg/d"), false).unwrap();
        assert!(!blk.loop_device);
        assert_eq!(d.loop_devices().len(), 2);
        d.release_disk(Path::new("/a.img"), &a.node).unwrap();
        // Released once only; a number reused for another file is left alone.
        let c = d.attach_disk(Path::new("/c.img"), false).unwrap();
        assert_eq!(c.node, a.node);
        d.release_disk(Path::new("/a.img"), &a.node).unwrap();
        assert_eq!(d.loop_devices().len(), 2);
        assert!(d
            .attach_disk(Path::new("rel.img"), false)
            .unwrap_err()
            .is_config());
    }

    #[test]
    fn bridges_are_there_or_created_when_allowed() {
        let d = SimDevices::new(false);
        d.add_interface("vif1.0");
        d.attach_interface("vif1.0", "xenbr0").unwrap();
        assert_eq!(
            d.interface("vif1.0"),
            Some(Interface {
                up: true,
                bridge: Some("xenbr0".into())
            })
        );
        assert!(matches!(
            d.attach_interface("vif1.0", "br9"),
            Err(DeviceError::NoBridge(_))
        ));
        let d = SimDevices::new(true);
        d.add_interface("vif1.0");
        d.attach_interface("vif1.0", "br9").unwrap();
        assert!(d.bridge_exists("br9"));
        d.detach_interface("vif1.0").unwrap();
        assert_eq!(d.interface("vif1.0"), Some(Interface::default()));
        assert!(d.attach_interface("vif2.0", "br9").is_err());
    }
}
