//! The VM calls of the API (`vm.*`, `vbd.*`, `vif.*`, `fault.inject`):
//! each goes to the inventory or to the VM's handle, and its answer is
//! shaped into the wire's types here.

use serde::{Deserialize, Serialize};

use super::{Api, ApiError, ErrorCode};
use crate::actors::agent::GuestMetrics;
use crate::actors::domain::{DeviceChange, FaultKind, VmHandle, VmOp, VmSnapshot};
use crate::actors::emulator::EmulatorStatus;
use crate::drivers::DomainType;
use crate::vm::VmSpecFile;
use crate::xs::DeviceKind;

/// `vm.list` entries (and what the power operations answer).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmSummary {
    pub uuid: String,
    pub name: String,
    pub power_state: String,
    pub domid: Option<u16>,
    /// What runs the VM: "sim" (the simulated hypervisor) or "xen" (an
    /// extension of the contract: no answer passes a simulated VM off as real).
    pub hypervisor: String,
    /// Why the VM halted, when it did while the operation waited for it (a
    /// clean shutdown that a kill pre-empted, a guest that crashed instead:
    /// an extension of the contract).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Another VM has this VM's name (two records gave one name): it is
    /// named by its uuid only (an extension of the contract).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub name_conflict: bool,
}

/// `vm.get`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmInfo {
    pub uuid: String,
    pub name: String,
    pub power_state: String,
    pub domid: Option<u16>,
    #[serde(rename = "type")]
    pub domain_type: String,
    pub memory_mib: u64,
    pub vcpus: u32,
    /// "sim" or "xen" (an extension of the contract).
    pub hypervisor: String,
    /// As in `vm.list` (an extension of the contract).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub name_conflict: bool,
    pub vbds: Vec<DeviceInfo>,
    pub vifs: Vec<DeviceInfo>,
    pub guest: GuestInfo,
    /// The operation under way on the VM, if any (an extension of the contract).
    pub operation: Option<String>,
    /// An HVM VM's running device model (an extension of the contract).
    #[serde(default)]
    pub emulator: Option<EmulatorStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub device: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub mac: Option<String>,
    /// A disk's VDI (its uuid), when the disk is one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub vdi: Option<String>,
    /// The xenbus state name of the backend.
    pub state: String,
}

/// `vm.get`'s guest: the contract's fields, then extensions.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GuestInfo {
    pub os_name: Option<String>,
    pub os_distro: Option<String>,
    /// "0/ipv4/0" → address, as the agent reports under attr/vif.
    pub ips: std::collections::BTreeMap<String, String>,
    pub agent: bool,
    #[serde(default)]
    pub os_version: Option<String>,
    #[serde(default)]
    pub os_uname: Option<String>,
    #[serde(default)]
    pub memory_total_kib: Option<u64>,
    #[serde(default)]
    pub memory_free_kib: Option<u64>,
}

impl From<GuestMetrics> for GuestInfo {
    fn from(m: GuestMetrics) -> Self {
        GuestInfo {
            os_name: m.os_name,
            os_distro: m.os_distro,
            ips: m.ips,
            agent: m.agent,
            os_version: m.os_version,
            os_uname: m.os_uname,
            memory_total_kib: m.memory_total_kib,
            memory_free_kib: m.memory_free_kib,
        }
    }
}

/// `vm.console`'s result: the text, and the offset just past it (give it
/// back as `offset` to get only what comes after: `--follow`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConsoleText {
    pub text: String,
    pub offset: u64,
}

/// The most console lines `vm.console` returns; the default is [`CONSOLE_LINES`].
pub const MAX_CONSOLE_LINES: u64 = 100_000;
/// How many console lines `vm.console` returns when not told.
pub const CONSOLE_LINES: u64 = 100;

fn type_name(t: DomainType) -> &'static str {
    match t {
        DomainType::Pv => "pv",
        DomainType::Pvh => "pvh",
        DomainType::Hvm => "hvm",
    }
}

