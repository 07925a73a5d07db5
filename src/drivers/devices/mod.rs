//! The host side of guest devices: what xl's hotplug scripts (`block`,
//! `vif-bridge`) do in dom0 around blkback and netback.
//!
//! - a disk's backing: a block device is used as it is; a file goes
//!   through a loop device (read-only when the disk is), released again
//!   when the disk is unplugged or its domain dies;
//! - a NIC's interface: netback makes `vif<domid>.<devid>`; it is brought
//!   up and attached to the NIC's Linux bridge (created first when the
//!   configuration says so), and detached when it goes.
//!
//! Two backends, each hypervisor backend bringing its own
//! (`Hypervisor::devices`): [`linux::LinuxDevices`] (ioctls on
//! /dev/loop-control, /dev/loopN and an inet socket) on a Xen host, and
//! [`sim::SimDevices`], the simulated host's loop devices, interfaces and
//! bridges, which the simulated blkback and netback use too.
//! Every call may block: actors run them on tokio's blocking pool.

pub mod linux;
pub mod sim;

use std::path::{Path, PathBuf};

/// What went wrong setting up or tearing down a device's host side.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The disk's path names nothing usable (missing, not a file or block
    /// device): the VM's spec is at fault, not the host.
    #[error("disk {path}: {reason}")]
    BadDisk { path: PathBuf, reason: String },
    /// The NIC's bridge does not exist and xenith may not create it.
    #[error("bridge {0} does not exist (create it, or set network.create_bridges)")]
    NoBridge(String),
    /// A host call failed.
    #[error("{what}")]
    Host {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl DeviceError {
    pub(crate) fn host(what: impl Into<String>, source: std::io::Error) -> Self {
        DeviceError::Host {
            what: what.into(),
            source,
        }
    }

    /// Whether the VM's spec is at fault (a bad path, a missing bridge),
    /// rather than the host.
    pub fn is_config(&self) -> bool {
        matches!(self, DeviceError::BadDisk { .. } | DeviceError::NoBridge(_))
    }
}

/// A disk's backing, as blkback is told it (`physical-device` is
/// `major:minor` in hex, `physical-device-path` the node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskBacking {
    /// The block device blkback opens: the disk itself, or a loop device.
    pub node: PathBuf,
    pub major: u32,
    pub minor: u32,
    /// Whether xenith set up a loop device for it (and must release it).
    pub loop_device: bool,
}

impl DiskBacking {
    /// The `physical-device` value blkback parses ("%x:%x").
    pub fn physical_device(&self) -> String {
        format!("{:x}:{:x}", self.major, self.minor)
    }
}

/// The interface netback makes for a NIC.
pub fn vif_name(domid: crate::drivers::DomId, devid: u32) -> String {
    format!("vif{domid}.{devid}")
}

/// The host side of guest devices.
pub trait DeviceHost: Send + Sync + std::fmt::Debug {
    /// Makes `path` ready for blkback: a block device as it is, a regular
    /// file through a new loop device, read-only when `read_only`.
    fn attach_disk(&self, path: &Path, read_only: bool) -> Result<DiskBacking, DeviceError>;

    /// Releases the loop device `node` if it still backs `path` (a loop
    /// device blkback still holds is freed when blkback lets it go). Does
    /// nothing for a block device used as it is.
    fn release_disk(&self, path: &Path, node: &Path) -> Result<(), DeviceError>;

    /// Whether the network interface exists.
    fn interface_exists(&self, name: &str) -> bool;

    /// Brings `name` up and attaches it to `bridge`; a missing bridge is
    /// created (and brought up) when the configuration allows it.
    fn attach_interface(&self, name: &str, bridge: &str) -> Result<(), DeviceError>;

    /// Takes `name` off its bridge and down, if it still exists.
    fn detach_interface(&self, name: &str) -> Result<(), DeviceError>;

    /// The loop devices this host has bound, with their backing files
    /// (what `losetup -a` lists).
    fn loop_devices(&self) -> Vec<(PathBuf, PathBuf)>;

    /// netback's interfaces (`vif*`) as they are now.
    fn vif_interfaces(&self) -> Vec<InterfaceInfo>;
}

/// A guest's interface in dom0.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InterfaceInfo {
    pub name: String,
    pub up: bool,
    /// The bridge it is attached to.
    pub bridge: Option<String>,
}
