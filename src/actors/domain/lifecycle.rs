//! The steps of a VM's life, as async functions the domain actor runs one
//! at a time: start (create, write the libxl layout, build, introduce,
//! plug devices, unpause) and teardown (unplug, destroy, release, remove
//! the trees). Blocking hypervisor calls run on the blocking pool. Every
//! step has a timeout and its failure names the step.

use std::sync::Arc;
use std::time::Duration;

use crate::actors::backend::{BackendActor, DeviceSpec};
use crate::actors::supervisor::SupervisorHandle;
use crate::api::{ApiError, ErrorCode};
use crate::drivers::xenstore::XsClient;
use crate::drivers::{
    BootImage, Built, DomId, DomainConfig, DomainType, Hypervisor, HypervisorError,
};
use crate::vm::layout::{self, Entry};
use crate::vm::VmSpec;

/// How long one step may take.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// A step failed (or took too long): the error names it.
pub fn step_error(step: &str, error: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::InternalError, format!("{step}: {error}"))
}

/// Runs a future with the step timeout; OPERATION_TIMEOUT names the step.
pub async fn timed<T>(
    step: &str,
    fut: impl std::future::Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    match tokio::time::timeout(STEP_TIMEOUT, fut).await {
        Ok(r) => r,
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

/// A VM's devices as backend specs (the hotplug step as the simulated host
/// records it; the real one is the Xen devices work).
pub fn devices(domid: DomId, spec: &VmSpec) -> Vec<DeviceSpec> {
    let pv = spec.domain_type == DomainType::Pv;
    let mut out = Vec::new();
    for (i, disk) in spec.disks.iter().enumerate() {
        out.push(DeviceSpec {
            kind: "vbd",
            name: disk.device.clone(),
            trees: layout::vbd(domid, disk, pv),
            hotplug: vec![
                ("physical-device".into(), format!("fd:{:x}", i)),
                (
                    "physical-device-path".into(),
                    disk.path.display().to_string(),
                ),
                ("hotplug-status".into(), "connected".into()),
            ],
        });
    }
    for nic in &spec.nics {
        out.push(DeviceSpec {
            kind: "vif",
            name: nic.devid.to_string(),
            trees: layout::vif(domid, nic),
            hotplug: vec![("hotplug-status".into(), "connected".into())],
        });
    }
    out
}

/// What a started domain needs to be torn down.
#[derive(Debug, Clone)]
pub struct Running {
    pub domid: DomId,
    pub device_ids: Vec<String>,
}

/// Everything the start and teardown steps use.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub uuid: uuid::Uuid,
    pub spec: VmSpec,
    pub driver: Arc<dyn Hypervisor>,
    pub xs: XsClient,
    /// The VM's own supervisor (device backends are its children).
    pub vm_sup: SupervisorHandle,
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
    for device in devices(domid, &c.spec) {
        let id = format!("{}:{}", device.kind, device.name);
        let spec = BackendActor::spec(device, c.xs.clone());
        timed("plug a device", async {
            c.vm_sup
                .start_child(spec)
                .await
                .map_err(|e| step_error(&format!("plug {id}"), crate::error::chain(&e)))
        })
        .await?;
        running.device_ids.push(id);
    }
    if !paused {
        hv("unpause the domain", &c.driver, move |h| h.unpause(domid)).await?;
    }
    Ok(())
}

/// Tears the VM's domain down: device actors stopped, the domain destroyed
/// and released from xenstore, its trees removed. Best effort: each step
/// is tried whatever the previous one did.
pub async fn teardown(c: &Ctx, running: &Running) {
    let domid = running.domid;
    for id in &running.device_ids {
        let _ = c.vm_sup.remove_child(id.clone()).await;
    }
    if let Err(e) = hv("destroy the domain", &c.driver, move |h| h.destroy(domid)).await {
        tracing::debug!(vm = %c.uuid, %domid, error = %e, "destroy");
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
    for path in trees {
        if let Err(e) = c.xs.rm(&path).await {
            tracing::debug!(vm = %c.uuid, %path, error = %e, "remove tree");
        }
    }
}
