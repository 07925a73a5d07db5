//! The domain actor: owns one VM's lifecycle state machine (Halted,
//! Running, Paused, Suspended, Crashed) and runs its operations one at a
//! time (the mailbox waits while one runs). It follows the domain's
//! shutdown and death notifications and applies the VM's on_poweroff,
//! on_reboot and on_crash actions. Its state is published in a snapshot
//! (`vm.get` and `vm.list` read it without queueing behind an operation).
//!
//! A domain actor that restarts re-syncs from the hypervisor (the domain
//! with its uuid) without disturbing the domain or its devices.

mod devices;
mod handle;
pub mod lifecycle;

pub use devices::{DeviceChange, Reconfigure};
pub use handle::{VmHandle, VM_FLAGS};

use super::InjectPanic;

use std::sync::Arc;
use std::time::Duration;

use actix::{
    Actor, ActorFutureExt, AsyncContext, Context, Handler, Message, ResponseFuture, SpawnHandle,
    StreamHandler, WrapFuture,
};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use self::lifecycle::{hv, Ctx, Running};
use super::agent::GuestMetrics;
use super::backend::DeviceStates;
use super::console::ConsoleConfig;
use super::events::{EventBus, EventClass, EventKind};
use super::slot::AddrSlot;
use super::supervisor::{ChildSpec, StartError, Supervisor, SupervisorHandle};
use crate::api::{ApiError, ErrorCode};
use crate::drivers::emulator::EmulatorConfig;
use crate::drivers::xenstore::XsClient;
use crate::drivers::{DomId, DomainEvent, Hypervisor, ShutdownReason};
use crate::vm::{OnEvent, RecordStore, VmRecord};

/// How long a clean shutdown or reboot waits for the guest by default.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(60);

/// A VM's power state (CONTRACT.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PowerState {
    Halted,
    Running,
    Paused,
    Suspended,
    Crashed,
}

impl PowerState {
    pub fn name(self) -> &'static str {
        match self {
            PowerState::Halted => "Halted",
            PowerState::Running => "Running",
            PowerState::Paused => "Paused",
            PowerState::Suspended => "Suspended",
            PowerState::Crashed => "Crashed",
        }
    }
}

/// What `vm.get` and `vm.list` show of the domain actor's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSnapshot {
    pub uuid: uuid::Uuid,
    pub power_state: PowerState,
    pub domid: Option<u16>,
    /// Set while an operation runs.
    pub busy: Option<&'static str>,
    /// The spec as it is now (name, type, memory, vcpus, devices; device
    /// hotplug changes it).
    pub spec: Arc<crate::vm::VmSpec>,
}

impl VmSnapshot {
    /// What `vm` events carry: `vm.list`'s fields, the operation under way
    /// and what the guest agent reports (`vm.get`'s `guest`).
    pub fn event_snapshot(&self, guest: &GuestMetrics) -> serde_json::Value {
        serde_json::json!({
            "uuid": self.uuid.to_string(),
            "name": self.spec.name,
            "power_state": self.power_state.name(),
            "domid": self.domid,
            "operation": self.busy,
            "guest": {
                "agent": guest.agent,
                "os_name": guest.os_name,
                "os_distro": guest.os_distro,
                "ips": guest.ips,
            },
        })
    }
}

/// An operation on a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmOp {
    Start {
        paused: bool,
    },
    /// Clean (the guest acknowledges control/shutdown within `timeout`),
    /// or at once with `force`; with `fallback`, a clean shutdown that
    /// times out becomes a hard one.
    Shutdown {
        force: bool,
        timeout: Duration,
        fallback: bool,
    },
    Reboot {
        force: bool,
    },
    Pause,
    Unpause,
    Kill,
    /// The balloon target, in MiB (at most the VM's memory): the
    /// hypervisor's side, then the guest's `memory/target`.
    SetMemoryTarget {
        mib: u64,
    },
}

impl VmOp {
    fn name(self) -> &'static str {
        match self {
            VmOp::Start { .. } => "start",
            VmOp::Shutdown { .. } => "shutdown",
            VmOp::Reboot { .. } => "reboot",
            VmOp::Pause => "pause",
            VmOp::Unpause => "unpause",
            VmOp::Kill => "kill",
            VmOp::SetMemoryTarget { .. } => "set_memory_target",
        }
    }

    /// The states it may start from, the first being the one to name.
    fn allowed(self) -> &'static [PowerState] {
        use PowerState::*;
        match self {
            VmOp::Start { .. } => &[Halted],
            VmOp::Shutdown { force: false, .. } | VmOp::Reboot { force: false } => &[Running],
            VmOp::Shutdown { force: true, .. } | VmOp::Reboot { force: true } => {
                &[Running, Paused, Suspended, Crashed]
            }
            VmOp::Pause => &[Running],
            VmOp::Unpause => &[Paused],
            VmOp::Kill => &[Running, Paused, Suspended, Crashed],
            VmOp::SetMemoryTarget { .. } => &[Running, Paused],
        }
    }
}