impl Api {
    fn summary(&self, s: &VmSnapshot) -> VmSummary {
        VmSummary {
            uuid: s.uuid.to_string(),
            name: s.spec.name.clone(),
            power_state: s.power_state.name().to_owned(),
            domid: s.domid,
            hypervisor: self.inner.hypervisor.to_owned(),
            reason: None,
            name_conflict: false,
        }
    }

    async fn resolve(&self, key: &str) -> Result<VmHandle, ApiError> {
        Ok(self.inner.inventory.resolve(key).await?)
    }

    /// `vm.create`.
    pub async fn vm_create(&self, file: VmSpecFile) -> Result<String, ApiError> {
        Ok(self.inner.inventory.create(file).await?.to_string())
    }

    /// `vm.list`.
    pub async fn vm_list(&self) -> Result<Vec<VmSummary>, ApiError> {
        let vms = self.inner.inventory.list().await?;
        Ok(vms
            .iter()
            .map(|vm| VmSummary {
                name_conflict: vm.name_conflict(),
                ..self.summary(&vm.snapshot())
            })
            .collect())
    }

    /// `vm.get`.
    pub async fn vm_get(&self, key: &str) -> Result<VmInfo, ApiError> {
        let vm = self.resolve(key).await?;
        let name_conflict = vm.name_conflict();
        let d = vm.details().await;
        let s = &d.snapshot;
        let spec = &s.spec;
        let mut vbds = Vec::new();
        let mut vifs = Vec::new();
        for (kind, name, state) in d.devices {
            let state = state.name().to_owned();
            match kind {
                DeviceKind::Vbd => {
                    let vdi = spec
                        .disks
                        .iter()
                        .find(|d| d.device == name)
                        .and_then(|d| d.vdi.map(|v| v.to_string()));
                    vbds.push(DeviceInfo {
                        device: name,
                        mac: None,
                        vdi,
                        state,
                    })
                }
                DeviceKind::Vif => {
                    let mac = spec
                        .nics
                        .iter()
                        .find(|n| n.devid.to_string() == name)
                        .map(|n| n.mac.clone());
                    vifs.push(DeviceInfo {
                        device: name,
                        mac,
                        vdi: None,
                        state,
                    })
                }
            }
        }
        Ok(VmInfo {
            uuid: s.uuid.to_string(),
            name: spec.name.clone(),
            power_state: s.power_state.name().to_owned(),
            domid: s.domid,
            domain_type: type_name(spec.domain_type).to_owned(),
            memory_mib: spec.memory_mib,
            vcpus: spec.vcpus,
            hypervisor: self.inner.hypervisor.to_owned(),
            name_conflict,
            vbds,
            vifs,
            guest: GuestInfo::from(d.guest),
            operation: s.busy.map(str::to_owned),
            emulator: d.emulator,
        })
    }

    /// `vm.console`: the last `lines` lines of the VM's console (also of
    /// its last run, once it stopped), or what came after `offset`.
    pub async fn vm_console(
        &self,
        key: &str,
        lines: Option<u64>,
        offset: Option<u64>,
    ) -> Result<ConsoleText, ApiError> {
        let lines = lines.unwrap_or(CONSOLE_LINES);
        let Some(count) = usize::try_from(lines)
            .ok()
            .filter(|_| lines <= MAX_CONSOLE_LINES)
        else {
            return Err(ApiError::new(
                ErrorCode::InvalidParams,
                format!("lines: {lines} is above {MAX_CONSOLE_LINES}"),
            )
            .with_details(vec!["lines".into()]));
        };
        let (text, offset) = self.resolve(key).await?.console(count, offset).await?;
        Ok(ConsoleText { text, offset })
    }

