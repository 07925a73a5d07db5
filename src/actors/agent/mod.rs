//! The guest-agent channel actor: watches what a running guest's agent
//! reports in xenstore (data/ and attr/ under its home, as xe-guest-utilities
//! and the Windows PV tools write them) and keeps the VM's guest metrics,
//! which `vm.get` shows.
//!
//! What the guest writes is untrusted: only known keys are read (the IPs
//! only of the VM's own NICs), values are cut to [`MAX_VALUE`] characters,
//! numbers that do not parse are ignored, and a guest that writes without
//! pause costs at most one refresh in flight and one queued.
//!
//! Transient: after a panic it is restarted alone and reads everything
//! again; the domain's teardown removes it and clears the metrics.

use std::collections::BTreeMap;
use std::sync::Arc;

use actix::{
    Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler, StreamHandler, WrapFuture,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::supervisor::{ChildSpec, ExitSlot, Restart};
use super::InjectPanic;
use crate::drivers::xenstore::{XsClient, XsClientError};
use crate::drivers::DomId;
use crate::vm::layout;

/// The supervisor id of a VM's guest-agent actor.
pub const AGENT_ID: &str = "agent";

/// The longest value kept from a guest key.
pub const MAX_VALUE: usize = 256;

/// What the guest agent reports (empty when the VM does not run or has no agent).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestMetrics {
    /// Whether an agent has reported (data/updated exists).
    pub agent: bool,
    pub os_name: Option<String>,
    pub os_distro: Option<String>,
    /// "major.minor", when both are reported.
    pub os_version: Option<String>,
    pub os_uname: Option<String>,
    pub memory_total_kib: Option<u64>,
    pub memory_free_kib: Option<u64>,
    /// "0/ipv4/0" → address, as the agent reports under attr/vif.
    pub ips: BTreeMap<String, String>,
    /// data/updated, as the agent wrote it.
    pub updated: Option<String>,
}

/// The agent actor.
#[derive(Debug)]
pub struct AgentActor {
    domid: DomId,
    /// The devids of the VM's NICs.
    nics: Vec<u32>,
    xs: XsClient,
    metrics: Arc<watch::Sender<GuestMetrics>>,
    /// A refresh is running.
    refreshing: bool,
    /// Something changed while it ran: refresh again after it.
    dirty: bool,
    exit: ExitSlot,
}

impl AgentActor {
    pub fn spec(
        domid: DomId,
        nics: Vec<u32>,
        xs: XsClient,
        metrics: Arc<watch::Sender<GuestMetrics>>,
    ) -> ChildSpec {
        ChildSpec::worker(AGENT_ID, move |exit| {
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

    fn refresh(&mut self, ctx: &mut Context<Self>) {
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

fn cut(mut s: String) -> String {
    if s.len() > MAX_VALUE {
        let mut end = MAX_VALUE;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// Reads the agent's keys.
pub async fn read_metrics(
    xs: &XsClient,
    domid: DomId,
    nics: &[u32],
) -> Result<GuestMetrics, XsClientError> {
    let home = layout::home(domid);
    let get = |key: String| {
        let xs = xs.clone();
        async move {
            match xs.read_opt(&key).await {
                Ok(v) => Ok(v.map(cut)),
                // Permission denied and the like: the guest made it unreadable.
                Err(XsClientError::Xs(_)) => Ok(None),
                Err(e) => Err(e),
            }
        }
    };
    let data = |k: &str| get(format!("{home}/data/{k}"));
    let mut m = GuestMetrics {
        updated: data("updated").await?,
        os_name: data("os_name").await?,
        os_distro: data("os_distro").await?,
        os_uname: data("os_uname").await?,
        memory_total_kib: data("meminfo_total")
            .await?
            .and_then(|v| v.trim().parse().ok()),
        memory_free_kib: data("meminfo_free")
            .await?
            .and_then(|v| v.trim().parse().ok()),
        ..GuestMetrics::default()
    };
    m.agent = m.updated.is_some();
    if let (Some(major), Some(minor)) = (data("os_majorver").await?, data("os_minorver").await?) {
        m.os_version = Some(format!("{major}.{minor}"));
    }
    for devid in nics {
        for family in ["ipv4", "ipv6"] {
            if let Some(ip) = get(format!("{home}/attr/vif/{devid}/{family}/0")).await? {
                m.ips.insert(format!("{devid}/{family}/0"), ip);
            }
        }
    }
    Ok(m)
}

impl Actor for AgentActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let home = layout::home(self.domid);
        for sub in ["data", "attr"] {
            let (xs, path) = (self.xs.clone(), format!("{home}/{sub}"));
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

impl StreamHandler<()> for AgentActor {
    fn handle(&mut self, _: (), ctx: &mut Context<Self>) {
        self.refresh(ctx);
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        self.exit.error("the xenstore connection closed");
        ctx.stop();
    }
}

impl Handler<InjectPanic> for AgentActor {
    type Result = ();

    fn handle(&mut self, _msg: InjectPanic, _ctx: &mut Context<Self>) {
        panic!(
            "injected panic in the guest-agent actor of domain {}",
            self.domid
        );
    }
}

#[cfg(test)]
mod tests {
    use super::cut;

    #[test]
    fn long_values_are_cut_on_a_char_boundary() {
        assert_eq!(cut("short".into()), "short");
        let long = "é".repeat(300);
        let c = cut(long);
        assert!(c.len() <= super::MAX_VALUE && c.chars().all(|ch| ch == 'é'));
    }
}