/// Runs an operation; answers when the VM has reached its new state.
#[derive(Debug)]
pub struct Op(pub VmOp);

impl Message for Op {
    type Result = Result<(), ApiError>;
}

/// The domain actor.
#[derive(Debug)]
pub struct DomainActor {
    c: Ctx,
    state: PowerState,
    running: Option<Running>,
    snapshot: Arc<watch::Sender<VmSnapshot>>,
    events: Option<SpawnHandle>,
    /// Which subscription's events count: actix cancels a stream lazily,
    /// so a replaced subscription may still deliver one; it is ignored.
    epoch: u64,
    slot: AddrSlot<DomainActor>,
}

/// What every VM's actors use of the host.
#[derive(Debug, Clone)]
pub struct VmEnv {
    pub driver: Arc<dyn Hypervisor>,
    /// The toolstack's (privileged) xenstore connection.
    pub xs: XsClient,
    pub emulator: Arc<EmulatorConfig>,
    pub console: Arc<ConsoleConfig>,
    pub events: EventBus,
    pub records: RecordStore,
}

/// Shared by a VM's successive domain actors.
#[derive(Debug, Clone)]
pub struct VmParts {
    pub record: VmRecord,
    pub env: VmEnv,
    pub vm_sup: AddrSlot<Supervisor>,
    pub domain: AddrSlot<DomainActor>,
    pub snapshot: Arc<watch::Sender<VmSnapshot>>,
    pub guest: Arc<watch::Sender<GuestMetrics>>,
    pub device_states: DeviceStates,
}

impl DomainActor {
    /// The child spec: at (re)start it finds the VM's domain, if one runs.
    pub fn spec(parts: VmParts) -> ChildSpec {
        ChildSpec::worker_async("domain", move |_exit| {
            let parts = parts.clone();
            async move {
                let vm_sup = parts
                    .vm_sup
                    .get()
                    .map(SupervisorHandle::from)
                    .ok_or_else(|| StartError::new("the VM's supervisor is not published"))?;
                let c = Ctx {
                    uuid: parts.record.uuid,
                    spec: Arc::new(parts.record.spec.clone()),
                    driver: parts.env.driver.clone(),
                    xs: parts.env.xs.clone(),
                    vm_sup,
                    emulator: parts.env.emulator.clone(),
                    console: parts.env.console.clone(),
                    guest: parts.guest.clone(),
                    device_states: parts.device_states.clone(),
                    events: parts.env.events.clone(),
                    records: parts.env.records.clone(),
                };
                let uuid = *parts.record.uuid.as_bytes();
                let found = hv("find the VM's domain", &c.driver, move |h| {
                    Ok(h.list_domains()?
                        .into_iter()
                        .find(|d| d.uuid == uuid && d.domid != DomId::DOM0))
                })
                .await
                .map_err(|e| StartError::new(e.message))?;
                let (state, running) = match found {
                    None => (PowerState::Halted, None),
                    Some(info) => {
                        let state = match info.shutdown {
                            Some(ShutdownReason::Crash) => PowerState::Crashed,
                            Some(ShutdownReason::Suspend) => PowerState::Suspended,
                            _ if info.paused => PowerState::Paused,
                            _ => PowerState::Running,
                        };
                        let devices = lifecycle::child_specs(&c, info.domid, false)
                            .iter()
                            .map(|spec| spec.id().to_owned())
                            .collect();
                        (
                            state,
                            Some(Running {
                                domid: info.domid,
                                device_ids: devices,
                            }),
                        )
                    }
                };
                Ok(DomainActor {
                    c,
                    state,
                    running,
                    snapshot: parts.snapshot.clone(),
                    events: None,
                    epoch: 0,
                    slot: parts.domain.clone(),
                })
            }
        })
    }

    /// Publishes the VM's state (`vm.get`), and a `vm` event if it changed.
    fn publish(&self, busy: Option<&'static str>) {
        let now = VmSnapshot {
            uuid: self.c.uuid,
            power_state: self.state,
            domid: self.running.as_ref().map(|r| r.domid.0),
            busy,
            spec: self.c.spec.clone(),
        };
        let changed = self.snapshot.send_if_modified(|old| {
            let changed = *old != now;
            *old = now.clone();
            changed
        });
        if changed {
            self.tell();
        }
    }

