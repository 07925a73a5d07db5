//! The agent actor's state and its life.

use std::sync::Arc;

use actix::{Actor, ActorContext, ActorFutureExt, AsyncContext, Context, WrapFuture};
use tokio::sync::watch;

use super::{read_metrics, GuestMetrics};
use crate::actors::child::ChildId;
use crate::actors::supervisor::{ChildSpec, ExitSlot, Restart};
use crate::drivers::xenstore::{XsClient, XsClientError};
use crate::drivers::DomId;
use crate::vm::layout;

/// The agent actor.
#[derive(Debug)]
pub struct AgentActor {
    pub(super) domid: DomId,
    /// The devids of the VM's NICs.
    nics: Vec<u32>,
    xs: XsClient,
    metrics: Arc<watch::Sender<GuestMetrics>>,
    /// A refresh is running.
    refreshing: bool,
    /// Something changed while it ran: refresh again after it.
    dirty: bool,
    pub(super) exit: ExitSlot,
}

impl AgentActor {
    pub fn spec(
        domid: DomId,
        nics: Vec<u32>,
        xs: XsClient,
        metrics: Arc<watch::Sender<GuestMetrics>>,
    ) -> ChildSpec {
        ChildSpec::worker(ChildId::AGENT, move |exit| {
            Ok(AgentActor {
                domid,
                nics: nics.clone(),
                xs: xs.clone(),
                metrics: metrics.clone(),
                refreshing: false,
                dirty: false,
                exit,
            })
        })
        .restart(Restart::Transient)
    }

    pub(super) fn refresh(&mut self, ctx: &mut Context<Self>) {
        if self.refreshing {
            self.dirty = true;
            return;
        }
        self.refreshing = true;
        let (xs, domid, nics) = (self.xs.clone(), self.domid, self.nics.clone());
        ctx.spawn(
            async move { read_metrics(&xs, domid, &nics).await }
                .into_actor(self)
                .map(|r, act, ctx| {
                    act.refreshing = false;
                    match r {
                        Ok(m) => {
                            act.metrics.send_if_modified(|old| {
                                let changed = *old != m;
                                *old = m;
                                changed
                            });
                        }
                        // The connection is being established again: its
                        // watches fire once it is, and this reads again.
                        Err(XsClientError::Lost) => {}
                        Err(e) => {
                            act.exit.error(format!("cannot read the guest's keys: {e}"));
                            ctx.stop();
                            return;
                        }
                    }
                    if std::mem::take(&mut act.dirty) {
                        act.refresh(ctx);
                    }
                }),
        );
    }
}

impl Actor for AgentActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        for dir in layout::GUEST_AGENT_DIRS {
            let (xs, path) = (self.xs.clone(), layout::guest_dir(self.domid, dir));
            // A watch fires once when set, then on every change below it.
            ctx.spawn(
                async move { xs.watch(&path).await }
                    .into_actor(self)
                    .map(|r, act, ctx| match r {
                        Ok(w) => {
                            ctx.add_stream(futures_util::stream::unfold(w, |mut w| async move {
                                w.next().await.map(|_| ((), w))
                            }));
                        }
                        Err(e) => {
                            act.exit
                                .error(format!("cannot watch the guest's keys: {e}"));
                            ctx.stop();
                        }
                    }),
            );
        }
    }
}
