//! Messages the host actor answers.

use std::path::PathBuf;

use actix::Message;
use serde::Serialize;

use super::HostError;
use crate::drivers::devices::InterfaceInfo;

/// `host.info`.
#[derive(Debug)]
pub struct GetHostInfo;

impl Message for GetHostInfo {
    type Result = HostInfo;
}

/// The host as `host.info` reports it (CONTRACT.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct HostInfo {
    pub hostname: String,
    /// "sim" or "xen".
    pub hypervisor: String,
    pub xen_version: String,
    pub total_mib: u64,
    pub free_mib: u64,
    pub cpus: u32,
    /// VMs xenith knows of.
    pub vms: u64,
    /// The toolstack's xenstore connection: whether it is up, and how many
    /// times it was established again (an extension of the contract).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xenstore: Option<crate::drivers::xenstore::XsLink>,
}

/// `host.devices`: what the host holds for guests' devices.
#[derive(Debug)]
pub struct GetHostDevices;

/// The loop devices bound (each with its backing file) and netback's
/// interfaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostDevices {
    pub loop_devices: Vec<(PathBuf, PathBuf)>,
    pub interfaces: Vec<InterfaceInfo>,
}

impl Message for GetHostDevices {
    type Result = Result<HostDevices, HostError>;
}