    /// Publishes a `vm` event with the VM's state now.
    fn tell(&self) {
        self.c.events.publish(
            EventClass::Vm,
            self.c.uuid.to_string(),
            EventKind::Mod,
            || {
                self.snapshot
                    .borrow()
                    .event_snapshot(&self.c.guest.borrow())
            },
        );
    }

    /// Follows the running domain's shutdown and death.
    fn follow_domain(&mut self, ctx: &mut Context<Self>, rx: mpsc::UnboundedReceiver<DomainEvent>) {
        self.stop_following(ctx);
        let epoch = self.epoch;
        let stream = futures_util::stream::unfold(rx, move |mut rx| async move {
            rx.recv().await.map(|e| ((epoch, e), rx))
        });
        self.events = Some(ctx.add_stream(stream));
    }

    fn stop_following(&mut self, ctx: &mut Context<Self>) {
        self.epoch += 1;
        if let Some(h) = self.events.take() {
            ctx.cancel_future(h);
        }
    }

    /// Runs `work` with the mailbox paused, then applies its outcome.
    fn run<F>(
        &mut self,
        ctx: &mut Context<Self>,
        what: &'static str,
        work: F,
        done: Option<oneshot::Sender<Result<(), ApiError>>>,
    ) where
        F: std::future::Future<Output = Outcome> + 'static,
    {
        self.publish(Some(what));
        ctx.wait(work.into_actor(self).map(move |outcome, act, ctx| {
            let result = act.apply(outcome, ctx);
            act.publish(None);
            if let Some(done) = done {
                let _ = done.send(result);
            }
        }));
    }

    fn apply(&mut self, outcome: Outcome, ctx: &mut Context<Self>) -> Result<(), ApiError> {
        match outcome {
            Outcome::Started {
                running,
                events,
                paused,
            } => {
                self.running = Some(running);
                self.state = if paused {
                    PowerState::Paused
                } else {
                    PowerState::Running
                };
                self.follow_domain(ctx, events);
                Ok(())
            }
            Outcome::Halted => {
                self.stop_following(ctx);
                self.running = None;
                self.state = PowerState::Halted;
                Ok(())
            }
            Outcome::State(s) => {
                self.state = s;
                Ok(())
            }
            Outcome::Done => Ok(()),
            Outcome::Failed(e) => Err(e),
            Outcome::FailedHalted(e) => {
                self.stop_following(ctx);
                self.running = None;
                self.state = PowerState::Halted;
                Err(e)
            }
        }
    }

    /// The work of one operation, run without access to the actor.
    fn work(&self, op: VmOp) -> std::pin::Pin<Box<dyn std::future::Future<Output = Outcome>>> {
        let c = self.c.clone();
        let running = self.running.clone();
        Box::pin(async move {
            match op {
                VmOp::Start { paused } => start(&c, paused).await,
                VmOp::Shutdown {
                    force,
                    timeout,
                    fallback,
                } => {
                    let Some(r) = running else {
                        return Outcome::Halted;
                    };
                    let mut stopped =
                        stop_domain(&c, &r, ShutdownReason::Poweroff, force, timeout).await;
                    if fallback
                        && matches!(&stopped, Err(e) if e.code == ErrorCode::OperationTimeout)
                    {
                        tracing::warn!(
                            domid = %r.domid,
                            ?timeout,
                            "the guest did not shut down in time: shutting it down hard"
                        );
                        stopped =
                            stop_domain(&c, &r, ShutdownReason::Poweroff, true, timeout).await;
                    }
                    match stopped {
                        Ok(()) => {
                            lifecycle::teardown(&c, &r).await;
                            Outcome::Halted
                        }
                        Err(e) => Outcome::Failed(e),
                    }
                }
                VmOp::Reboot { force } => {
                    let Some(r) = running else {
                        return Outcome::Halted;
                    };
                    match stop_domain(&c, &r, ShutdownReason::Reboot, force, SHUTDOWN_TIMEOUT).await
                    {
                        Ok(()) => {
                            lifecycle::teardown(&c, &r).await;
                            start(&c, false).await
                        }
                        Err(e) => Outcome::Failed(e),
                    }
                }
                VmOp::Pause | VmOp::Unpause => {
                    let Some(r) = running else {
                        return Outcome::Halted;
                    };
                    let domid = r.domid;
                    let (result, state) = if op == VmOp::Pause {
                        (
                            hv("pause the domain", &c.driver, move |h| h.pause(domid)).await,
                            PowerState::Paused,
                        )
                    } else {
                        (
                            hv("unpause the domain", &c.driver, move |h| h.unpause(domid)).await,
                            PowerState::Running,
                        )
                    };
                    match result {
                        Ok(()) => Outcome::State(state),
                        Err(e) => Outcome::Failed(e),
                    }
                }
                VmOp::Kill => {
                    if let Some(r) = running {
                        lifecycle::teardown(&c, &r).await;
                    }
                    Outcome::Halted
                }
                VmOp::SetMemoryTarget { mib } => {
                    let Some(r) = running else {
                        return Outcome::Halted;
                    };
                    match set_memory_target(&c, r.domid, mib).await {
                        Ok(()) => Outcome::Done,
                        Err(e) => Outcome::Failed(e),
                    }
                }
            }
        })
    }

