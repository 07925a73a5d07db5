//! The emulator actor: an HVM domain's device model (a QEMU process) and
//! its QMP connection.
//!
//! - start: if the domain's QEMU already runs (this actor restarted, or
//!   xenithd did), connect to it again; else launch it (daemonized, with a
//!   pidfile and a QMP socket). Then the QMP handshake and `query-status`;
//!   then record it where libxl and QEMU do (`image/device-model-pid`,
//!   `/local/domain/0/device-model/N/state = running`).
//! - QEMU dies (its QMP connection ends, and nobody asked it to quit): the
//!   domain cannot run without its device model, so it is crashed
//!   (`SHUTDOWN_crash`, as xenopsd does) and the VM's on_crash follows. The
//!   actor then ends normally: transient, it is not restarted; the domain's
//!   teardown (or restart) deals with it.
//! - [`Quit`]: QMP `quit`, then wait for QEMU to go (SIGKILL past a timeout).
//! - A panic: restarted alone, it finds the same QEMU and reconnects; the
//!   domain does not notice.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::{
    Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler, Message,
    ResponseActFuture, ResponseFuture, StreamHandler, WrapFuture,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use super::supervisor::{ChildSpec, Restart, Shutdown, StartError};
use super::InjectPanic;
use crate::drivers::emulator::{DmLaunch, EmulatorConfig, QmpClient};
use crate::drivers::xenstore::XsClient;
use crate::drivers::{DomId, Hypervisor, ShutdownReason};
use crate::vm::layout;

/// The supervisor id of a VM's emulator actor.
pub const EMULATOR_ID: &str = "emulator";

/// How long QEMU may take to answer its QMP socket.
pub const QMP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `quit` may take before QEMU is killed.
pub const QUIT_TIMEOUT: Duration = Duration::from_secs(5);

/// QEMU's run state (`query-status`).
#[derive(Debug)]
pub struct Status;

impl Message for Status {
    type Result = Result<EmulatorStatus, String>;
}

/// What `vm.get` shows of the emulator.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EmulatorStatus {
    pub pid: i32,
    /// QEMU's run state: "prelaunch" (started with -S), "running", "paused"...
    pub status: String,
}

/// Stops QEMU (QMP quit); the actor then ends normally.
#[derive(Debug)]
pub struct Quit;

impl Message for Quit {
    type Result = ();
}

/// Fault injection (`fault.inject` part emulator, kind kill): SIGKILL QEMU.
#[derive(Debug)]
pub struct InjectKill;

impl Message for InjectKill {
    type Result = Result<(), String>;
}

/// The emulator actor.
#[derive(Debug)]
pub struct EmulatorActor {
    domid: DomId,
    pid: Option<Pid>,
    /// None: the device model was found dead at a restart.
    qmp: Option<QmpClient>,
    events: Option<tokio::sync::mpsc::UnboundedReceiver<Value>>,
    driver: Arc<dyn Hypervisor>,
    /// Set once QEMU was asked to go: its death is then expected.
    quitting: bool,
}

impl EmulatorActor {
    /// The child spec: QEMU runs and answers QMP before it counts as started.
    ///
    /// Only the first start with `may_launch` launches QEMU; a restart (or a
    /// re-sync onto a running domain) reattaches, and if QEMU is gone the
    /// domain is crashed, as when it dies under a running actor.
    pub fn spec(
        launch: DmLaunch,
        config: Arc<EmulatorConfig>,
        driver: Arc<dyn Hypervisor>,
        xs: XsClient,
        may_launch: bool,
    ) -> ChildSpec {
        let may_launch = Arc::new(AtomicBool::new(may_launch));
        ChildSpec::worker_async(EMULATOR_ID, move |_exit| {
            let (launch, config, driver, xs) =
                (launch.clone(), config.clone(), driver.clone(), xs.clone());
            let may_launch = may_launch.clone();
            async move {
                let domid = launch.domid;
                let found = {
                    let config = config.clone();
                    let launch_now = may_launch.swap(false, Ordering::SeqCst);
                    tokio::task::spawn_blocking(move || match config.running(domid) {
                        Some(pid) => Ok(Some((pid, false))),
                        None if launch_now => config.launch(&launch).map(|pid| Some((pid, true))),
                        None => Ok(None),
                    })
                    .await
                    .map_err(StartError::new)?
                    .map_err(|e| StartError::new(crate::error::chain(&e)))?
                };
                let Some((pid, fresh)) = found else {
                    // Gone while nobody watched: the actor starts dead and
                    // crashes the domain at once.
                    return Ok(EmulatorActor {
                        domid,
                        pid: None,
                        qmp: None,
                        events: None,
                        driver,
                        quitting: false,
                    });
                };
                let paths = config.paths(domid);
                let connected = async {
                    let (qmp, events) = QmpClient::connect(&paths.qmp, QMP_TIMEOUT).await?;
                    let status = qmp.status().await?;
                    Ok::<_, crate::drivers::emulator::QmpError>((qmp, events, status))
                }
                .await;
                let (qmp, events, status) = match connected {
                    Ok(c) => c,
                    Err(e) => {
                        if fresh {
                            let _ = kill(pid, Signal::SIGKILL);
                        }
                        return Err(StartError::new(format!("QMP: {}", crate::error::chain(&e))));
                    }
                };
                tracing::info!(%domid, %pid, %status, fresh, "device model ready");
                if fresh {
                    // What libxl records after the spawn, and what QEMU
                    // itself writes once it is ready (the simulated host's
                    // QEMU knows nothing of xenstore, so it is written here).
                    let home = layout::home(domid);
                    let dm = format!("/local/domain/0/device-model/{}", domid.0);
                    let writes = async {
                        xs.write(&format!("{home}/image/device-model-pid"), pid.to_string())
                            .await?;
                        xs.write(&format!("{dm}/state"), "running").await
                    };
                    if let Err(e) = writes.await {
                        let _ = kill(pid, Signal::SIGKILL);
                        return Err(StartError::new(format!("record the device model: {e}")));
                    }
                }
                Ok(EmulatorActor {
                    domid,
                    pid: Some(pid),
                    qmp: Some(qmp),
                    events: Some(events),
                    driver,
                    quitting: false,
                })
            }
        })
        .restart(Restart::Transient)
        .shutdown(Shutdown::Timeout(QUIT_TIMEOUT + Duration::from_secs(1)))
    }
}

