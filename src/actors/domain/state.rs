//! The domain actor's state: the VM's power state and running domain, its
//! start (re-synced from the hypervisor), what it publishes, and the one
//! path every operation takes ([`DomainActor::run`]).

use std::sync::Arc;

use actix::{Actor, ActorFutureExt, AsyncContext, Context, SpawnHandle, StreamHandler, WrapFuture};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;

use super::env::{Ctx, VmParts};
use super::error::VmError;
use super::lifecycle::{self, Running};
use super::messages::OpReply;
use super::stop::PendingStop;
use crate::actors::agent::GuestMetrics;
use crate::actors::child::ChildId;
use crate::actors::events::{EventClass, EventKind};
use crate::actors::slot::AddrSlot;
use crate::actors::supervisor::{ChildSpec, StartError, SupervisorHandle};
use crate::drivers::{DomainEvent, ShutdownReason};
use crate::vm::VmSpec;

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

impl std::fmt::Display for PowerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
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
    pub spec: Arc<VmSpec>,
}

impl VmSnapshot {
    /// A Halted VM with this spec, before its domain actor has looked.
    pub fn halted(uuid: uuid::Uuid, spec: VmSpec) -> Self {
        VmSnapshot {
            uuid,
            power_state: PowerState::Halted,
            domid: None,
            busy: None,
            spec: Arc::new(spec),
        }
    }

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

/// The domain actor.
#[derive(Debug)]
pub struct DomainActor {
    pub(super) c: Ctx,
    pub(super) state: PowerState,
    pub(super) running: Option<Running>,
    /// Removed (or about to be): no operation is taken any more.
    pub(super) retired: bool,
    /// The operation whose work is under way: no other starts meanwhile.
    pub(super) busy: Option<&'static str>,
    /// A clean shutdown or reboot waiting for the guest (no work is under
    /// way; a hard kill may pre-empt it).
    pub(super) stopping: Option<PendingStop>,
    /// The domain's own events that came while an operation's work ran:
    /// handled after it.
    pub(super) deferred: Vec<(u64, DomainEvent)>,
    snapshot: Arc<watch::Sender<VmSnapshot>>,
    events: Option<SpawnHandle>,
    /// Which subscription's events count: actix cancels a stream lazily,
    /// so a replaced subscription may still deliver one; it is ignored.
    pub(super) epoch: u64,
    slot: AddrSlot<DomainActor>,
}

/// What an operation's work comes to.
#[derive(Debug)]
pub(super) enum Outcome {
    Started {
        running: Running,
        events: mpsc::UnboundedReceiver<DomainEvent>,
        paused: bool,
    },
    Halted,
    State(PowerState),
    /// Done; the power state is as it was.
    Done,
    /// A device plugged or unplugged: the VM's spec now, and the device.
    Reconfigured {
        spec: Arc<VmSpec>,
        id: ChildId,
        plugged: bool,
        name: String,
    },
    /// The guest was asked to shut down or reboot: the answer comes when
    /// it has (or the wait ends).
    StopRequested {
        reason: ShutdownReason,
        timeout: std::time::Duration,
        fallback: bool,
    },
    Failed(VmError),
    /// Failed, and the VM is Halted (a start undone).
    FailedHalted(VmError),
    /// Saved into its suspend image, the domain gone: Suspended.
    Suspended,
    /// A save failed; the guest runs on (resumed if it had suspended: its
    /// suspend, seen meanwhile, no longer counts).
    FailedRunning(VmError),
}

impl DomainActor {
    /// The child spec: at (re)start it finds the VM's domain, if one runs,
    /// and carries on with the VM's spec as it is now.
    pub fn spec(parts: VmParts) -> ChildSpec {
        ChildSpec::worker_async(ChildId::DOMAIN, move |_exit| {
            let parts = parts.clone();
            async move {
                let vm_sup = parts
                    .vm_sup
                    .get()
                    .map(SupervisorHandle::from)
                    .ok_or_else(|| StartError::new("the VM's supervisor is not published"))?;
                let spec = parts.snapshot.borrow().spec.clone();
                let c = Ctx {
                    env: parts.env.clone(),
                    uuid: parts.uuid,
                    spec,
                    vm_sup,
                    guest: parts.guest.clone(),
                    device_states: parts.device_states.clone(),
                };
                let found = c
                    .env
                    .hv
                    .find_domain(*parts.uuid.as_bytes())
                    .await
                    .map_err(|e| StartError::new(crate::error::chain(&e)))?;
                let (state, running) = match found {
                    // No domain: Suspended if it has an image (a partial
                    // one, of a suspend cut short, goes).
                    None => {
                        let (images, uuid) = (c.env.suspends.clone(), c.uuid);
                        let suspended = crate::drivers::blocking::run(move || {
                            images.discard_partial(&uuid);
                            images.exists(&uuid)
                        })
                        .await
                        .map_err(|e| StartError::new(e.to_string()))?;
                        if suspended {
                            (PowerState::Suspended, None)
                        } else {
                            (PowerState::Halted, None)
                        }
                    }
                    Some(info) => {
                        let state = match info.shutdown {
                            Some(ShutdownReason::Crash) => PowerState::Crashed,
                            Some(ShutdownReason::Suspend) => PowerState::Suspended,
                            _ if info.paused => PowerState::Paused,
                            _ => PowerState::Running,
                        };
                        let children = lifecycle::child_specs(&c, info.domid, false)
                            .into_iter()
                            .map(|(id, _)| id)
                            .collect();
                        let running = Running {
                            domid: info.domid,
                            children,
                        };
                        (state, Some(running))
                    }
                };
                Ok(DomainActor {
                    c,
                    state,
                    running,
                    retired: false,
                    busy: None,
                    stopping: None,
                    deferred: Vec::new(),
                    snapshot: parts.snapshot.clone(),
                    events: None,
                    epoch: 0,
                    slot: parts.domain.clone(),
                })
            }
        })
    }

