//! The VM operations of the API (`vm.*`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Api, ApiError, ErrorCode};
use crate::actors::agent::GuestMetrics;
use crate::actors::backend::XenbusState;
use crate::actors::domain::{PowerState, VmEnv, VmHandle, VmOp};
use crate::actors::emulator::{EmulatorActor, EmulatorStatus, Status, EMULATOR_ID};
use crate::actors::events::{EventClass, EventKind};
use crate::actors::supervisor::SupervisorHandle;
use crate::drivers::xenstore::XsClient;
use crate::vm::{VmRecord, VmSpecFile};

/// `vm.list` entries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmSummary {
    pub uuid: String,
    pub name: String,
    pub power_state: String,
    pub domid: Option<u16>,
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

fn summary(vm: &VmHandle) -> VmSummary {
    let s = vm.snapshot();
    VmSummary {
        uuid: s.uuid.to_string(),
        name: s.spec.name.clone(),
        power_state: s.power_state.name().to_owned(),
        domid: s.domid,
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::InternalError, e.to_string())
}

impl Api {
    pub(crate) async fn resolve(&self, key: &str) -> Result<VmHandle, ApiError> {
        self.inner
            .host
            .resolve(key)
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| {
                ApiError::new(ErrorCode::NotFound, format!("no VM {key:?}"))
                    .with_details(vec![key.to_owned()])
            })
    }

    fn domains(&self) -> Result<SupervisorHandle, ApiError> {
        self.inner
            .domains
            .get()
            .map(SupervisorHandle::from)
            .ok_or_else(|| internal("the domains supervisor is not running"))
    }

    pub(crate) fn xs(&self) -> Result<XsClient, ApiError> {
        self.inner
            .xs
            .get()
            .cloned()
            .ok_or_else(|| internal("xenstore is not connected yet"))
    }

    /// Starts a VM's supervisor (Halted, or reattached to its running domain).
    pub async fn adopt(&self, record: VmRecord) -> Result<VmHandle, ApiError> {
        self.prepare_image(&record);
        let env = VmEnv {
            driver: self.inner.driver.clone(),
            xs: self.xs()?,
            emulator: self.inner.settings.emulator.clone(),
            console: self.inner.settings.console.clone(),
            events: self.inner.settings.events.clone(),
            records: self.inner.records.clone(),
        };
        let (child, handle) = VmHandle::build(record, env);
        self.inner
            .host
            .register(handle.clone())
            .await
            .map_err(ApiError::internal)??;
        if let Err(e) = self.domains()?.start_child(child).await {
            let _ = self.inner.host.unregister(handle.uuid).await;
            return Err(ApiError::internal(e));
        }
        Ok(handle)
    }

    /// Gets the VM's boot image ready in the background (a Xen host caches
    /// its kernel decompressed), so that its first start does not wait.
    fn prepare_image(&self, record: &VmRecord) {
        let Some(kernel) = record.spec.kernel.clone() else {
            return;
        };
        let image = crate::drivers::BootImage {
            kernel,
            ramdisk: record.spec.ramdisk.clone(),
            cmdline: record.spec.cmdline.clone(),
        };
        let (driver, uuid) = (self.inner.driver.clone(), record.uuid);
        tokio::task::spawn_blocking(move || {
            if let Err(error) = driver.prepare_image(&image) {
                tracing::warn!(vm = %uuid, %error, "cannot prepare the boot image (the start will say why)");
            }
        });
    }

    /// Lets the driver drop, in the background, what it prepared for
    /// kernels no VM defined uses any more (a removed VM's, a kernel
    /// replaced since it was prepared).
    pub(crate) fn tidy_images(&self) {
        let (driver, records) = (self.inner.driver.clone(), self.inner.records.clone());
        tokio::task::spawn_blocking(move || {
            // Taken first: what is prepared for a VM defined meanwhile stays.
            let since = std::time::SystemTime::now();
            let kernels: Vec<std::path::PathBuf> = match records.load_all() {
                Ok(all) => all.into_iter().filter_map(|r| r.spec.kernel).collect(),
                Err(error) => {
                    tracing::warn!(%error, "cannot list the VMs: prepared boot images kept");
                    return;
                }
            };
            match driver.release_images(&kernels, since) {
                Ok(0) => {}
                Ok(removed) => tracing::info!(removed, "prepared boot images no VM uses removed"),
                Err(error) => tracing::warn!(%error, "cannot remove prepared boot images"),
            }
        });
    }

    /// `vm.create`.
    pub async fn vm_create(&self, file: VmSpecFile) -> Result<String, ApiError> {
        let uuid = uuid::Uuid::new_v4();
        let spec = file.validate(&uuid).map_err(|e| {
            ApiError::new(ErrorCode::InvalidParams, format!("spec.{e}"))
                .with_details(vec![format!("spec.{}", e.field)])
        })?;
        let record = VmRecord { uuid, spec };
        if let Some(existing) = self
            .inner
            .host
            .resolve(&record.spec.name)
            .await
            .map_err(ApiError::internal)?
        {
            return Err(ApiError::new(
                ErrorCode::AlreadyExists,
                format!("a VM named {} exists ({})", existing.name, existing.uuid),
            )
            .with_details(vec![existing.name]));
        }
        self.inner
            .records
            .save(&record)
            .map_err(ApiError::internal)?;
        match self.adopt(record).await {
            Ok(vm) => {
                let s = vm.snapshot();
                self.inner.settings.events.publish(
                    EventClass::Vm,
                    uuid.to_string(),
                    EventKind::Add,
                    || s.event_snapshot(&GuestMetrics::default()),
                );
            }
            Err(e) => {
                let _ = self.inner.records.remove(&uuid);
                return Err(e);
            }
        }
        Ok(uuid.to_string())
    }

    /// `vm.list`.
    pub async fn vm_list(&self) -> Result<Vec<VmSummary>, ApiError> {
        Ok(self
            .inner
            .host
            .vms()
            .await
            .map_err(ApiError::internal)?
            .iter()
            .map(summary)
            .collect())
    }

    /// `vm.get`.
    pub async fn vm_get(&self, key: &str) -> Result<VmInfo, ApiError> {
        let vm = self.resolve(key).await?;
        let s = vm.snapshot();
        // One snapshot: the devices listed are the spec's at that moment,
        // in the states their backend actors last set.
        let spec = s.spec.clone();
        let state_of = |kind: &str, name: &str| {
            let state = match s.domid {
                Some(_) => vm.device_state(kind, name),
                None => XenbusState::Unknown,
            };
            state.name().to_owned()
        };
        let vbds = spec
            .disks
            .iter()
            .map(|disk| DeviceInfo {
                device: disk.device.clone(),
                mac: None,
                state: state_of("vbd", &disk.device),
            })
            .collect();
        let vifs = spec
            .nics
            .iter()
            .map(|nic| {
                let device = nic.devid.to_string();
                DeviceInfo {
                    state: state_of("vif", &device),
                    device,
                    mac: Some(nic.mac.clone()),
                }
            })
            .collect();
        let guest = GuestInfo::from(vm.guest());
        let mut emulator = None;
        let hvm = spec.domain_type == crate::drivers::DomainType::Hvm;
        if let (true, Some(sup), Some(_)) = (hvm, vm.supervisor(), s.domid) {
            if let Ok(Some(addr)) = sup.child::<EmulatorActor>(EMULATOR_ID).await {
                emulator = addr.send(Status).await.ok().and_then(Result::ok);
            }
        }
        let ty = match spec.domain_type {
            crate::drivers::DomainType::Pv => "pv",
            crate::drivers::DomainType::Pvh => "pvh",
            crate::drivers::DomainType::Hvm => "hvm",
        };
        Ok(VmInfo {
            uuid: s.uuid.to_string(),
            name: spec.name.clone(),
            power_state: s.power_state.name().to_owned(),
            domid: s.domid,
            domain_type: ty.to_owned(),
            memory_mib: spec.memory_mib,
            vcpus: spec.vcpus,
            vbds,
            vifs,
            guest,
            operation: s.busy.map(str::to_owned),
            emulator,
        })
    }

    /// `vm.console`: the last `lines` lines of the VM's console (also of
    /// its last run, once it stopped).
    pub async fn vm_console(
        &self,
        key: &str,
        lines: Option<u64>,
        offset: Option<u64>,
    ) -> Result<ConsoleText, ApiError> {
        let lines = lines.unwrap_or(CONSOLE_LINES);
        if lines > MAX_CONSOLE_LINES {
            return Err(ApiError::new(
                ErrorCode::InvalidParams,
                format!("lines: {lines} is above {MAX_CONSOLE_LINES}"),
            )
            .with_details(vec!["lines".into()]));
        }
        let vm = self.resolve(key).await?;
        let console = self.inner.settings.console.clone();
        let (text, offset) = tokio::task::spawn_blocking(move || match offset {
            Some(offset) => console.since(&vm.uuid, offset),
            None => console.tail(&vm.uuid, lines as usize),
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| internal(format!("the console log: {e}")))?;
        Ok(ConsoleText { text, offset })
    }

    /// `vm.start`, `vm.shutdown`, `vm.reboot`, `vm.pause`, `vm.unpause`, `vm.kill`.
    pub async fn vm_op(&self, key: &str, op: VmOp) -> Result<VmSummary, ApiError> {
        let vm = self.resolve(key).await?;
        vm.op(op).await?;
        Ok(summary(&vm))
    }

    /// `vm.remove`: forgets a Halted VM.
    pub async fn vm_remove(&self, key: &str) -> Result<VmSummary, ApiError> {
        let vm = self.resolve(key).await?;
        let s = vm.snapshot();
        if s.power_state != PowerState::Halted {
            return Err(ApiError::new(
                ErrorCode::VmBadPowerState,
                format!("cannot remove a VM that is {}", s.power_state.name()),
            )
            .with_details(vec![
                vm.uuid.to_string(),
                "Halted".into(),
                s.power_state.name().into(),
            ]));
        }
        self.domains()?
            .remove_child(vm.uuid.to_string())
            .await
            .map_err(ApiError::internal)?;
        self.inner
            .records
            .remove(&vm.uuid)
            .map_err(ApiError::internal)?;
        self.tidy_images();
        if let Err(e) = self.inner.settings.console.remove(&vm.uuid) {
            tracing::warn!(vm = %vm.uuid, error = %e, "cannot remove the console log");
        }
        self.inner
            .host
            .unregister(vm.uuid)
            .await
            .map_err(ApiError::internal)?;
        let gone = VmSummary {
            power_state: "Halted".into(),
            ..summary(&vm)
        };
        self.inner.settings.events.publish(
            EventClass::Vm,
            vm.uuid.to_string(),
            EventKind::Del,
            || &gone,
        );
        Ok(gone)
    }
}

/// The default clean-shutdown wait, as seconds from the API.
pub fn shutdown_timeout(timeout_s: Option<u64>) -> Duration {
    timeout_s.map_or(crate::actors::domain::SHUTDOWN_TIMEOUT, Duration::from_secs)
}
