//! The steps of a VM's life, as async functions the domain actor runs one
//! at a time: start (create, write the libxl layout, build, introduce,
//! plug devices, unpause) and teardown (unplug, destroy, release, remove
//! the trees). Blocking hypervisor calls run on the blocking pool. Every
//! step has a timeout and its failure names the step.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::actors::agent::{AgentActor, GuestMetrics};
use crate::actors::backend::{
    BackendActor, DeviceEvents, DeviceSpec, DeviceStates, Hotplug, Release, XenbusState,
};
use crate::actors::console::{ConsoleActor, ConsoleConfig};
use crate::actors::emulator::{EmulatorActor, Quit, EMULATOR_ID};
use crate::actors::events::{EventBus, EventKind};
use crate::actors::supervisor::{ChildSpec, SupervisorError, SupervisorHandle};
use crate::api::{ApiError, ErrorCode};
use crate::drivers::emulator::{DmLaunch, EmulatorConfig};
use crate::drivers::xenstore::XsClient;
use crate::drivers::{
    BootImage, Built, DomId, DomainConfig, DomainType, Hypervisor, HypervisorError,
};
use crate::vm::layout::{self, Entry};
use crate::vm::{RecordStore, VmSpec};

/// How long one step may take.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// A step failed (or took too long): the error names it.
pub fn step_error(step: &str, error: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::InternalError, format!("{step}: {error}"))
}

/// A child that did not start: INVALID_PARAMS (detail `spec`) when its
/// configuration is at fault (a disk that does not exist, a bridge that is
/// missing), else INTERNAL_ERROR; both name the step.
pub fn child_error(step: &str, error: SupervisorError) -> ApiError {
    match &error {
        SupervisorError::StartFailed { source, .. } if source.is_config() => ApiError::new(
            ErrorCode::InvalidParams,
            format!("{step}: the VM's spec does not fit this host: {source}"),
        )
        .with_details(vec!["spec".into()]),
        _ => step_error(step, crate::error::chain(&error)),
    }
}

/// Runs a future with the step timeout; OPERATION_TIMEOUT names the step.
pub async fn timed<T>(
    step: &str,
    fut: impl std::future::Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    let t0 = std::time::Instant::now();
    match tokio::time::timeout(STEP_TIMEOUT, fut).await {
        Ok(r) => {
            tracing::debug!(
                step,
                elapsed_ms = t0.elapsed().as_millis() as u64,
                "step done"
            );
            r
        }
        Err(_) => Err(ApiError::new(
            ErrorCode::OperationTimeout,
            format!("{step} did not finish within {STEP_TIMEOUT:?}"),
        )
        .with_details(vec![step.to_owned()])),
    }
}

/// A hypervisor call on the blocking pool, with the step timeout.
pub async fn hv<T: Send + 'static>(
    step: &'static str,
    driver: &Arc<dyn Hypervisor>,
    call: impl FnOnce(&dyn Hypervisor) -> Result<T, HypervisorError> + Send + 'static,
) -> Result<T, ApiError> {
    let driver = driver.clone();
    timed(step, async move {
        match tokio::task::spawn_blocking(move || call(driver.as_ref())).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(HypervisorError::NotEnoughMemory {
                needed_mib,
                free_mib,
            })) => Err(ApiError::new(
                ErrorCode::HostNotEnoughFreeMemory,
                format!("{needed_mib} MiB needed, {free_mib} MiB free"),
            )
            .with_details(vec![needed_mib.to_string(), free_mib.to_string()])),
            // The spec asks for what this host cannot run (a PVH guest
            // on Xen without HAP, a kernel it cannot read...).
            Ok(Err(HypervisorError::InvalidConfig(why))) => Err(ApiError::new(
                ErrorCode::InvalidParams,
                format!("{step}: the VM's spec does not fit this host: {why}"),
            )
            .with_details(vec!["spec".into()])),
            Ok(Err(e)) => Err(step_error(step, crate::error::chain(&e))),
            Err(e) => Err(step_error(step, e)),
        }
    })
    .await
}

/// Writes entries (value, then explicit perms) in one transaction.
pub async fn write_entries(
    step: &'static str,
    xs: &XsClient,
    entries: Vec<Entry>,
) -> Result<(), ApiError> {
    timed(step, async {
        layout::apply(xs, &entries)
            .await
            .map_err(|e| step_error(step, e))
    })
    .await
}

/// A VM's devices as backend specs: each disk's backing and each NIC's
/// interface (`vifD.N`, which netback makes) and bridge.
pub fn devices(domid: DomId, spec: &VmSpec) -> Vec<DeviceSpec> {
    let pv = spec.domain_type == DomainType::Pv;
    let mut out = Vec::new();
    for disk in &spec.disks {
        out.push(DeviceSpec {
            kind: "vbd",
            name: disk.device.clone(),
            trees: layout::vbd(domid, disk, pv),
            hotplug: Hotplug::Disk {
                path: disk.path.clone(),
                read_only: disk.mode == crate::vm::DiskMode::Ro,
            },
        });
    }
    for nic in &spec.nics {
        out.push(DeviceSpec {
            kind: "vif",
            name: nic.devid.to_string(),
            trees: layout::vif(domid, nic),
            hotplug: Hotplug::Nic {
                interface: crate::drivers::devices::vif_name(domid, nic.devid),
                bridge: nic.bridge.clone(),
            },
        });
    }
    out
}

