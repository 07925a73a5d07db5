//! Device backend actors: one per VBD and per VIF, the same shape for both.
//!
//! What blkback/netback plus the hotplug step do, as the toolstack sees it:
//! - plug: write both trees (docs/libxl-xenstore-layout.md §3) in one
//!   transaction with state 1; do the hotplug step (on the simulated host:
//!   record `physical-device` and `hotplug-status=connected`); go to
//!   InitWait (2); when the frontend is Initialised (3), go to Connected (4);
//! - unplug: `online=0`, Closing (5); when the frontend is Closed (6) (or
//!   after a timeout), Closed (6); remove both trees.
//!
//! A backend actor that restarts (a panic in it) re-syncs from xenstore: it
//! reads the states there and carries on from them, without rewriting the
//! trees or disturbing the guest.

mod messages;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::{
    Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler, MessageResult,
    ResponseActFuture, StreamHandler, WrapFuture,
};

pub use messages::{DeviceStatus, Unplug};

use super::InjectPanic;

use super::events::{EventBus, EventClass, EventKind};
use super::supervisor::{ChildSpec, ExitSlot, Restart, Shutdown};
use crate::drivers::xenstore::{XsClient, XsClientError};
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

    fn value(self) -> String {
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
    /// What the hotplug step records in the backend (physical-device etc.).
    pub hotplug: Vec<(String, String)>,
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
    state: XenbusState,
    frontend: XenbusState,
    exit: ExitSlot,
    events: Option<DeviceEvents>,
}

impl BackendActor {
    /// The child spec: plugging (or re-syncing) happens before it counts as
    /// started. Transient: an unplugged device ends normally and is not
    /// restarted; a crashed one is.
    pub fn spec(device: DeviceSpec, xs: XsClient) -> ChildSpec {
        Self::spec_with_events(device, xs, None)
    }

    /// Like [`BackendActor::spec`]; state changes are published on the bus.
    pub fn spec_with_events(
        device: DeviceSpec,
        xs: XsClient,
        events: Option<DeviceEvents>,
    ) -> ChildSpec {
        let id = format!("{}:{}", device.kind, device.name);
        ChildSpec::worker_async(id, move |exit| {
            let (device, xs, events) = (device.clone(), xs.clone(), events.clone());
            async move {
                let state = plug_or_resync(&xs, &device).await.map_err(|e| {
                    crate::actors::supervisor::StartError::new(crate::error::chain(&e))
                })?;
                Ok(BackendActor {
                    spec: device,
                    xs,
                    state,
                    frontend: XenbusState::Unknown,
                    exit,
                    events,
                })
            }
        })
        .restart(Restart::Transient)
        .shutdown(Shutdown::Timeout(CLOSE_TIMEOUT + Duration::from_secs(2)))
    }
}

/// Writes the trees (a fresh plug) or reads where the handshake is (a
/// restart); returns the backend's state.
async fn plug_or_resync(xs: &XsClient, d: &DeviceSpec) -> Result<XenbusState, XsClientError> {
    let state_path = format!("{}/state", d.trees.backend);
    if let Some(s) = xs.read_opt(&state_path).await? {
        return Ok(XenbusState::parse(&s));
    }
    crate::vm::layout::apply(xs, &d.trees.entries).await?;
    // The hotplug step, then blkback/netback: InitWait.
    for (k, v) in &d.hotplug {
        xs.write(&format!("{}/{k}", d.trees.backend), v).await?;
    }
    xs.write(&state_path, XenbusState::InitWait.value()).await?;
    Ok(XenbusState::InitWait)
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

    fn set_state(&mut self, state: XenbusState, ctx: &mut Context<Self>) {
        self.state = state;
        if let Some(events) = &self.events {
            events.tell(self.spec.kind, &self.spec.name, EventKind::Mod, state);
        }
        let xs = self.xs.clone();
        let path = format!("{}/state", self.spec.trees.backend);
        ctx.spawn(
            async move { xs.write(&path, state.value()).await }
                .into_actor(self)
                .map(|r, act, ctx| {
                    if let Err(e) = r {
                        act.exit.error(format!("cannot set the backend state: {e}"));
                        ctx.stop();
                    }
                }),
        );
    }

    /// The frontend moved: follow it.
    fn frontend_changed(&mut self, front: XenbusState, ctx: &mut Context<Self>) {
        self.frontend = front;
        match (self.state, front) {
            (XenbusState::InitWait, XenbusState::Initialised | XenbusState::Connected) => {
                self.set_state(XenbusState::Connected, ctx);
            }
            // The frontend closed on its own (the guest unplugged it): close too.
            (XenbusState::Connected, XenbusState::Closing) => {
                self.set_state(XenbusState::Closing, ctx)
            }
            (XenbusState::Closing, XenbusState::Closed) => self.set_state(XenbusState::Closed, ctx),
            _ => {}
        }
    }
}

impl Actor for BackendActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Plugged, or re-synced from xenstore after a restart.
        self.record_state();
        let xs = self.xs.clone();
        let path = format!("{}/state", self.spec.trees.frontend);
        // Follow the frontend's state for as long as the actor lives: each
        // watch event becomes the state read after it.
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
                        act.exit.error(format!("cannot watch the frontend: {e}"));
                        ctx.stop();
                    }
                }),
        );
    }
}

impl StreamHandler<XenbusState> for BackendActor {
    fn handle(&mut self, front: XenbusState, ctx: &mut Context<Self>) {
        self.frontend_changed(front, ctx);
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        if self.state != XenbusState::Closed {
            self.exit.error("the xenstore connection closed");
        }
        ctx.stop();
    }
}

impl Handler<DeviceStatus> for BackendActor {
    type Result = MessageResult<DeviceStatus>;

    fn handle(&mut self, _msg: DeviceStatus, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult((self.state, self.frontend))
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
        let xs = self.xs.clone();
        let trees = self.spec.trees.clone();
        self.state = XenbusState::Closing;
        self.record_state();
        Box::pin(
            async move {
                let back = trees.backend.clone();
                xs.write(&format!("{back}/online"), "0").await.map_err(|e| e.to_string())?;
                xs.write(&format!("{back}/state"), XenbusState::Closing.value()).await.map_err(|e| e.to_string())?;
                let closed = wait_closed(&xs, &trees.frontend).await;
                xs.write(&format!("{back}/state"), XenbusState::Closed.value()).await.map_err(|e| e.to_string())?;
                xs.rm(&trees.frontend).await.map_err(|e| e.to_string())?;
                xs.rm(&back).await.map_err(|e| e.to_string())?;
                if !closed {
                    tracing::warn!(backend = %back, "the frontend did not close in time; removed anyway");
                }
                Ok(())
            }
            .into_actor(self)
            .map(|r, act, ctx| {
                act.state = XenbusState::Closed;
                act.record_state();
                // Unplugged: this actor's work is done (a normal exit).
                ctx.stop();
                r
            }),
        )
    }
}

/// Waits (bounded) for the frontend to reach Closed (or vanish).
async fn wait_closed(xs: &XsClient, frontend: &str) -> bool {
    let path = format!("{frontend}/state");
    let Ok(mut watch) = xs.watch(&path).await else {
        return false;
    };
    let deadline = tokio::time::Instant::now() + CLOSE_TIMEOUT;
    loop {
        match xs.read_opt(&path).await {
            Ok(None) => return true,
            Ok(Some(s)) if XenbusState::parse(&s) == XenbusState::Closed => return true,
            Err(_) => return false,
            _ => {}
        }
        if tokio::time::timeout_at(deadline, watch.next())
            .await
            .is_err()
        {
            return false;
        }
    }
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
