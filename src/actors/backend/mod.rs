//! Device backend actors: one per VBD and per VIF, the same shape for both.
//! Each is the toolstack's side of one device, as libxl and its hotplug
//! scripts are for xl; the backend half itself is the dom0 kernel's
//! blkback or netback (the real ones on Xen, simulated ones on the
//! simulated host: drivers/sim/backends.rs), which own the backend's
//! `state`.
//!
//! - plug (hotplug.rs): the host side (a loop device for a disk image),
//!   both trees (docs/libxl-xenstore-layout.md §3) with state 1 and
//!   `physical-device`; for a NIC, netback's `vifD.N` brought up on its
//!   bridge and `hotplug-status = connected`;
//! - then: follows the backend's state (InitWait, Connected once the guest's
//!   frontend connects...) and tells the VM's [`DeviceStates`] and the
//!   event bus;
//! - unplug: `online = 0`, Closing; when blkback/netback say Closed (or
//!   after a timeout), both trees are removed and the host side released;
//! - release (the domain is going): the same without waiting for anyone.
//!
//! A backend actor that restarts (a panic in it) re-syncs from xenstore: it
//! reads the states there and carries on from them, without rewriting the
//! trees or disturbing the guest.

mod hotplug;
mod messages;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::{
    Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler, ResponseActFuture,
    ResponseFuture, StreamHandler, WrapFuture,
};

pub use hotplug::{Hotplug, HotplugError};
pub use messages::{DeviceStatus, Release, Unplug};

use super::InjectPanic;

use super::events::{EventBus, EventClass, EventKind};
use super::supervisor::{ChildSpec, ExitSlot, Restart, Shutdown};
use crate::drivers::devices::DeviceHost;
use crate::drivers::xenstore::XsClient;
use crate::vm::layout::DeviceTrees;
use tokio::sync::watch;

/// How long an unplug waits for the frontend to close.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// xenbus states (xen/include/public/io/xenbus.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum XenbusState {
    Unknown = 0,
    Initialising = 1,
    InitWait = 2,
    Initialised = 3,
    Connected = 4,
    Closing = 5,
    Closed = 6,
    Reconfiguring = 7,
    Reconfigured = 8,
}

impl XenbusState {
    pub fn parse(s: &str) -> XenbusState {
        match s.trim() {
            "1" => Self::Initialising,
            "2" => Self::InitWait,
            "3" => Self::Initialised,
            "4" => Self::Connected,
            "5" => Self::Closing,
            "6" => Self::Closed,
            "7" => Self::Reconfiguring,
            "8" => Self::Reconfigured,
            _ => Self::Unknown,
        }
    }

    /// The name `vm.get` reports (CONTRACT.md: the state name of the backend).
    pub fn name(self) -> &'static str {
        match self {
            Self::Unknown => "Unknown",
            Self::Initialising => "Initialising",
            Self::InitWait => "InitWait",
            Self::Initialised => "Initialised",
            Self::Connected => "Connected",
            Self::Closing => "Closing",
            Self::Closed => "Closed",
            Self::Reconfiguring => "Reconfiguring",
            Self::Reconfigured => "Reconfigured",
        }
    }

    pub(crate) fn value(self) -> String {
        (self as u8).to_string()
    }
}

/// What a backend drives.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    /// "vbd" or "vif".
    pub kind: &'static str,
    /// "xvda", "0"...: the id in the VM's tree of actors.
    pub name: String,
    pub trees: DeviceTrees,
    /// What the hotplug step does on the host.
    pub hotplug: Hotplug,
}

impl DeviceSpec {
    /// Its actor's id in the VM's supervisor: "vbd:xvda", "vif:0".
    pub fn child_id(&self) -> String {
        format!("{}:{}", self.kind, self.name)
    }
}

/// A VM's device states as its backend actors last set them, by device
/// ("vbd", "xvda"): what `vm.get` reports, without a xenstore round trip.
#[derive(Debug, Clone, Default)]
pub struct DeviceStates(Arc<watch::Sender<HashMap<String, XenbusState>>>);

fn device_key(kind: &str, name: &str) -> String {
    format!("{kind}:{name}")
}

impl DeviceStates {
    pub fn set(&self, kind: &str, name: &str, state: XenbusState) {
        self.0.send_modify(|m| {
            m.insert(device_key(kind, name), state);
        });
    }

    /// Sets a state unless the device's actor already did.
    fn set_if_absent(&self, kind: &str, name: &str, state: XenbusState) {
        self.0.send_if_modified(|m| {
            let key = device_key(kind, name);
            let absent = !m.contains_key(&key);
            if absent {
                m.insert(key, state);
            }
            absent
        });
    }

    fn remove(&self, kind: &str, name: &str) {
        self.0
            .send_if_modified(|m| m.remove(&device_key(kind, name)).is_some());
    }

    /// The device's state (Unknown when no actor set one).
    pub fn get(&self, kind: &str, name: &str) -> XenbusState {
        self.0
            .borrow()
            .get(&device_key(kind, name))
            .copied()
            .unwrap_or(XenbusState::Unknown)
    }
}

