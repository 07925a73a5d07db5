//! Messages the host actor answers.

use actix::Message;
use serde::Serialize;

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
}