/// One device of `spec` ("vbd", "xvdb"), if it has it.
pub fn device_spec(domid: DomId, spec: &VmSpec, kind: &str, name: &str) -> Option<DeviceSpec> {
    devices(domid, spec)
        .into_iter()
        .find(|d| d.kind == kind && d.name == name)
}

/// What a started domain needs to be torn down.
#[derive(Debug, Clone)]
pub struct Running {
    pub domid: DomId,
    /// The VM supervisor's children for this domain, in start order.
    pub device_ids: Vec<String>,
}

/// The actors a running domain has under its VM's supervisor, in start
/// order: its console, a backend per VBD and VIF, its guest-agent channel
/// and, for HVM, its emulator. `fresh` is false when re-syncing onto a
/// running domain: an emulator is then only reattached, never launched.
pub fn child_specs(c: &Ctx, domid: DomId, fresh: bool) -> Vec<ChildSpec> {
    let mut specs = vec![ConsoleActor::spec(
        domid,
        c.uuid,
        c.spec.name.clone(),
        c.driver.clone(),
        c.console.clone(),
    )];
    for device in devices(domid, &c.spec) {
        specs.push(c.backend_child(domid, device));
    }
    let nics = c.spec.nics.iter().map(|n| n.devid).collect();
    specs.push(AgentActor::spec(domid, nics, c.xs.clone(), c.guest.clone()));
    if c.spec.domain_type == DomainType::Hvm {
        let launch = DmLaunch {
            domid,
            uuid: c.uuid,
            name: c.spec.name.clone(),
        };
        specs.push(EmulatorActor::spec(
            launch,
            c.emulator.clone(),
            c.driver.clone(),
            c.xs.clone(),
            fresh,
        ));
    }
    specs
}

/// Re-sync after the domain actor (or the VM's supervisor) restarted onto a
/// running domain: starts whichever of its actors are not running (each
/// re-syncs from xenstore, the console ring or its QMP socket).
pub async fn ensure_children(c: &Ctx, domid: DomId) {
    for spec in child_specs(c, domid, false) {
        let id = spec.id().to_owned();
        match c.vm_sup.start_child(spec).await {
            Ok(()) => {
                tracing::info!(vm = %c.uuid, %domid, child = %id, "restarted with the domain running")
            }
            Err(SupervisorError::AlreadyExists(_)) => {}
            Err(e) => {
                tracing::warn!(vm = %c.uuid, %domid, child = %id, error = %crate::error::chain(&e), "cannot restart")
            }
        }
    }
}

/// Everything the start and teardown steps use.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub uuid: uuid::Uuid,
    /// The VM's spec as it is now (device hotplug changes it).
    pub spec: Arc<VmSpec>,
    pub driver: Arc<dyn Hypervisor>,
    pub xs: XsClient,
    /// The VM's own supervisor (device backends are its children).
    pub vm_sup: SupervisorHandle,
    pub emulator: Arc<EmulatorConfig>,
    pub console: Arc<ConsoleConfig>,
    /// The guest agent's metrics, kept by the agent actor.
    pub guest: Arc<watch::Sender<GuestMetrics>>,
    /// The devices' states, kept by their backend actors.
    pub device_states: DeviceStates,
    pub events: EventBus,
    /// Where the VM's record is kept (device hotplug saves it).
    pub records: RecordStore,
}

impl Ctx {
    /// The backend actor spec of one device of `spec` ("vbd", "xvdb").
    pub fn device_child(
        &self,
        domid: DomId,
        spec: &VmSpec,
        kind: &str,
        name: &str,
    ) -> Option<ChildSpec> {
        Some(self.backend_child(domid, device_spec(domid, spec, kind, name)?))
    }

    /// A device's backend actor, publishing its state changes.
    fn backend_child(&self, domid: DomId, device: DeviceSpec) -> ChildSpec {
        BackendActor::spec_with_events(
            device,
            self.xs.clone(),
            self.driver.devices(),
            Some(self.device_events(domid)),
        )
    }

    fn device_events(&self, domid: DomId) -> DeviceEvents {
        DeviceEvents {
            bus: self.events.clone(),
            vm: self.uuid,
            domid,
            states: self.device_states.clone(),
        }
    }

    /// Publishes a device's plug (add) or removal (del), by its child id.
    pub fn tell_device(&self, domid: DomId, child_id: &str, what: EventKind, state: XenbusState) {
        if let Some((kind, name)) = child_id.split_once(':') {
            self.device_events(domid).tell(kind, name, what, state);
        }
    }
}

