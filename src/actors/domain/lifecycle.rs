//! The steps of a VM's life, as async functions the domain actor runs one
//! at a time: start (create, write the libxl layout, build, introduce,
//! plug devices, unpause) and teardown (unplug, destroy, release, remove
//! the trees), and the one plug and one unplug step a device goes through
//! at a start, a hotplug, an unplug or a teardown. Hypervisor calls go
//! through the async adapter; every step has a timeout and its failure
//! names the step.

use std::time::Duration;

use crate::actors::agent::{AgentActor, GuestMetrics};
use crate::actors::backend::{
    release_orphan, BackendActor, BackendError, BackendHandle, DeviceSpec, Hotplug,
};
use crate::actors::child::ChildId;
use crate::actors::console::ConsoleActor;
use crate::actors::emulator::{EmulatorActor, EmulatorHandle};
use crate::actors::events::EventKind;
use crate::actors::supervisor::{ChildSpec, SupervisorError};
use crate::drivers::emulator::{emulated_nic_tap, DmKind, DmLaunch, EmulatedNic, HvmMachine};
use crate::drivers::{BootImage, Built, DomId, DomainConfig, DomainType, HypervisorKind};
use crate::vm::layout::{self, Entry};
use crate::vm::{VbdBackend, VmSpec};
use crate::xs::{DeviceKind, XenbusState};

use super::env::Ctx;
use super::error::VmError;

/// How long one step may take.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a device plugged into a running guest may take to connect.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where an HVM guest boots from when its spec names no kernel.
const HVMLOADER: &str = "/usr/lib/xen/boot/hvmloader";

/// Runs a future with the step timeout; a timeout names the step.
pub async fn timed<T>(
    step: &str,
    fut: impl std::future::Future<Output = Result<T, VmError>>,
) -> Result<T, VmError> {
    match tokio::time::timeout(STEP_TIMEOUT, measured(step, fut)).await {
        Ok(r) => r,
        Err(_) => Err(VmError::StepTimeout {
            step: step.to_owned(),
            after: STEP_TIMEOUT,
        }),
    }
}

/// Runs a future and logs how long it took (`step done`, at debug level,
/// in the VM's span: the bed's breakdown of a start reads these lines).
/// Without a timeout, for the steps whose work cannot be abandoned midway
/// (a domain half made by a hypercall the timeout gave up on would leak).
pub async fn measured<T, E>(
    step: &str,
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let t0 = std::time::Instant::now();
    let r = fut.await;
    tracing::debug!(step, elapsed_ms = millis(t0), ok = r.is_ok(), "step done");
    r
}