    /// Publishes the VM's state (`vm.get`), and a `vm` event if it changed.
    pub(super) fn publish(&self) {
        let busy = self.busy.or(self.stopping.as_ref().map(PendingStop::name));
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
    pub(super) fn tell(&self) {
        self.c.env.events.publish(
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

    /// The one path of every operation: `work` runs (the busy marker `what`
    /// published meanwhile; the mailbox is served, and the gate refuses
    /// what conflicts), then its outcome is applied and answered on `done`,
    /// a clean stop it settled is answered, and the domain events that came
    /// meanwhile are handled.
    pub(super) fn run<F>(
        &mut self,
        ctx: &mut Context<Self>,
        what: &'static str,
        work: F,
        done: Option<oneshot::Sender<Result<OpReply, VmError>>>,
    ) where
        F: std::future::Future<Output = Outcome> + 'static,
    {
        self.busy = Some(what);
        self.publish();
        // Every log line of the operation names the VM and its domain.
        let domid = self.running.as_ref().map(|r| r.domid.0);
        let span = tracing::info_span!("vm", vm = %self.c.spec.name, domid, op = what);
        ctx.spawn(
            work.instrument(span)
                .into_actor(self)
                .map(move |outcome, act, ctx| {
                    act.busy = None;
                    match act.apply(outcome, ctx) {
                        Some(result) => {
                            act.settle_stop(ctx, &result);
                            if let Some(done) = done {
                                let _ = done.send(result);
                            }
                        }
                        // A clean stop now waits for the guest: its answer
                        // comes with the stop's.
                        None => {
                            if let (Some(stop), Some(done)) = (act.stopping.as_mut(), done) {
                                stop.waiters.push(done);
                            }
                        }
                    }
                    act.publish();
                    act.replay(ctx);
                }),
        );
    }

    /// Handles the domain events deferred while an operation ran.
    fn replay(&mut self, ctx: &mut Context<Self>) {
        for (epoch, event) in std::mem::take(&mut self.deferred) {
            if self.busy.is_some() {
                // An event started an operation of its own: the rest wait for it.
                self.deferred.push((epoch, event));
            } else if epoch == self.epoch {
                self.domain_event(event, ctx);
            }
        }
    }

    /// Applies an operation's outcome; None when the answer comes later (a
    /// clean stop waiting for the guest).
    fn apply(
        &mut self,
        outcome: Outcome,
        ctx: &mut Context<Self>,
    ) -> Option<Result<OpReply, VmError>> {
        Some(match outcome {
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
                Ok(OpReply::Done)
            }
            Outcome::Halted => {
                self.halted(ctx);
                Ok(OpReply::Done)
            }
            Outcome::State(s) => {
                self.state = s;
                Ok(OpReply::Done)
            }
            Outcome::Done => Ok(OpReply::Done),
            Outcome::Reconfigured {
                spec,
                id,
                plugged,
                name,
            } => {
                self.c.spec = spec;
                if let Some(running) = self.running.as_mut() {
                    running.children.retain(|c| *c != id);
                    if plugged {
                        running.children.push(id);
                    }
                }
                Ok(OpReply::Device(name))
            }
            Outcome::StopRequested {
                reason,
                timeout,
                fallback,
            } => {
                self.wait_for_stop(ctx, reason, timeout, fallback);
                return None;
            }
            Outcome::Failed(e) => Err(e),
            Outcome::FailedHalted(e) => {
                self.halted(ctx);
                Err(e)
            }
            Outcome::Suspended => {
                self.halted(ctx);
                self.state = PowerState::Suspended;
                Ok(OpReply::Done)
            }
            Outcome::FailedRunning(e) => {
                self.deferred
                    .retain(|(_, ev)| *ev != DomainEvent::Shutdown(ShutdownReason::Suspend));
                Err(e)
            }
        })
    }

    fn halted(&mut self, ctx: &mut Context<Self>) {
        self.stop_following(ctx);
        self.running = None;
        self.state = PowerState::Halted;
    }
}

impl Actor for DomainActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.slot.publish(ctx.address());
        self.publish();
        // What the guest agent reports is part of the VM's events.
        let guest = self.c.guest.subscribe();
        ctx.add_stream(futures_util::stream::unfold(guest, |mut rx| async move {
            rx.changed().await.ok().map(|()| (GuestChanged, rx))
        }));
        // No domain: what a teardown cut short left goes first.
        if self.running.is_none() {
            let c = self.c.clone();
            ctx.wait(async move { lifecycle::clear_leftovers(&c).await }.into_actor(self));
        }
        // Re-synced onto a running domain: its actors run again, and the
        // domain is followed again.
        if let Some(r) = &self.running {
            let domid = r.domid;
            let c = self.c.clone();
            ctx.wait(
                async move {
                    lifecycle::ensure_children(&c, domid).await;
                    c.env.hv.subscribe(domid).await
                }
                .into_actor(self)
                .map(|r, act, ctx| match r {
                    Ok(events) => act.follow_domain(ctx, events),
                    Err(e) => {
                        let error = crate::error::chain(&e);
                        tracing::warn!(vm = %act.c.spec.name, %error, "cannot follow the domain")
                    }
                }),
            );
        }
    }
}

/// The guest agent's metrics changed.
pub(super) struct GuestChanged;

impl StreamHandler<GuestChanged> for DomainActor {
    fn handle(&mut self, _: GuestChanged, _ctx: &mut Context<Self>) {
        self.tell();
    }

    fn finished(&mut self, _ctx: &mut Context<Self>) {}
}