/// Starts the VM: on any failure, undoes what was done and returns the error.
pub async fn start(c: &Ctx, paused: bool) -> Result<Running, ApiError> {
    let config = DomainConfig {
        uuid: *c.uuid.as_bytes(),
        domain_type: c.spec.domain_type,
        memory_mib: c.spec.memory_mib,
        vcpus: c.spec.vcpus,
    };
    let domid = hv("create the domain", &c.driver, move |h| {
        h.create_domain(&config)
    })
    .await?;
    let mut running = Running {
        domid,
        device_ids: Vec::new(),
    };
    match start_steps(c, &mut running, paused).await {
        Ok(()) => Ok(running),
        Err(e) => {
            tracing::warn!(vm = %c.uuid, %domid, error = %e, "start failed; undoing");
            teardown(c, &running).await;
            Err(e)
        }
    }
}

async fn start_steps(c: &Ctx, running: &mut Running, paused: bool) -> Result<(), ApiError> {
    let domid = running.domid;
    write_entries(
        "write the domain's xenstore tree",
        &c.xs,
        layout::domain_make(&c.uuid, domid, &c.spec),
    )
    .await?;
    let image = BootImage {
        kernel: c
            .spec
            .kernel
            .clone()
            .unwrap_or_else(|| "/usr/lib/xen/boot/hvmloader".into()),
        ramdisk: c.spec.ramdisk.clone(),
        cmdline: c.spec.cmdline.clone(),
    };
    let built: Built = hv("build the domain", &c.driver, move |h| {
        h.build_domain(domid, &image)
    })
    .await?;
    let mut post = layout::build_post(
        &c.uuid,
        domid,
        &c.spec,
        &built,
        std::time::SystemTime::now(),
    );
    post.extend(layout::console(domid, &built));
    write_entries("write the build keys", &c.xs, post).await?;
    timed("introduce the domain to xenstore", async {
        c.xs.introduce(u32::from(domid.0), built.store_gfn, built.store_port)
            .await
            .map_err(|e| step_error("introduce", e))
    })
    .await?;
    for spec in child_specs(c, domid, true) {
        let id = spec.id().to_owned();
        let step = if id == EMULATOR_ID {
            "start the device model"
        } else {
            "plug a device"
        };
        timed(step, async {
            c.vm_sup
                .start_child(spec)
                .await
                .map_err(|e| child_error(&format!("start {id}"), e))
        })
        .await?;
        c.tell_device(domid, &id, EventKind::Add, XenbusState::InitWait);
        running.device_ids.push(id);
    }
    if !paused {
        hv("unpause the domain", &c.driver, move |h| h.unpause(domid)).await?;
    }
    Ok(())
}

/// A device of a domain that is going: its actor releases it (trees
/// removed, loop device freed, interface gone), or, when the actor is not
/// there, this does.
async fn release_device(c: &Ctx, id: &str, device: &DeviceSpec) {
    let released = match c.vm_sup.child::<BackendActor>(id).await {
        Ok(Some(addr)) => addr.send(Release).await.ok(),
        _ => None,
    };
    let result = match released {
        Some(r) => r,
        None => crate::actors::backend::release_orphan(&c.xs, &c.driver.devices(), device)
            .await
            .map_err(|e| crate::error::chain(&e)),
    };
    if let Err(error) = result {
        tracing::warn!(vm = %c.uuid, device = %id, %error, "device release");
    }
}

/// Tears the VM's domain down: device actors stopped, the domain destroyed
/// and released from xenstore, its trees removed. Best effort: each step
/// is tried whatever the previous one did.
pub async fn teardown(c: &Ctx, running: &Running) {
    let domid = running.domid;
    // In reverse start order; the device model is asked to quit first.
    let specs = devices(domid, &c.spec);
    for id in running.device_ids.iter().rev() {
        if id == EMULATOR_ID {
            if let Ok(Some(addr)) = c.vm_sup.child::<EmulatorActor>(EMULATOR_ID).await {
                let _ = addr.send(Quit).await;
            }
        }
        if let Some(device) = specs.iter().find(|d| *id == d.child_id()) {
            release_device(c, id, device).await;
        }
        let _ = c.vm_sup.remove_child(id.clone()).await;
        c.tell_device(domid, id, EventKind::Del, XenbusState::Closed);
    }
    c.guest.send_replace(GuestMetrics::default());
    if let Err(e) = hv("destroy the domain", &c.driver, move |h| h.destroy(domid)).await {
        tracing::debug!(vm = %c.uuid, %domid, error = %e, "destroy");
    }
    if c.spec.domain_type == DomainType::Hvm {
        // Whatever is left of the device model (it died, or did not quit).
        let emulator = c.emulator.clone();
        let _ = tokio::task::spawn_blocking(move || emulator.kill(domid)).await;
    }
    let _ = c.xs.release(u32::from(domid.0)).await;
    let n = domid.0;
    let mut trees = vec![
        layout::home(domid),
        layout::vm_path(&c.uuid),
        format!("/libxl/{n}"),
    ];
    for kind in ["vbd", "vif", "console"] {
        trees.push(format!("/local/domain/0/backend/{kind}/{n}"));
    }
    trees.push(format!("/local/domain/0/device-model/{n}"));
    for path in trees {
        if let Err(e) = c.xs.rm(&path).await {
            tracing::debug!(vm = %c.uuid, %path, error = %e, "remove tree");
        }
    }
}