fn millis(t0: std::time::Instant) -> u64 {
    u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Writes entries (value, then explicit perms) in one transaction.
async fn write_entries(step: &'static str, c: &Ctx, entries: Vec<Entry>) -> Result<(), VmError> {
    timed(step, async {
        layout::apply(&c.env.xs, &entries)
            .await
            .map_err(|e| VmError::step(step, &e))
    })
    .await
}

/// A VM's devices as backend specs: each disk's backing and each NIC's
/// interface (`vifD.N`, which netback makes) and bridge.
pub fn devices(domid: DomId, spec: &VmSpec, host: HypervisorKind) -> Vec<DeviceSpec> {
    let pv = spec.domain_type == DomainType::Pv;
    let disks = spec.disks.iter().map(|disk| {
        let backend = disk.backend(host);
        DeviceSpec {
            kind: DeviceKind::Vbd,
            name: disk.device.clone(),
            trees: layout::vbd(domid, disk, pv, backend),
            hotplug: match backend {
                VbdBackend::Blkback => Hotplug::Disk {
                    path: disk.path.clone(),
                    read_only: disk.mode == crate::vm::DiskMode::Ro,
                },
                VbdBackend::Qdisk => Hotplug::Qdisk,
            },
        }
    });
    let nics = spec.nics.iter().map(|nic| DeviceSpec {
        kind: DeviceKind::Vif,
        name: nic.devid.to_string(),
        trees: layout::vif(domid, nic),
        hotplug: Hotplug::Nic {
            interface: crate::drivers::devices::vif_name(domid, nic.devid),
            bridge: nic.bridge.clone(),
        },
    });
    disks.chain(nics).collect()
}

/// One device of `spec`, if it has it.
pub fn device_spec(
    domid: DomId,
    spec: &VmSpec,
    host: HypervisorKind,
    kind: DeviceKind,
    name: &str,
) -> Option<DeviceSpec> {
    devices(domid, spec, host)
        .into_iter()
        .find(|d| d.kind == kind && d.name == name)
}

/// What a started domain needs to be torn down.
#[derive(Debug, Clone)]
pub struct Running {
    pub domid: DomId,
    /// The VM supervisor's children for this domain, in start order.
    pub children: Vec<ChildId>,
}

/// A device's backend actor, publishing its state changes.
fn backend_child(c: &Ctx, domid: DomId, device: DeviceSpec) -> ChildSpec {
    BackendActor::spec_with_events(
        device,
        c.env.xs.clone(),
        c.env.devices.clone(),
        Some(c.device_events(domid)),
    )
}

/// What QEMU is to a VM with `spec` on `host`, if it needs one: an HVM
/// guest's device model, or the qdisk backend of a PV/PVH guest's qcow2
/// disks on Xen.
pub fn dm_kind(spec: &VmSpec, host: HypervisorKind) -> Option<DmKind> {
    if spec.domain_type == DomainType::Hvm {
        Some(DmKind::Hvm)
    } else if spec
        .disks
        .iter()
        .any(|d| d.backend(host) == VbdBackend::Qdisk)
    {
        Some(DmKind::Qdisk)
    } else {
        None
    }
}

/// What an HVM guest's QEMU emulates: its vCPUs, its kernel if it names
/// one (QEMU boots it directly), its first four disks as IDE disks (raw
/// or qcow2 through QEMU's block layer; the PV backends serve the same
/// disks once the guest's PV drivers unplug these), its serial line into
/// the log its console reads.
fn hvm_machine(c: &Ctx, domid: DomId) -> HvmMachine {
    let s = &c.spec;
    let ide = s
        .disks
        .iter()
        .filter_map(|d| Some((d.ide_unit()?, d.path.clone(), d.format.as_str())))
        .collect();
    let xen = c.env.hv.kind() == HypervisorKind::Xen;
    HvmMachine {
        nics: s
            .nics
            .iter()
            .filter(|_| xen)
            .map(|n| EmulatedNic {
                devid: n.devid,
                mac: n.mac.clone(),
                tap: emulated_nic_tap(domid, n.devid),
                bridge: n.bridge.clone(),
            })
            .collect(),
        vcpus: s.vcpus,
        kernel: s.kernel.clone(),
        ramdisk: s.ramdisk.clone(),
        cmdline: s.cmdline.clone(),
        ide,
        serial_log: xen.then(|| crate::drivers::xen::serial_log(&s.name)),
    }
}

/// The emulator actor of a VM whose QEMU is `kind`.
fn emulator_child(c: &Ctx, domid: DomId, kind: DmKind, fresh: bool) -> ChildSpec {
    let launch = DmLaunch {
        domid,
        uuid: c.uuid,
        name: c.spec.name.clone(),
        kind,
        memory_mib: c.spec.memory_mib,
        hvm: hvm_machine(c, domid),
    };
    EmulatorActor::spec(
        launch,
        c.env.emulator.clone(),
        c.env.hv.clone(),
        c.env.xs.clone(),
        fresh,
        c.env.devices.clone(),
    )
}

/// The actors a running domain has under its VM's supervisor, in start
/// order: its console, the qdisk backend's QEMU if its disks need one, a
/// backend per VBD and VIF, its guest-agent channel and, for HVM, its
/// device model. `fresh` is false when re-syncing onto a running domain:
/// an emulator is then only reattached, never launched.
pub fn child_specs(c: &Ctx, domid: DomId, fresh: bool) -> Vec<(ChildId, ChildSpec)> {
    let mut specs = vec![(
        ChildId::Console,
        ConsoleActor::spec(
            domid,
            c.uuid,
            c.spec.name.clone(),
            c.env.hv.clone(),
            c.env.console.clone(),
        ),
    )];
    let dm = dm_kind(&c.spec, c.env.hv.kind());
    if dm == Some(DmKind::Qdisk) {
        // Before the disks it serves: each is torn down before it goes.
        let spec = emulator_child(c, domid, DmKind::Qdisk, fresh);
        specs.push((ChildId::Emulator, spec));
    }
    for device in devices(domid, &c.spec, c.env.hv.kind()) {
        specs.push((device.child_id(), backend_child(c, domid, device)));
    }
    let nics = c.spec.nics.iter().map(|n| n.devid).collect();
    specs.push((
        ChildId::Agent,
        AgentActor::spec(domid, nics, c.env.xs.clone(), c.guest.clone()),
    ));
    if dm == Some(DmKind::Hvm) {
        specs.push((
            ChildId::Emulator,
            emulator_child(c, domid, DmKind::Hvm, fresh),
        ));
    }
    specs
}

/// Re-sync after the domain actor (or the VM's supervisor) restarted onto a
/// running domain: starts whichever of its actors are not running (each
/// re-syncs from xenstore, the console ring or its QMP socket).
pub async fn ensure_children(c: &Ctx, domid: DomId) {
    for (id, spec) in child_specs(c, domid, false) {
        match c.vm_sup.start_child(spec).await {
            Ok(()) => {
                tracing::info!(vm = %c.spec.name, %domid, child = %id, "restarted with the domain running")
            }
            Err(SupervisorError::AlreadyExists(_)) => {}
            Err(e) => {
                tracing::warn!(vm = %c.spec.name, %domid, child = %id, error = %crate::error::chain(&e), "cannot restart")
            }
        }
    }
}

/// A domain actor that starts with no domain running finds the actors a
/// teardown cut short (by a panic) left under the VM's supervisor: each
/// device is released (its trees, its loop device), the others removed.
pub async fn clear_leftovers(c: &Ctx) {
    let Ok(tree) = c.vm_sup.tree().await else {
        return;
    };
    for child in tree.children {
        let Some(id) = ChildId::parse(&child.id) else {
            continue;
        };
        if id == ChildId::Domain {
            continue;
        }
        if let Some(backend) = BackendHandle::find(&c.vm_sup, &id).await {
            if let Err(e) = backend.release().await {
                tracing::warn!(vm = %c.spec.name, device = %id, error = %crate::error::chain(&e), "releasing a device a cut-short teardown left");
            }
        }
        tracing::info!(vm = %c.spec.name, child = %id, "removed what a cut-short teardown left");
        let _ = c.vm_sup.remove_child(child.id).await;
    }
}

/// Starts one of the domain's actors (the one plug step of a device).
async fn start_child(c: &Ctx, domid: DomId, id: &ChildId, spec: ChildSpec) -> Result<(), VmError> {
    let step = match id {
        ChildId::Emulator => "start the device model",
        ChildId::Device(..) => "plug a device",
        _ => "start the domain's actors",
    };
    timed(step, async {
        match c.vm_sup.start_child(spec.clone()).await {
            // One left behind by a teardown a panic cut short: replaced.
            Err(SupervisorError::AlreadyExists(_)) => {
                tracing::info!(vm = %c.spec.name, child = %id, "replacing an actor a cut-short teardown left");
                let _ = c.vm_sup.remove_child(id.to_string()).await;
                c.vm_sup.start_child(spec).await
            }
            r => r,
        }
        .map_err(|e| VmError::child(format!("start {id}"), e))
    })
    .await?;
    if let Some((kind, name)) = id.device() {
        c.tell_device(domid, kind, name, EventKind::Add, XenbusState::InitWait);
    }
    Ok(())
}

/// Plugs a device of `spec` into the domain. With `connect` (the guest
/// runs), it answers once the guest's frontend has connected; a device
/// that does not connect in time is taken out again, and the error says
/// the state it reached.
pub async fn plug_device(
    c: &Ctx,
    domid: DomId,
    spec: &VmSpec,
    kind: DeviceKind,
    name: &str,
    connect: bool,
) -> Result<ChildId, VmError> {
    let device =
        device_spec(domid, spec, c.env.hv.kind(), kind, name).ok_or_else(|| VmError::NoDevice {
            what: "device",
            name: name.to_owned(),
        })?;
    if device.hotplug == Hotplug::Qdisk && EmulatorHandle::find(&c.vm_sup).await.is_none() {
        // The first qcow2 disk of a running PV/PVH guest: its backend first.
        let spec = emulator_child(c, domid, DmKind::Qdisk, true);
        start_child(c, domid, &ChildId::Emulator, spec).await?;
    }
    let id = device.child_id();
    start_child(c, domid, &id, backend_child(c, domid, device.clone())).await?;
    if connect {
        let reached = c
            .device_states
            .wait_for(kind, name, XenbusState::Connected, CONNECT_TIMEOUT)
            .await;
        if reached != XenbusState::Connected {
            if let Err(e) = unplug_device(c, domid, &device, false).await {
                tracing::warn!(device = %id, error = %crate::error::chain(&e), "taking out a device that did not connect");
            }
            return Err(VmError::NotConnected {
                device: id.to_string(),
                reached,
                after: CONNECT_TIMEOUT,
            });
        }
    }
    Ok(id)
}

/// Takes a device out of the running domain: with the guest (`graceful`,
/// an unplug) or without waiting for anyone (the domain is going). Its
/// actor does it, or this does when the actor is gone (it crashed for
/// good); then the actor is removed and the removal told.
pub async fn unplug_device(
    c: &Ctx,
    domid: DomId,
    device: &DeviceSpec,
    graceful: bool,
) -> Result<(), VmError> {
    let id = device.child_id();
    let step = if graceful {
        "unplug a device"
    } else {
        "release a device"
    };
    let done = timed(step, async {
        let by_actor = match BackendHandle::find(&c.vm_sup, &id).await {
            Some(backend) if graceful => backend.unplug().await.map(drop),
            Some(backend) => backend.release().await,
            None => Err(BackendError::Unavailable),
        };
        match by_actor {
            // Its actor is gone (crashed for good, or just now): done here.
            Err(BackendError::Unavailable) => release_orphan(&c.env.xs, &c.env.devices, device)
                .await
                .map_err(BackendError::from),
            r => r,
        }
        .map_err(|e| VmError::step(step, &e))
    })
    .await;
    let _ = c.vm_sup.remove_child(id.to_string()).await;
    c.tell_device(
        domid,
        device.kind,
        &device.name,
        EventKind::Del,
        XenbusState::Closed,
    );
    done
}

/// What a new domain is made from.
pub enum Source {
    /// Its kernel (or firmware): a boot.
    Boot,
    /// A xenith image (a suspend image, a migration stream): the guest
    /// carries on from where it was saved.
    Restore(Box<dyn std::io::Read + Send>),
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Source::Boot => "Boot",
            Source::Restore(_) => "Restore",
        })
    }
}