    /// The domain shut down by itself (or crashed): the VM's action follows.
    fn on_shutdown(&mut self, reason: ShutdownReason, ctx: &mut Context<Self>) {
        let spec = &self.c.spec;
        let (action, preserved) = match reason {
            ShutdownReason::Poweroff => (spec.on_poweroff, PowerState::Halted),
            ShutdownReason::Reboot | ShutdownReason::SoftReset => {
                (spec.on_reboot, PowerState::Halted)
            }
            ShutdownReason::Crash | ShutdownReason::Watchdog => {
                (spec.on_crash, PowerState::Crashed)
            }
            ShutdownReason::Suspend => {
                self.state = PowerState::Suspended;
                self.publish(None);
                return;
            }
        };
        tracing::info!(vm = %self.c.uuid, ?reason, ?action, "domain shut down");
        let Some(r) = self.running.clone() else {
            return;
        };
        let c = self.c.clone();
        match action {
            OnEvent::Preserve => {
                self.state = preserved;
                self.publish(None);
            }
            OnEvent::Destroy => self.run(
                ctx,
                "destroy",
                async move {
                    lifecycle::teardown(&c, &r).await;
                    Outcome::Halted
                },
                None,
            ),
            OnEvent::Restart => self.run(
                ctx,
                "restart",
                async move {
                    lifecycle::teardown(&c, &r).await;
                    start(&c, false).await
                },
                None,
            ),
        }
    }
}

/// What an operation's work comes to.
enum Outcome {
    Started {
        running: Running,
        events: mpsc::UnboundedReceiver<DomainEvent>,
        paused: bool,
    },
    Halted,
    State(PowerState),
    /// Done; the power state is as it was.
    Done,
    Failed(ApiError),
    /// Failed, and the VM is Halted (a start undone).
    FailedHalted(ApiError),
}

async fn start(c: &Ctx, paused: bool) -> Outcome {
    match lifecycle::start(c, paused).await {
        Ok(running) => {
            let domid = running.domid;
            match hv("follow the domain", &c.driver, move |h| h.subscribe(domid)).await {
                Ok(events) => Outcome::Started {
                    running,
                    events,
                    paused,
                },
                Err(e) => {
                    lifecycle::teardown(c, &running).await;
                    Outcome::FailedHalted(e)
                }
            }
        }
        Err(e) => Outcome::FailedHalted(e),
    }
}

/// Sets a running domain's balloon target: the hypervisor's side (on Xen,
/// the domain's maximum, as `xl mem-set` does), then `memory/target` (KiB),
/// which the guest's balloon driver follows.
async fn set_memory_target(c: &Ctx, domid: DomId, mib: u64) -> Result<(), ApiError> {
    // No lower than a VM's least memory, no higher than this VM's.
    let (min, max) = (crate::vm::MIN_MEMORY_MIB, c.spec.memory_mib);
    if !(min..=max).contains(&mib) {
        return Err(ApiError::new(
            ErrorCode::InvalidParams,
            format!("mib: {mib} is outside {min}..={max} (the VM's memory)"),
        )
        .with_details(vec!["mib".into()]));
    }
    hv("set the memory target", &c.driver, move |h| {
        h.set_memory_target(domid, mib)
    })
    .await?;
    let path = format!("{}/memory/target", crate::vm::layout::home(domid));
    c.xs.write(&path, &(mib * 1024).to_string())
        .await
        .map_err(|e| lifecycle::step_error("write memory/target", e))
}

