//! The backend actor's state, its start (plug or re-sync) and its life.

use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, ActorContext, ActorFutureExt, AsyncContext, Context, WrapFuture};

use super::device_states::DeviceEvents;
use super::hotplug::{self, HotplugError};
use super::{DeviceSpec, CLOSE_TIMEOUT};
use crate::actors::events::EventKind;
use crate::actors::supervisor::{ChildSpec, ExitSlot, Restart, Shutdown, StartError};
use crate::drivers::devices::DeviceHost;
use crate::drivers::xenstore::XsClient;
use crate::xs::XenbusState;

/// The backend actor.
#[derive(Debug)]
pub struct BackendActor {
    pub(super) spec: DeviceSpec,
    pub(super) xs: XsClient,
    pub(super) devices: Arc<dyn DeviceHost>,
    /// The backend's state, as blkback or netback last set it.
    pub(super) state: XenbusState,
    /// Unplugging or releasing: the states read meanwhile are not told.
    pub(super) closing: bool,
    pub(super) exit: ExitSlot,
    pub(super) events: Option<DeviceEvents>,
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
        ChildSpec::worker_async(device.child_id().to_string(), move |exit| {
            let (device, xs, devices, events) =
                (device.clone(), xs.clone(), devices.clone(), events.clone());
            async move {
                let state = plug_or_resync(&xs, &devices, &device).await.map_err(|e| {
                    let err = StartError::new(crate::error::chain(&e));
                    if e.is_config() {
                        err.config()
                    } else {
                        err
                    }
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
    /// Keeps the current state in the VM's device states (no event).
    pub(super) fn record_state(&self) {
        if let Some(events) = &self.events {
            events
                .states
                .set(self.spec.kind, &self.spec.name, self.state);
        }
    }

    /// blkback or netback moved: tell it.
    pub(super) fn backend_changed(&mut self, state: XenbusState) {
        if state == self.state || self.closing {
            return;
        }
        tracing::debug!(device = %self.spec.trees.backend, state = %state, "backend state");
        self.state = state;
        if let Some(events) = &self.events {
            events.tell(self.spec.kind, &self.spec.name, EventKind::Mod, state);
        }
    }

    /// Follows the backend's state for as long as the actor lives: each
    /// watch event becomes the state read after it (Unknown once the node
    /// is gone).
    fn follow(&self, ctx: &mut Context<Self>) {
        let path = self.spec.trees.backend_node("state");
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
}

impl Actor for BackendActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Plugged, or re-synced from xenstore after a restart.
        self.record_state();
        self.follow(ctx);
    }
}