/// Starts the VM: on any failure, undoes what was done and returns the error.
pub async fn start(c: &Ctx, paused: bool) -> Result<Running, VmError> {
    start_from(c, paused, Source::Boot).await
}

/// Starts the VM from `source`: on any failure, undoes what was done.
pub async fn start_from(c: &Ctx, paused: bool, source: Source) -> Result<Running, VmError> {
    let config = DomainConfig {
        uuid: *c.uuid.as_bytes(),
        domain_type: c.spec.domain_type,
        memory_mib: c.spec.memory_mib,
        vcpus: c.spec.vcpus,
    };
    let t0 = std::time::Instant::now();
    timed("activate the VDIs", super::vdis::activate(c, &c.spec.disks)).await?;
    let domid = match measured("create the domain", c.env.hv.create_domain(config)).await {
        Ok(domid) => domid,
        Err(e) => {
            super::vdis::deactivate(c, &c.spec.disks).await;
            return Err(e.into());
        }
    };
    let mut running = Running {
        domid,
        children: Vec::new(),
    };
    match start_steps(c, &mut running, paused, source).await {
        Ok(()) => {
            tracing::debug!(%domid, elapsed_ms = millis(t0), "start done");
            Ok(running)
        }
        Err(e) => {
            tracing::warn!(vm = %c.spec.name, %domid, error = %crate::error::chain(&e), "start failed; undoing");
            teardown(c, &running).await;
            Err(e)
        }
    }
}

