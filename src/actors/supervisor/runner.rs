//! Running one supervised actor: the future that owns the actor's context,
//! turns a handler panic into an exit reason, stops it on request and drops
//! it by force. Children die with their supervisor: when the supervisor's end
//! of the control channel goes away, the child is dropped at once (OTP links).

use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use actix::dev::ContextFut;
use actix::{Actor, ActorContext, Addr, AsyncContext, Context};
use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot, watch};

use super::spec::{ChildKind, ExitReason, ExitSlot, Shutdown, StartError, StartFn};
use actix::ArbiterHandle;

/// How long a child that was dropped by force gets to report its end before
/// the supervisor gives up on it (its arbiter thread is blocked).
const KILL_GRACE: Duration = Duration::from_secs(1);

/// Control sent by a supervisor to a running child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ctl {
    Stop,
    Kill,
}

/// A child that has been spawned: its address (type-erased), its control
/// channel and where its exit reason will appear.
pub struct Started {
    pub(crate) addr: Box<dyn Any + Send>,
    pub(crate) kind: ChildKind,
    pub(crate) ctl: mpsc::UnboundedSender<Ctl>,
    pub(crate) exit: watch::Receiver<Option<ExitReason>>,
}

impl std::fmt::Debug for Started {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Started")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl Started {
    /// The child's address, if it is an `A`.
    pub(crate) fn addr<A: Actor>(&self) -> Option<Addr<A>> {
        self.addr.downcast_ref::<Addr<A>>().cloned()
    }
}

/// Spawns `actor` on the current arbiter under a runner. Its supervisor (the
/// holder of the returned [`Started`]) controls it from then on.
pub(crate) fn spawn_supervised<A>(actor: A, exit_slot: ExitSlot, kind: ChildKind) -> Started
where
    A: Actor<Context = Context<A>>,
{
    let ctx = Context::new();
    let addr = ctx.address();
    let fut = ctx.into_future(actor);
    let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
    let (exit_tx, exit_rx) = watch::channel(None);
    let runner = Runner {
        fut: Some(fut),
        ctl: ctl_rx,
        exit: exit_slot,
        stop_requested: false,
    };
    actix::spawn(async move {
        let reason = runner.await;
        // Nobody may be listening any more; that is fine.
        let _ = exit_tx.send(Some(reason));
    });
    Started {
        addr: Box::new(addr),
        kind,
        ctl: ctl_tx,
        exit: exit_rx,
    }
}

struct Runner<A: Actor<Context = Context<A>>> {
    fut: Option<ContextFut<A, Context<A>>>,
    ctl: mpsc::UnboundedReceiver<Ctl>,
    exit: ExitSlot,
    stop_requested: bool,
}

impl<A: Actor<Context = Context<A>>> Runner<A> {
    /// Drops the actor's context by force. Its `Drop` asks the actor to stop
    /// and runs `stopped()`; a panic there is contained here.
    fn discard(&mut self) {
        if let Some(fut) = self.fut.take() {
            let _ = catch_unwind(AssertUnwindSafe(move || drop(fut)));
        }
    }
}

impl<A: Actor<Context = Context<A>>> Future for Runner<A> {
    type Output = ExitReason;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<ExitReason> {
        let this = self.get_mut();
        loop {
            match this.ctl.poll_recv(cx) {
                Poll::Ready(Some(Ctl::Stop)) => {
                    if !this.stop_requested {
                        this.stop_requested = true;
                        if let Some(fut) = this.fut.as_mut() {
                            fut.ctx().stop();
                        }
                    }
                }
                // Killed, or the supervisor is gone: the child goes with it.
                Poll::Ready(Some(Ctl::Kill)) | Poll::Ready(None) => {
                    this.discard();
                    return Poll::Ready(ExitReason::Killed);
                }
                Poll::Pending => break,
            }
        }
        let Some(fut) = this.fut.as_mut() else {
            return Poll::Ready(ExitReason::Killed);
        };
        match catch_unwind(AssertUnwindSafe(|| Pin::new(fut).poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(())) => {
                this.fut = None;
                let reason = this.exit.get().unwrap_or(if this.stop_requested {
                    ExitReason::Shutdown
                } else {
                    ExitReason::Normal
                });
                Poll::Ready(reason)
            }
            Err(payload) => {
                this.discard();
                Poll::Ready(ExitReason::Panic(panic_message(payload.as_ref())))
            }
        }
    }
}

/// The text of a panic payload.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_owned()
    }
}

/// Waits for the child's exit reason. A runner that vanished without one
/// (its arbiter stopped) counts as killed.
pub(crate) async fn wait_exit(mut rx: watch::Receiver<Option<ExitReason>>) -> ExitReason {
    match rx.wait_for(Option::is_some).await {
        Ok(reason) => reason.clone().unwrap_or(ExitReason::Killed),
        Err(_) => ExitReason::Killed,
    }
}

/// What a supervisor keeps to stop one running child.
#[derive(Debug)]
pub(crate) struct StopTicket {
    pub(crate) started: Started,
    pub(crate) shutdown: Shutdown,
}

/// Stops one child: asked politely within its timeout, then dropped by force.
///
/// The ticket keeps the child's address until it has exited: an actor whose
/// last address goes away stops by itself, which would read as a normal exit.
pub(crate) async fn stop_child(ticket: StopTicket) -> ExitReason {
    let StopTicket { started, shutdown } = ticket;
    if tokio::runtime::Handle::try_current().is_err() {
        // The runtime is being torn down: no timers; dropping kills the child.
        return ExitReason::Killed;
    }
    if let Shutdown::Timeout(limit) = shutdown {
        let _ = started.ctl.send(Ctl::Stop);
        if let Ok(reason) = tokio::time::timeout(limit, wait_exit(started.exit.clone())).await {
            return reason;
        }
    }
    let _ = started.ctl.send(Ctl::Kill);
    match tokio::time::timeout(KILL_GRACE, wait_exit(started.exit.clone())).await {
        // It may have stopped just before the kill arrived.
        Ok(reason) => reason,
        Err(_) => ExitReason::Killed,
    }
}

/// Runs a start function, on `arbiter` when one is given (the start future is
/// not `Send`, so it is created and awaited there) and on the current arbiter
/// otherwise.
pub(crate) async fn run_start(
    start: StartFn,
    arbiter: Option<ArbiterHandle>,
) -> Result<Started, StartError> {
    let Some(arbiter) = arbiter else {
        return guarded_start(start).await;
    };
    let (tx, rx) = oneshot::channel();
    // The start future is not `Send`: build and run it on the arbiter's thread.
    let sent = arbiter.spawn_fn(move || {
        actix::spawn(async move {
            let _ = tx.send(guarded_start(start).await);
        });
    });
    if !sent {
        return Err(StartError::new("the child's arbiter is not running"));
    }
    rx.await
        .unwrap_or_else(|_| Err(StartError::new("the child's arbiter dropped its start")))
}

/// A start function that panics fails its start; it does not take the
/// supervisor down with it.
async fn guarded_start(start: StartFn) -> Result<Started, StartError> {
    let fut = catch_unwind(AssertUnwindSafe(|| start())).map_err(start_panicked)?;
    AssertUnwindSafe(fut)
        .catch_unwind()
        .await
        .unwrap_or_else(|p| Err(start_panicked(p)))
}

fn start_panicked(payload: Box<dyn Any + Send>) -> StartError {
    StartError::new(format!(
        "start panicked: {}",
        panic_message(payload.as_ref())
    ))
}