impl Actor for EmulatorActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        match self.events.take() {
            Some(rx) => {
                ctx.add_stream(futures_util::stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|e| (e, rx))
                }));
            }
            None => self.died(ctx),
        }
    }
}

impl EmulatorActor {
    /// QEMU is gone. Unless it was asked to go, the domain cannot run
    /// without it: crash the domain (its on_crash follows). Then stop.
    fn died(&mut self, ctx: &mut Context<Self>) {
        if self.quitting {
            ctx.stop();
            return;
        }
        let (domid, driver) = (self.domid, self.driver.clone());
        tracing::warn!(%domid, pid = ?self.pid, "the device model died; crashing the domain");
        ctx.wait(
            async move {
                tokio::task::spawn_blocking(move || driver.shutdown(domid, ShutdownReason::Crash))
                    .await
            }
            .into_actor(self)
            .map(|r, act, ctx| {
                let error = match r {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(e) => Some(e.to_string()),
                };
                if let Some(error) = error {
                    tracing::warn!(domid = %act.domid, %error, "cannot crash the domain");
                }
                ctx.stop();
            }),
        );
    }
}

impl StreamHandler<Value> for EmulatorActor {
    fn handle(&mut self, event: Value, _ctx: &mut Context<Self>) {
        let name = event.get("event").and_then(Value::as_str).unwrap_or("?");
        tracing::debug!(domid = %self.domid, event = name, "QMP event");
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        self.died(ctx);
    }
}

impl Handler<Status> for EmulatorActor {
    type Result = ResponseFuture<Result<EmulatorStatus, String>>;

    fn handle(&mut self, _msg: Status, _ctx: &mut Context<Self>) -> Self::Result {
        let (qmp, pid) = (self.qmp.clone(), self.pid.map_or(0, Pid::as_raw));
        Box::pin(async move {
            let qmp = qmp.ok_or_else(|| "the device model is gone".to_owned())?;
            let status = tokio::time::timeout(QMP_TIMEOUT, qmp.status())
                .await
                .map_err(|_| "QMP did not answer".to_owned())?
                .map_err(|e| e.to_string())?;
            Ok(EmulatorStatus { pid, status })
        })
    }
}

impl Handler<Quit> for EmulatorActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _msg: Quit, _ctx: &mut Context<Self>) -> Self::Result {
        self.quitting = true;
        let (qmp, pid) = (self.qmp.clone(), self.pid);
        Box::pin(
            async move {
                let (Some(qmp), Some(pid)) = (qmp, pid) else {
                    return;
                };
                let quit = async {
                    let _ = qmp.execute("quit", None).await;
                    qmp.closed().await;
                };
                if tokio::time::timeout(QUIT_TIMEOUT, quit).await.is_err() {
                    tracing::warn!(%pid, "the device model did not quit; killing it");
                    let _ = kill(pid, Signal::SIGKILL);
                }
            }
            .into_actor(self)
            .map(|(), _act, ctx| ctx.stop()),
        )
    }
}

impl Handler<InjectKill> for EmulatorActor {
    type Result = Result<(), String>;

    fn handle(&mut self, _msg: InjectKill, _ctx: &mut Context<Self>) -> Self::Result {
        let pid = self
            .pid
            .ok_or_else(|| "the device model is gone".to_owned())?;
        kill(pid, Signal::SIGKILL).map_err(|e| format!("kill {pid}: {e}"))
    }
}

impl Handler<InjectPanic> for EmulatorActor {
    type Result = ();

    fn handle(&mut self, _msg: InjectPanic, _ctx: &mut Context<Self>) {
        panic!(
            "injected panic in the emulator actor of domain {}",
            self.domid
        );
    }
}