async fn start_steps(
    c: &Ctx,
    running: &mut Running,
    paused: bool,
    source: Source,
) -> Result<(), VmError> {
    let domid = running.domid;
    write_entries(
        "write the domain's xenstore tree",
        c,
        layout::domain_make(&c.uuid, domid, &c.spec),
    )
    .await?;
    let built: Built = match source {
        Source::Boot => {
            let image = BootImage {
                kernel: c.spec.kernel.clone().unwrap_or_else(|| HVMLOADER.into()),
                ramdisk: c.spec.ramdisk.clone(),
                cmdline: c.spec.cmdline.clone(),
                firmware: c.spec.firmware,
            };
            measured("build the domain", c.env.hv.build_domain(domid, image)).await?
        }
        Source::Restore(input) => measured("restore the domain", restore(c, domid, input)).await?,
    };
    let mut post = layout::build_post(
        &c.uuid,
        domid,
        &c.spec,
        &built,
        std::time::SystemTime::now(),
    );
    post.extend(layout::console(domid, &built));
    write_entries("write the build keys", c, post).await?;
    timed("introduce the domain to xenstore", async {
        c.env
            .xs
            .introduce(u32::from(domid.0), built.store_gfn, built.store_port)
            .await
            .map_err(|e| VmError::step("introduce", &e))
    })
    .await?;
    for (id, spec) in child_specs(c, domid, true) {
        start_child(c, domid, &id, spec).await?;
        running.children.push(id);
    }
    if !paused {
        measured("unpause the domain", c.env.hv.unpause(domid)).await?;
    }
    Ok(())
}