    /// `vm.start`, `vm.shutdown`, `vm.reboot`, `vm.pause`, `vm.unpause`,
    /// `vm.kill`, `vm.set_memory_target`.
    pub async fn vm_op(&self, key: &str, op: VmOp) -> Result<VmSummary, ApiError> {
        let vm = self.resolve(key).await?;
        let reply = vm.op(op).await?;
        let reason = match reply {
            crate::actors::domain::OpReply::Halted(why) => Some(why),
            _ => None,
        };
        Ok(VmSummary {
            reason,
            ..self.summary(&vm.snapshot())
        })
    }

    /// `vm.suspend`: the VM's memory into its image; Suspended.
    pub async fn vm_suspend(
        &self,
        key: &str,
        timeout: std::time::Duration,
        job: crate::drivers::storage::Job,
    ) -> Result<VmSummary, ApiError> {
        let vm = self.resolve(key).await?;
        vm.suspend(timeout, job).await?;
        Ok(self.summary(&vm.snapshot()))
    }

    /// `vm.resume`: Running (or Paused) again from its image.
    pub async fn vm_resume(&self, key: &str, paused: bool) -> Result<VmSummary, ApiError> {
        let vm = self.resolve(key).await?;
        vm.resume(paused).await?;
        Ok(self.summary(&vm.snapshot()))
    }

    /// `vm.remove`: forgets a Halted VM.
    pub async fn vm_remove(&self, key: &str) -> Result<VmSummary, ApiError> {
        let last = self.inner.inventory.remove(key).await?;
        Ok(VmSummary {
            power_state: "Halted".into(),
            ..self.summary(&last)
        })
    }

    /// `vbd.plug`, `vbd.unplug`, `vif.plug`, `vif.unplug`: the VM's uuid
    /// and the device's name.
    pub async fn vm_device(
        &self,
        key: &str,
        change: DeviceChange,
    ) -> Result<(String, String), ApiError> {
        let (uuid, device) = self.inner.inventory.reconfigure(key, change).await?;
        Ok((uuid.to_string(), device))
    }

    /// `fault.inject {vm, part, kind}` (only with --allow-fault-injection).
    pub async fn fault_inject(
        &self,
        key: &str,
        part: &str,
        kind: FaultKind,
    ) -> Result<(), ApiError> {
        if !self.inner.allow_faults {
            return Err(ApiError::new(
                ErrorCode::NotAllowed,
                "fault injection is off (start xenithd with --allow-fault-injection)",
            ));
        }
        Ok(self.resolve(key).await?.inject(part, kind).await?)
    }
}

/// The longest a clean shutdown may wait for the guest (`timeout_s`).
pub const MAX_SHUTDOWN_TIMEOUT_S: u64 = 3600;

/// The clean-shutdown wait, from the API's seconds (at most an hour).
pub fn shutdown_timeout(timeout_s: Option<u64>) -> Result<std::time::Duration, ApiError> {
    match timeout_s {
        None => Ok(super::SHUTDOWN_TIMEOUT),
        Some(s) if s <= MAX_SHUTDOWN_TIMEOUT_S => Ok(std::time::Duration::from_secs(s)),
        Some(s) => Err(ApiError::new(
            ErrorCode::InvalidParams,
            format!("timeout_s: {s} is above {MAX_SHUTDOWN_TIMEOUT_S} (an hour)"),
        )
        .with_details(vec!["timeout_s".into()])),
    }
}

/// A suspend's wait for the guest (`timeout_s`; 60 s when not given, 1 s
/// at least, an hour at most).
pub fn suspend_timeout(timeout_s: Option<u64>) -> Result<std::time::Duration, ApiError> {
    match timeout_s {
        None => Ok(crate::actors::domain::SUSPEND_TIMEOUT),
        Some(s) if (1..=MAX_SHUTDOWN_TIMEOUT_S).contains(&s) => {
            Ok(std::time::Duration::from_secs(s))
        }
        Some(s) => Err(ApiError::new(
            ErrorCode::InvalidParams,
            format!("timeout_s: {s} is outside 1..={MAX_SHUTDOWN_TIMEOUT_S}"),
        )
        .with_details(vec!["timeout_s".into()])),
    }
}
