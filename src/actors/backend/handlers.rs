//! What a backend actor does with its messages and its state stream.

use actix::{
    ActorContext, ActorFutureExt, Context, Handler, ResponseActFuture, ResponseFuture,
    StreamHandler, WrapFuture,
};

use super::hotplug::{self, HotplugError};
use super::messages::{DeviceStatus, Release, Unplug};
use super::state::BackendActor;
use crate::xs::XenbusState;

impl BackendActor {
    /// Closes the device (`graceful`: with the guest) and ends the actor.
    /// Answers whether the guest closed it in time (always true when not
    /// graceful: nobody is waited for).
    fn close(&mut self, graceful: bool) -> ResponseActFuture<Self, Result<bool, HotplugError>> {
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
                    Ok(closed)
                } else {
                    hotplug::release(&xs, &devices, &spec).await?;
                    Ok(true)
                }
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
        let path = self.spec.trees.frontend_node("state");
        Box::pin(async move {
            let front = xs.read_opt(&path).await.ok().flatten();
            (
                state,
                front.map_or(XenbusState::Unknown, |s| XenbusState::parse(&s)),
            )
        })
    }
}

impl Handler<Unplug> for BackendActor {
    type Result = ResponseActFuture<Self, Result<bool, HotplugError>>;

    fn handle(&mut self, _msg: Unplug, _ctx: &mut Context<Self>) -> Self::Result {
        self.close(true)
    }
}

impl Handler<Release> for BackendActor {
    type Result = ResponseActFuture<Self, Result<(), HotplugError>>;

    fn handle(&mut self, _msg: Release, _ctx: &mut Context<Self>) -> Self::Result {
        Box::pin(self.close(false).map(|r, _, _| r.map(drop)))
    }
}

crate::actors::panics_on_injection!(BackendActor, |a| format!("backend {}", a.spec.child_id()));