/// Loads a xenith image's memory into the new domain, checking the image
/// to its end.
async fn restore(
    c: &Ctx,
    domid: DomId,
    input: Box<dyn std::io::Read + Send>,
) -> Result<Built, VmError> {
    use crate::vm::image::{ImageError, ImageReader};
    let saver = c.env.saver.clone();
    let done = crate::drivers::blocking::run(move || -> Result<Built, VmError> {
        let bad = |e: ImageError| VmError::BadImage(e.to_string());
        let mut reader = ImageReader::open(input).map_err(bad)?;
        let built = saver.restore(domid, &mut reader).map_err(|e| match e {
            crate::drivers::migration::SaveError::Io(io) => bad(ImageError::from_io(io)),
            crate::drivers::migration::SaveError::Corrupt(m) => VmError::BadImage(m),
            e => VmError::step("restore the memory", &e),
        })?;
        reader.finish().map_err(bad)?;
        Ok(built)
    })
    .await
    .map_err(|e| VmError::step("restore the domain", &e))?;
    done
}

/// Tears the VM's domain down: its actors stopped (devices released), the
/// domain destroyed and released from xenstore, its trees removed. Best
/// effort: each step is tried whatever the previous one did.
pub async fn teardown(c: &Ctx, running: &Running) {
    let domid = running.domid;
    // In reverse start order, then QEMU (an HVM device model, or the
    // qdisk backend once the disks it serves are gone, which may have
    // started at a hotplug) is asked to quit.
    let specs = devices(domid, &c.spec, c.env.hv.kind());
    for id in running.children.iter().rev() {
        match id {
            ChildId::Emulator => continue,
            ChildId::Device(kind, name) => {
                if let Some(device) = specs.iter().find(|d| d.kind == *kind && d.name == *name) {
                    if let Err(e) = unplug_device(c, domid, device, false).await {
                        tracing::warn!(vm = %c.spec.name, device = %id, error = %crate::error::chain(&e), "device release");
                    }
                    continue;
                }
            }
            _ => {}
        }
        let _ = c.vm_sup.remove_child(id.to_string()).await;
    }
    if let Some(emulator) = EmulatorHandle::find(&c.vm_sup).await {
        let _ = emulator.quit().await;
    }
    let _ = c.vm_sup.remove_child(ChildId::Emulator.to_string()).await;
    c.guest.send_replace(GuestMetrics::default());
    if let Err(e) = c.env.hv.destroy(domid).await {
        tracing::debug!(vm = %c.spec.name, %domid, error = %crate::error::chain(&e), "destroy");
    }
    // Whatever is left of a device model (it died, or did not quit).
    let emulator = c.env.emulator.clone();
    let _ = crate::drivers::blocking::run(move || emulator.kill(domid)).await;
    let _ = c.env.xs.release(u32::from(domid.0)).await;
    for path in layout::domain_trees(&c.uuid, domid) {
        if let Err(e) = c.env.xs.rm(&path).await {
            tracing::debug!(vm = %c.spec.name, %path, error = %e, "remove tree");
        }
    }
    super::vdis::deactivate(c, &c.spec.disks).await;
}