/// Where a backend tells its state changes: the bus (class vbd/vif,
/// `event.subscribe`) and its VM's [`DeviceStates`].
#[derive(Debug, Clone)]
pub struct DeviceEvents {
    pub bus: EventBus,
    pub vm: uuid::Uuid,
    pub domid: crate::drivers::DomId,
    pub states: DeviceStates,
}

impl DeviceEvents {
    /// The event class and id of a device.
    pub fn class_and_id(&self, kind: &str, name: &str) -> (EventClass, String) {
        let class = if kind == "vbd" {
            EventClass::Vbd
        } else {
            EventClass::Vif
        };
        (class, format!("{}/{name}", self.vm))
    }

    /// Publishes a device's change. A plug (add) does not overwrite a
    /// state its actor has set already; a removal (del) forgets the device.
    pub fn tell(&self, kind: &str, name: &str, what: EventKind, state: XenbusState) {
        match what {
            EventKind::Add => self.states.set_if_absent(kind, name, state),
            EventKind::Del => self.states.remove(kind, name),
            _ => self.states.set(kind, name, state),
        }
        let (class, id) = self.class_and_id(kind, name);
        self.bus.publish(class, id, what, || {
            serde_json::json!({
                "vm": self.vm.to_string(),
                "device": name,
                "domid": self.domid.0,
                "state": state.name(),
            })
        });
    }
}

/// The backend actor.
#[derive(Debug)]
pub struct BackendActor {
    spec: DeviceSpec,
    xs: XsClient,
    devices: Arc<dyn DeviceHost>,
    /// The backend's state, as blkback or netback last set it.
    state: XenbusState,
    /// Unplugging or releasing: the states read meanwhile are not told.
    closing: bool,
    exit: ExitSlot,
    events: Option<DeviceEvents>,
}

impl BackendActor {
    /// The child spec: plugging (or re-syncing) happens before it counts as
    /// started. Transient: an unplugged device ends normally and is not
    /// restarted; a crashed one is.
    pub fn spec(device: DeviceSpec, xs: XsClient, devices: Arc<dyn DeviceHost>) -> ChildSpec {
        Self::spec_with_events(device, xs, devices, None)
    }

    /// Like [`BackendActor::spec`]; state changes are published on the bus.
    pub fn spec_with_events(
        device: DeviceSpec,
        xs: XsClient,
        devices: Arc<dyn DeviceHost>,
        events: Option<DeviceEvents>,
    ) -> ChildSpec {
        ChildSpec::worker_async(device.child_id(), move |exit| {
            let (device, xs, devices, events) =
                (device.clone(), xs.clone(), devices.clone(), events.clone());
            async move {
                let state = plug_or_resync(&xs, &devices, &device).await.map_err(|e| {
                    let mut err =
                        crate::actors::supervisor::StartError::new(crate::error::chain(&e));
                    if e.is_config() {
                        err = err.config();
                    }
                    err
                })?;
                Ok(BackendActor {
                    spec: device,
                    xs,
                    devices,
                    state,
                    closing: false,
                    exit,
                    events,
                })
            }
        })
        .restart(Restart::Transient)
        .shutdown(Shutdown::Timeout(CLOSE_TIMEOUT + Duration::from_secs(2)))
    }
}

/// Plugs the device (a fresh plug) or finishes what a restart cut short;
/// returns the backend's state.
async fn plug_or_resync(
    xs: &XsClient,
    devices: &Arc<dyn DeviceHost>,
    d: &DeviceSpec,
) -> Result<XenbusState, HotplugError> {
    if hotplug::backend_state(xs, d).await?.is_some() {
        hotplug::resync(xs, devices, d).await?;
    } else {
        hotplug::plug(xs, devices, d).await?;
    }
    Ok(hotplug::backend_state(xs, d)
        .await?
        .unwrap_or(XenbusState::Unknown))
}

impl BackendActor {
    /// Keeps the current state in the VM's [`DeviceStates`] (no event).
    fn record_state(&self) {
        if let Some(events) = &self.events {
            events
                .states
                .set(self.spec.kind, &self.spec.name, self.state);
        }
    }

    /// blkback or netback moved: tell it.
    fn backend_changed(&mut self, state: XenbusState) {
        if state == self.state || self.closing {
            return;
        }
        tracing::debug!(device = %self.spec.trees.backend, state = state.name(), "backend state");
        self.state = state;
        if let Some(events) = &self.events {
            events.tell(self.spec.kind, &self.spec.name, EventKind::Mod, state);
        }
    }

