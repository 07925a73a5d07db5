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

/// Adds a VM to the inventory; its name must be free.
#[derive(Debug)]
pub struct RegisterVm(pub crate::actors::domain::VmHandle);

impl Message for RegisterVm {
    type Result = Result<(), crate::api::ApiError>;
}

/// Forgets a VM.
#[derive(Debug)]
pub struct UnregisterVm(pub uuid::Uuid);

impl Message for UnregisterVm {
    type Result = ();
}

/// A VM by uuid or name.
#[derive(Debug)]
pub struct ResolveVm(pub String);

impl Message for ResolveVm {
    type Result = Option<crate::actors::domain::VmHandle>;
}

/// Every VM, by name.
#[derive(Debug)]
pub struct ListVms;

impl Message for ListVms {
    type Result = Vec<crate::actors::domain::VmHandle>;
}