/// Asks the guest to shut down (or reboot) through control/shutdown and
/// waits for the domain to do so; `force` does it the hard way at once.
async fn stop_domain(
    c: &Ctx,
    r: &Running,
    reason: ShutdownReason,
    force: bool,
    timeout: Duration,
) -> Result<(), ApiError> {
    let domid = r.domid;
    if force {
        return hv("shut the domain down", &c.driver, move |h| {
            h.shutdown(domid, reason)
        })
        .await;
    }
    let mut events = hv("follow the domain", &c.driver, move |h| h.subscribe(domid)).await?;
    let word = reason.control_word().unwrap_or("poweroff");
    let path = format!("{}/control/shutdown", crate::vm::layout::home(domid));
    c.xs.write(&path, word)
        .await
        .map_err(|e| lifecycle::step_error("ask the guest to shut down", e))?;
    let wait = async {
        while let Some(event) = events.recv().await {
            if matches!(event, DomainEvent::Shutdown(_) | DomainEvent::Destroyed) {
                return true;
            }
        }
        false
    };
    match tokio::time::timeout(timeout, wait).await {
        Ok(true) => Ok(()),
        Ok(false) => Ok(()),
        Err(_) => Err(ApiError::new(
            ErrorCode::OperationTimeout,
            format!(
                "the guest did not {} within {timeout:?} (use force)",
                reason.control_word().unwrap_or("shut down")
            ),
        )
        .with_details(vec!["wait for the guest's shutdown".into()])),
    }
}

impl Actor for DomainActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.slot.publish(ctx.address());
        self.publish(None);
        // What the guest agent reports is part of the VM's events.
        let guest = self.c.guest.subscribe();
        ctx.add_stream(futures_util::stream::unfold(guest, |mut rx| async move {
            rx.changed().await.ok().map(|()| (GuestChanged, rx))
        }));
        // Re-synced onto a running domain: its actors run again, and the
        // domain is followed again.
        if let Some(r) = &self.running {
            let domid = r.domid;
            let c = self.c.clone();
            ctx.wait(
                async move {
                    lifecycle::ensure_children(&c, domid).await;
                    hv("follow the domain", &c.driver, move |h| h.subscribe(domid)).await
                }
                .into_actor(self)
                .map(|r, act, ctx| match r {
                    Ok(events) => act.follow_domain(ctx, events),
                    Err(e) => {
                        tracing::warn!(vm = %act.c.uuid, error = %e, "cannot follow the domain")
                    }
                }),
            );
        }
    }
}

/// The guest agent's metrics changed.
struct GuestChanged;

impl StreamHandler<GuestChanged> for DomainActor {
    fn handle(&mut self, _: GuestChanged, _ctx: &mut Context<Self>) {
        self.tell();
    }

    fn finished(&mut self, _ctx: &mut Context<Self>) {}
}

impl StreamHandler<(u64, DomainEvent)> for DomainActor {
    fn handle(&mut self, (epoch, event): (u64, DomainEvent), ctx: &mut Context<Self>) {
        if epoch != self.epoch {
            return; // from a domain this actor no longer follows
        }
        match event {
            DomainEvent::Shutdown(reason) => self.on_shutdown(reason, ctx),
            DomainEvent::Destroyed => {
                // Destroyed behind our back: clean up what is left.
                if let Some(r) = self.running.clone() {
                    let c = self.c.clone();
                    self.run(
                        ctx,
                        "clean up",
                        async move {
                            lifecycle::teardown(&c, &r).await;
                            Outcome::Halted
                        },
                        None,
                    );
                }
            }
        }
    }

    fn finished(&mut self, _ctx: &mut Context<Self>) {
        // The notification stream ended with the domain: nothing to stop.
    }
}

impl Handler<Op> for DomainActor {
    type Result = ResponseFuture<Result<(), ApiError>>;

    fn handle(&mut self, Op(op): Op, ctx: &mut Context<Self>) -> Self::Result {
        if !op.allowed().contains(&self.state) {
            let e = ApiError::new(
                ErrorCode::VmBadPowerState,
                format!("cannot {} a VM that is {}", op.name(), self.state.name()),
            )
            .with_details(vec![
                self.c.uuid.to_string(),
                op.allowed()[0].name().to_owned(),
                self.state.name().to_owned(),
            ]);
            return Box::pin(std::future::ready(Err(e)));
        }
        let (tx, rx) = oneshot::channel();
        let work = self.work(op);
        self.run(ctx, op.name(), work, Some(tx));
        Box::pin(async move {
            rx.await.unwrap_or_else(|_| {
                Err(ApiError::new(
                    ErrorCode::InternalError,
                    "the VM's domain actor stopped during the operation",
                ))
            })
        })
    }
}

impl Handler<InjectPanic> for DomainActor {
    type Result = ();

    fn handle(&mut self, _msg: InjectPanic, _ctx: &mut Context<Self>) {
        panic!("injected panic in the domain actor of {}", self.c.uuid);
    }
}