    /// Follows the backend's state for as long as the actor lives: each
    /// watch event becomes the state read after it (Unknown once the node
    /// is gone).
    fn follow(&self, ctx: &mut Context<Self>) {
        let path = format!("{}/state", self.spec.trees.backend);
        let xs = self.xs.clone();
        ctx.spawn(
            async move { xs.watch(&path).await.map(|w| (w, xs, path)) }
                .into_actor(self)
                .map(|r, act, ctx| match r {
                    Ok(start) => {
                        ctx.add_stream(futures_util::stream::unfold(
                            start,
                            |(mut w, xs, path)| async move {
                                w.next().await?;
                                let s = xs.read_opt(&path).await.ok().flatten();
                                Some((
                                    s.map_or(XenbusState::Unknown, |s| XenbusState::parse(&s)),
                                    (w, xs, path),
                                ))
                            },
                        ));
                    }
                    Err(e) => {
                        act.exit
                            .error(format!("cannot watch {}: {e}", act.spec.trees.backend));
                        ctx.stop();
                    }
                }),
        );
    }

    /// Closes the device (`graceful`: with the guest) and ends the actor.
    fn close(&mut self, graceful: bool) -> ResponseActFuture<Self, Result<(), String>> {
        let (xs, devices, spec) = (self.xs.clone(), self.devices.clone(), self.spec.clone());
        self.closing = true;
        self.state = XenbusState::Closing;
        self.record_state();
        Box::pin(
            async move {
                if graceful {
                    let closed = hotplug::unplug(&xs, &devices, &spec).await?;
                    if !closed {
                        tracing::warn!(backend = %spec.trees.backend, "the device did not close in time; removed anyway");
                    }
                } else {
                    hotplug::release(&xs, &devices, &spec).await?;
                }
                Ok(())
            }
            .into_actor(self)
            .map(|r: Result<(), HotplugError>, act, ctx| {
                act.state = XenbusState::Closed;
                act.record_state();
                // Unplugged: this actor's work is done (a normal exit).
                ctx.stop();
                r.map_err(|e| crate::error::chain(&e))
            }),
        )
    }
}

impl Actor for BackendActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Plugged, or re-synced from xenstore after a restart.
        self.record_state();
        self.follow(ctx);
    }
}

impl StreamHandler<XenbusState> for BackendActor {
    fn handle(&mut self, state: XenbusState, _ctx: &mut Context<Self>) {
        self.backend_changed(state);
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        if !self.closing {
            self.exit.error("the xenstore connection closed");
            ctx.stop();
        }
    }
}

impl Handler<DeviceStatus> for BackendActor {
    type Result = ResponseFuture<(XenbusState, XenbusState)>;

    /// The backend's state as last seen, and the frontend's, read now.
    fn handle(&mut self, _msg: DeviceStatus, _ctx: &mut Context<Self>) -> Self::Result {
        let (xs, state) = (self.xs.clone(), self.state);
        let path = format!("{}/state", self.spec.trees.frontend);
        Box::pin(async move {
            let front = xs.read_opt(&path).await.ok().flatten();
            (
                state,
                front.map_or(XenbusState::Unknown, |s| XenbusState::parse(&s)),
            )
        })
    }
}

impl Handler<InjectPanic> for BackendActor {
    type Result = ();

    fn handle(&mut self, _msg: InjectPanic, _ctx: &mut Context<Self>) {
        panic!(
            "injected panic in backend {}:{}",
            self.spec.kind, self.spec.name
        );
    }
}

impl Handler<Unplug> for BackendActor {
    type Result = ResponseActFuture<Self, Result<(), String>>;

    fn handle(&mut self, _msg: Unplug, _ctx: &mut Context<Self>) -> Self::Result {
        self.close(true)
    }
}

impl Handler<Release> for BackendActor {
    type Result = ResponseActFuture<Self, Result<(), String>>;

    fn handle(&mut self, _msg: Release, _ctx: &mut Context<Self>) -> Self::Result {
        self.close(false)
    }
}

/// Releases a device whose actor is not there to do it (it died and was
/// not restarted): what [`Release`] does.
pub async fn release_orphan(
    xs: &XsClient,
    devices: &Arc<dyn DeviceHost>,
    device: &DeviceSpec,
) -> Result<(), HotplugError> {
    hotplug::release(xs, devices, device).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_states_keep_what_the_actor_set() {
        let states = DeviceStates::default();
        let events = DeviceEvents {
            bus: EventBus::new(16),
            vm: uuid::Uuid::nil(),
            domid: crate::drivers::DomId(1),
            states: states.clone(),
        };
        assert_eq!(states.get("vbd", "xvda"), XenbusState::Unknown);
        // The actor re-synced to Connected before its plug was told.
        states.set("vbd", "xvda", XenbusState::Connected);
        events.tell("vbd", "xvda", EventKind::Add, XenbusState::InitWait);
        assert_eq!(states.get("vbd", "xvda"), XenbusState::Connected);
        events.tell("vif", "0", EventKind::Add, XenbusState::InitWait);
        assert_eq!(states.get("vif", "0"), XenbusState::InitWait);
        events.tell("vif", "0", EventKind::Mod, XenbusState::Connected);
        assert_eq!(states.get("vif", "0"), XenbusState::Connected);
        events.tell("vbd", "xvda", EventKind::Del, XenbusState::Closed);
        assert_eq!(states.get("vbd", "xvda"), XenbusState::Unknown);
        assert_eq!(states.get("vif", "0"), XenbusState::Connected);
    }
}
