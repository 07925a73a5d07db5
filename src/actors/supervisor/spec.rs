//! Child specifications, restart policies and exit reasons: the vocabulary of
//! the supervision tree, after Erlang/OTP's `supervisor` behaviour.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix::{Actor, ArbiterHandle, Context};
use serde::Serialize;

use super::runner::{spawn_supervised, Started};

/// Why a supervised actor stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum ExitReason {
    /// It stopped by itself and reported no error.
    Normal,
    /// Its supervisor asked it to stop and it did, within its timeout.
    Shutdown,
    /// It stopped and reported an error through its [`ExitSlot`].
    Error(String),
    /// A handler (or `started`/`stopping`) panicked; the panic message.
    Panic(String),
    /// It was dropped by force: its shutdown timeout ran out, or its
    /// supervisor went away without stopping it.
    Killed,
    /// Its start function failed.
    StartFailed(String),
}

impl ExitReason {
    /// `Normal` and `Shutdown` are normal exits; everything else is abnormal
    /// (what decides whether a transient child is restarted).
    pub fn is_abnormal(&self) -> bool {
        !matches!(self, ExitReason::Normal | ExitReason::Shutdown)
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Normal => f.write_str("normal"),
            ExitReason::Shutdown => f.write_str("shutdown"),
            ExitReason::Error(e) => write!(f, "error: {e}"),
            ExitReason::Panic(p) => write!(f, "panic: {p}"),
            ExitReason::Killed => f.write_str("killed"),
            ExitReason::StartFailed(e) => write!(f, "start failed: {e}"),
        }
    }
}

/// Where a supervised actor leaves its exit reason before it stops itself.
///
/// An actor that stops with `ctx.stop()` and sets nothing exits `Normal`;
/// one that wants its supervisor to see an error calls [`ExitSlot::set`]
/// first. The first reason set wins.
#[derive(Debug, Clone, Default)]
pub struct ExitSlot(Arc<OnceLock<ExitReason>>);

impl ExitSlot {
    /// A fresh, empty slot.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records why the actor is about to stop (ignored if a reason is already set).
    pub fn set(&self, reason: ExitReason) {
        let _ = self.0.set(reason);
    }

    /// Shorthand for `set(ExitReason::Error(..))`.
    pub fn error(&self, message: impl fmt::Display) {
        self.set(ExitReason::Error(message.to_string()));
    }

    pub(crate) fn get(&self) -> Option<ExitReason> {
        self.0.get().cloned()
    }
}

/// A start function failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct StartError {
    message: String,
    /// The child's configuration is at fault (a VM's disk that does not
    /// exist...), not the host: the caller can say so.
    config: bool,
}

impl StartError {
    pub fn new(message: impl fmt::Display) -> Self {
        Self {
            message: message.to_string(),
            config: false,
        }
    }

    /// The same failure, blamed on the child's configuration.
    pub fn config(self) -> Self {
        Self {
            config: true,
            ..self
        }
    }

    pub fn is_config(&self) -> bool {
        self.config
    }
}

/// When a child is restarted (OTP restart types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Restart {
    /// Always restarted.
    Permanent,
    /// Restarted only after an abnormal exit.
    Transient,
    /// Never restarted; removed from the supervisor once it exits.
    Temporary,
}

impl Restart {
    pub fn should_restart(self, reason: &ExitReason) -> bool {
        match self {
            Restart::Permanent => true,
            Restart::Transient => reason.is_abnormal(),
            Restart::Temporary => false,
        }
    }
}

/// How a child is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Dropped at once, without `stopping()` being asked.
    Brutal,
    /// Asked to stop; dropped by force if it has not stopped within the timeout.
    Timeout(Duration),
}

/// Which children a supervisor restarts when one of them has to be restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Only that child.
    OneForOne,
    /// All children: the others are stopped (reverse order), then all restarted (in order).
    OneForAll,
    /// That child and the ones started after it.
    RestForOne,
}

/// A supervisor's strategy and restart intensity: more than `max_restarts`
/// restarts within `period` and it gives up: it stops its children in
/// reverse start order and exits with an error, for its own parent to handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SupervisorFlags {
    pub strategy: Strategy,
    pub max_restarts: u32,
    pub period: Duration,
}

impl SupervisorFlags {
    pub fn new(strategy: Strategy, max_restarts: u32, period: Duration) -> Self {
        Self {
            strategy,
            max_restarts,
            period,
        }
    }
}

/// Whether a node of the tree is a worker or a supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildKind {
    Worker,
    Supervisor,
}

pub(crate) type StartFuture = Pin<Box<dyn Future<Output = Result<Started, StartError>>>>;
pub(crate) type StartFn = Arc<dyn Fn() -> StartFuture + Send + Sync>;

