//! The supervisor actor's state and its restart logic.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use actix::{ActorContext, ActorFutureExt, AsyncContext, Context, WrapFuture};
use tokio::sync::oneshot;

use super::messages::RetryRestart;
use super::runner::{run_start, stop_child, wait_exit, Started, StopTicket};
use super::spec::{
    ChildSpec, ExitReason, ExitSlot, Restart, Shutdown, StartError, Strategy, SupervisorFlags,
};
use super::SupervisorError;
use crate::actors::events::{EventBus, EventClass, EventKind};

/// Where a supervisor is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Starting,
    Running,
    ShuttingDown,
    Stopped,
}

#[derive(Debug)]
pub(crate) enum ChildState {
    Stopped,
    Starting,
    Running(Started),
}

#[derive(Debug)]
pub(crate) struct Child {
    pub(crate) spec: ChildSpec,
    pub(crate) state: ChildState,
    pub(crate) incarnation: u64,
    pub(crate) restarts: u32,
    pub(crate) last_exit: Option<ExitReason>,
    pub(crate) started_at: Option<SystemTime>,
}

/// A supervisor: starts its children in order, restarts them by its
/// strategy and restart types, gives up past its restart intensity, and
/// stops them in reverse order. It is itself supervisable.
pub struct Supervisor {
    pub(crate) name: String,
    pub(crate) flags: SupervisorFlags,
    /// Children in start order (the key is the order of insertion).
    pub(crate) children: BTreeMap<u64, Child>,
    pub(crate) index: HashMap<String, u64>,
    next_seq: u64,
    next_incarnation: u64,
    restart_log: VecDeque<Instant>,
    pub(crate) exit: ExitSlot,
    pub(crate) init: Option<oneshot::Sender<Result<(), StartError>>>,
    pub(crate) initial: Vec<ChildSpec>,
    pub(crate) phase: Phase,
    pub(crate) started_at: SystemTime,
    /// Where this supervisor publishes its address when it starts.
    pub(crate) publish: Option<crate::actors::slot::AddrSlot<Supervisor>>,
    /// Where its children's exits and restarts are told (`event.subscribe`).
    pub(crate) events: Option<EventBus>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("name", &self.name)
            .field("flags", &self.flags)
            .field("children", &self.children.len())
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

/// One child to (re)start: its key, id, start function and placement.
type StartPlan = Vec<(u64, ChildSpec)>;

pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Supervisor {
    pub(crate) fn new(
        name: String,
        flags: SupervisorFlags,
        initial: Vec<ChildSpec>,
        exit: ExitSlot,
        init: oneshot::Sender<Result<(), StartError>>,
    ) -> Self {
        Self {
            name,
            flags,
            children: BTreeMap::new(),
            index: HashMap::new(),
            next_seq: 0,
            next_incarnation: 0,
            restart_log: VecDeque::new(),
            exit,
            init: Some(init),
            initial,
            phase: Phase::Starting,
            started_at: SystemTime::now(),
            publish: None,
            events: None,
        }
    }

    /// Tells subscribers a child exited or was restarted.
    fn tell(&self, seq: u64, state: &'static str) {
        let (Some(bus), Some(child)) = (&self.events, self.children.get(&seq)) else {
            return;
        };
        bus.publish(
            EventClass::Supervisor,
            format!("{}/{}", self.name, child.spec.id),
            EventKind::Mod,
            || {
                serde_json::json!({
                    "supervisor": self.name,
                    "child": child.spec.id,
                    "state": state,
                    "restarts": child.restarts,
                    "last_exit": child.last_exit.as_ref().map(ToString::to_string),
                })
            },
        );
    }

    /// Records a new child spec, stopped, after all others.
    pub(crate) fn add_spec(&mut self, spec: ChildSpec) -> Result<u64, SupervisorError> {
        if self.index.contains_key(&spec.id) {
            return Err(SupervisorError::AlreadyExists(spec.id));
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.index.insert(spec.id.clone(), seq);
        self.children.insert(
            seq,
            Child {
                spec,
                state: ChildState::Stopped,
                incarnation: 0,
                restarts: 0,
                last_exit: None,
                started_at: None,
            },
        );
        Ok(seq)
    }

    pub(crate) fn remove_seq(&mut self, seq: u64) -> Option<Child> {
        let child = self.children.remove(&seq)?;
        self.index.remove(&child.spec.id);
        Some(child)
    }

    /// Takes what is needed to stop a running child; it counts as stopped
    /// from now on, so its monitor's late report is ignored.
    pub(crate) fn take_ticket(&mut self, seq: u64) -> Option<StopTicket> {
        let child = self.children.get_mut(&seq)?;
        match std::mem::replace(&mut child.state, ChildState::Stopped) {
            ChildState::Running(started) => Some(ticket(started, &child.spec)),
            other => {
                child.state = other;
                None
            }
        }
    }

    /// Makes a freshly started child the current incarnation and watches it.
    pub(crate) fn install(&mut self, seq: u64, started: Started, ctx: &mut Context<Self>) {
        let Some(child) = self.children.get_mut(&seq) else {
            return; // removed meanwhile: dropping `started` kills it.
        };
        self.next_incarnation += 1;
        let incarnation = self.next_incarnation;
        child.incarnation = incarnation;
        child.started_at = Some(SystemTime::now());
        let exit = started.exit.clone();
        child.state = ChildState::Running(started);
        ctx.spawn(
            wait_exit(exit)
                .into_actor(self)
                .map(move |reason, act, ctx| {
                    act.child_exited(seq, incarnation, reason, ctx);
                }),
        );
    }

    /// A child's current incarnation ended by itself.
    fn child_exited(
        &mut self,
        seq: u64,
        incarnation: u64,
        reason: ExitReason,
        ctx: &mut Context<Self>,
    ) {
        let Some(child) = self.children.get_mut(&seq) else {
            return;
        };
        if child.incarnation != incarnation || !matches!(child.state, ChildState::Running(_)) {
            return; // an incarnation this supervisor stopped itself
        }
        child.state = ChildState::Stopped;
        child.last_exit = Some(reason.clone());
        let id = child.spec.id.clone();
        let restart = child.spec.restart;
        if reason.is_abnormal() {
            tracing::warn!(supervisor = %self.name, child = %id, %reason, "child exited");
        } else {
            tracing::debug!(supervisor = %self.name, child = %id, %reason, "child exited");
        }
        self.tell(seq, "exited");
        if self.phase != Phase::Running {
            return;
        }
        if !restart.should_restart(&reason) {
            if restart == Restart::Temporary {
                self.remove_seq(seq);
            }
            return;
        }
        if !self.record_restart() {
            self.give_up(format!("child {id} exited ({reason})"), ctx);
            return;
        }
        let seqs: Vec<u64> = match self.flags.strategy {
            Strategy::OneForOne => vec![seq],
            Strategy::OneForAll => self.children.keys().copied().collect(),
            Strategy::RestForOne => self.children.range(seq..).map(|(k, _)| *k).collect(),
        };
        self.restart_children(seqs, ctx);
    }

    /// Counts one restart; false when that exceeds the restart intensity.
    fn record_restart(&mut self) -> bool {
        let now = Instant::now();
        while let Some(first) = self.restart_log.front() {
            if now.duration_since(*first) > self.flags.period {
                self.restart_log.pop_front();
            } else {
                break;
            }
        }
        self.restart_log.push_back(now);
        self.restart_log.len() <= self.flags.max_restarts as usize
    }

    /// Past the restart intensity: stop everything and exit with an error.
    fn give_up(&mut self, cause: String, ctx: &mut Context<Self>) {
        let reason = format!(
            "reached maximum restart intensity ({} restarts in {:?}): {cause}",
            self.flags.max_restarts, self.flags.period
        );
        tracing::error!(supervisor = %self.name, %reason, "supervisor giving up");
        self.exit.set(ExitReason::Error(reason));
        ctx.stop();
    }

    /// Stops the running children among `seqs` (reverse order), then starts
    /// them again (in order). Temporary children stopped here are removed.
    /// Runs with the mailbox paused, so the tree changes one step at a time.
    pub(crate) fn restart_children(&mut self, seqs: Vec<u64>, ctx: &mut Context<Self>) {
        let mut tickets = Vec::new();
        for seq in seqs.iter().rev() {
            if let Some(t) = self.take_ticket(*seq) {
                tickets.push((*seq, t));
            }
        }
        let mut temporaries = Vec::new();
        let mut plan: StartPlan = Vec::new();
        for seq in &seqs {
            let Some(child) = self.children.get_mut(seq) else {
                continue;
            };
            if child.spec.restart == Restart::Temporary {
                temporaries.push(*seq);
            } else if matches!(child.state, ChildState::Stopped) {
                child.state = ChildState::Starting;
                plan.push((*seq, child.spec.clone()));
            }
        }
        let work = async move {
            let mut stopped = Vec::with_capacity(tickets.len());
            for (seq, t) in tickets {
                stopped.push((seq, stop_child(t).await));
            }
            let (started, failed) = start_in_order(plan).await;
            (stopped, started, failed)
        };
        ctx.wait(work.into_actor(self).map(move |(stopped, started, failed), act, ctx| {
            for (seq, reason) in stopped {
                if let Some(child) = act.children.get_mut(&seq) {
                    child.last_exit = Some(reason);
                }
            }
            for seq in temporaries {
                act.remove_seq(seq);
            }
            for (seq, started) in started {
                if let Some(child) = act.children.get_mut(&seq) {
                    child.restarts += 1;
                }
                act.install(seq, started, ctx);
                act.tell(seq, "restarted");
            }
            if let Some((failed_seq, error, rest)) = failed {
                let mut retry = vec![failed_seq];
                if let Some(child) = act.children.get_mut(&failed_seq) {
                    child.state = ChildState::Stopped;
                    child.last_exit = Some(ExitReason::StartFailed(error.to_string()));
                    tracing::warn!(supervisor = %act.name, child = %child.spec.id, %error, "restart failed");
                }
                for seq in rest {
                    if let Some(child) = act.children.get_mut(&seq) {
                        child.state = ChildState::Stopped;
                        retry.push(seq);
                    }
                }
                ctx.notify(RetryRestart(retry));
            }
        }));
    }

    /// A restart that failed is tried again; each try counts against the
    /// restart intensity (as in OTP).
    pub(crate) fn retry_restart(&mut self, seqs: Vec<u64>, ctx: &mut Context<Self>) {
        if self.phase != Phase::Running {
            return;
        }
        if !self.record_restart() {
            let ids: Vec<&str> = seqs
                .iter()
                .filter_map(|s| self.children.get(s))
                .map(|c| c.spec.id.as_str())
                .collect();
            self.give_up(format!("could not restart {}", ids.join(", ")), ctx);
            return;
        }
        let seqs = seqs
            .into_iter()
            .filter(|s| {
                matches!(
                    self.children.get(s).map(|c| &c.state),
                    Some(ChildState::Stopped)
                )
            })
            .collect();
        self.restart_children(seqs, ctx);
    }

    /// Starts the initial children in order; the first failure stops the
    /// ones already started (reverse order) and fails the supervisor's start.
    pub(crate) fn start_initial(&mut self, ctx: &mut Context<Self>) {
        let mut plan: StartPlan = Vec::new();
        for spec in std::mem::take(&mut self.initial) {
            match self.add_spec(spec) {
                Ok(seq) => {
                    if let Some(child) = self.children.get_mut(&seq) {
                        child.state = ChildState::Starting;
                        plan.push((seq, child.spec.clone()));
                    }
                }
                Err(e) => {
                    self.fail_start(StartError::new(e), ctx);
                    return;
                }
            }
        }
        let shutdowns: HashMap<u64, Shutdown> = plan
            .iter()
            .map(|(seq, spec)| (*seq, spec.shutdown))
            .collect();
        let work = async move {
            let (started, failed) = start_in_order(plan).await;
            let Some((seq, error, _)) = failed else {
                return Ok(started);
            };
            for (s, st) in started.into_iter().rev() {
                let shutdown = shutdowns.get(&s).copied().unwrap_or(Shutdown::Brutal);
                stop_child(StopTicket {
                    started: st,
                    shutdown,
                })
                .await;
            }
            Err((seq, error))
        };
        ctx.wait(work.into_actor(self).map(|result, act, ctx| match result {
            Ok(started) => {
                for (seq, started) in started {
                    act.install(seq, started, ctx);
                }
                act.phase = Phase::Running;
                if let Some(init) = act.init.take() {
                    let _ = init.send(Ok(()));
                }
            }
            Err((seq, error)) => {
                let id = act
                    .children
                    .get(&seq)
                    .map(|c| c.spec.id.clone())
                    .unwrap_or_default();
                act.fail_start(
                    StartError::new(format!("child {id} failed to start: {error}")),
                    ctx,
                );
            }
        }));
    }

    fn fail_start(&mut self, error: StartError, ctx: &mut Context<Self>) {
        tracing::error!(supervisor = %self.name, %error, "supervisor failed to start");
        self.exit.set(ExitReason::StartFailed(error.to_string()));
        if let Some(init) = self.init.take() {
            let _ = init.send(Err(error));
        }
        for child in self.children.values_mut() {
            child.state = ChildState::Stopped;
        }
        self.phase = Phase::Stopped;
        ctx.stop();
    }

    /// Stops every running child in reverse start order, then stops itself.
    pub(crate) fn shutdown_children(&mut self, ctx: &mut Context<Self>) {
        let seqs: Vec<u64> = self.children.keys().rev().copied().collect();
        let tickets: Vec<(u64, StopTicket)> = seqs
            .into_iter()
            .filter_map(|seq| self.take_ticket(seq).map(|t| (seq, t)))
            .collect();
        let work = async move {
            let mut stopped = Vec::with_capacity(tickets.len());
            for (seq, t) in tickets {
                stopped.push((seq, stop_child(t).await));
            }
            stopped
        };
        ctx.wait(work.into_actor(self).map(|stopped, act, ctx| {
            for (seq, reason) in stopped {
                if let Some(child) = act.children.get_mut(&seq) {
                    child.last_exit = Some(reason);
                }
            }
            act.phase = Phase::Stopped;
            ctx.stop();
        }));
    }
}

fn ticket(started: Started, spec: &ChildSpec) -> StopTicket {
    StopTicket {
        started,
        shutdown: spec.shutdown,
    }
}

/// What went wrong in a sequence of starts: the child, the error, and the
/// children after it that were not attempted.
type StartFailure = (u64, StartError, Vec<u64>);

/// Starts children one after the other; stops at the first failure.
async fn start_in_order(plan: StartPlan) -> (Vec<(u64, Started)>, Option<StartFailure>) {
    let mut started = Vec::with_capacity(plan.len());
    let mut iter = plan.into_iter();
    while let Some((seq, spec)) = iter.next() {
        match run_start(spec.start.clone(), spec.arbiter.clone()).await {
            Ok(s) => started.push((seq, s)),
            Err(e) => return (started, Some((seq, e, iter.map(|(s, _)| s).collect()))),
        }
    }
    (started, None)
}