/// Default time a worker gets to stop before it is dropped by force.
pub const DEFAULT_WORKER_SHUTDOWN: Duration = Duration::from_secs(5);
/// Default time a supervisor gets to stop its subtree.
pub const DEFAULT_SUPERVISOR_SHUTDOWN: Duration = Duration::from_secs(30);

/// How to start (and restart) one child, and how it is supervised.
///
/// ```
/// use xenith::actors::supervisor::{ChildSpec, Restart};
/// # struct Worker;
/// # impl actix::Actor for Worker { type Context = actix::Context<Self>; }
/// let spec = ChildSpec::worker("console", |_exit| Ok(Worker)).restart(Restart::Transient);
/// assert_eq!(spec.id(), "console");
/// ```
#[derive(Clone)]
pub struct ChildSpec {
    pub(crate) id: String,
    pub(crate) kind: ChildKind,
    pub(crate) restart: Restart,
    pub(crate) shutdown: Shutdown,
    pub(crate) arbiter: Option<ArbiterHandle>,
    pub(crate) start: StartFn,
}

impl fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSpec")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("restart", &self.restart)
            .field("shutdown", &self.shutdown)
            .field("arbiter", &self.arbiter.is_some())
            .finish()
    }
}

impl ChildSpec {
    /// A worker actor built by `make` each time it is (re)started. `make`
    /// receives the [`ExitSlot`] the actor may use to report an error exit.
    pub fn worker<A, F>(id: impl Into<String>, make: F) -> Self
    where
        A: Actor<Context = Context<A>>,
        F: Fn(ExitSlot) -> Result<A, StartError> + Send + Sync + 'static,
    {
        Self::worker_async(id, move |exit| std::future::ready(make(exit)))
    }

    /// Like [`ChildSpec::worker`], with an asynchronous constructor (it runs
    /// on the child's arbiter; the supervisor waits for it, in start order).
    pub fn worker_async<A, F, Fut>(id: impl Into<String>, make: F) -> Self
    where
        A: Actor<Context = Context<A>>,
        F: Fn(ExitSlot) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<A, StartError>> + 'static,
    {
        let start: StartFn = Arc::new(move || {
            let exit = ExitSlot::new();
            let built = make(exit.clone());
            Box::pin(async move {
                let actor = built.await?;
                Ok(spawn_supervised(actor, exit, ChildKind::Worker))
            })
        });
        Self {
            id: id.into(),
            kind: ChildKind::Worker,
            restart: Restart::Permanent,
            shutdown: Shutdown::Timeout(DEFAULT_WORKER_SHUTDOWN),
            arbiter: None,
            start,
        }
    }

    /// A nested supervisor with its own flags and initial children.
    pub fn supervisor(
        id: impl Into<String>,
        flags: SupervisorFlags,
        children: Vec<ChildSpec>,
    ) -> Self {
        Self::supervisor_published(id, flags, children, None)
    }

    /// A nested supervisor that publishes its address in `slot` each time
    /// it starts (before its children start), so that they and others can
    /// reach it.
    pub fn supervisor_published(
        id: impl Into<String>,
        flags: SupervisorFlags,
        children: Vec<ChildSpec>,
        slot: Option<crate::actors::slot::AddrSlot<super::Supervisor>>,
    ) -> Self {
        Self::supervisor_observed(id, flags, children, slot, None)
    }

    /// Like [`ChildSpec::supervisor_published`]; its children's exits and
    /// restarts are also published on `events`.
    pub fn supervisor_observed(
        id: impl Into<String>,
        flags: SupervisorFlags,
        children: Vec<ChildSpec>,
        slot: Option<crate::actors::slot::AddrSlot<super::Supervisor>>,
        events: Option<crate::actors::events::EventBus>,
    ) -> Self {
        let id = id.into();
        let name = id.clone();
        let children = Arc::new(children);
        let start: StartFn = Arc::new(move || {
            let name = name.clone();
            let children = Vec::clone(&children);
            Box::pin(super::handle::start_supervisor(
                name,
                flags,
                children,
                slot.clone(),
                events.clone(),
            ))
        });
        Self {
            id,
            kind: ChildKind::Supervisor,
            restart: Restart::Permanent,
            shutdown: Shutdown::Timeout(DEFAULT_SUPERVISOR_SHUTDOWN),
            arbiter: None,
            start,
        }
    }

    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// Runs the child on another arbiter (thread) instead of its supervisor's.
    pub fn on_arbiter(mut self, arbiter: ArbiterHandle) -> Self {
        self.arbiter = Some(arbiter);
        self
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn kind(&self) -> ChildKind {
        self.kind
    }
}
