//! The emulator actor's state, its start (launch or reattach) and its life.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, ActorContext, ActorFutureExt, AsyncContext, Context, WrapFuture};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use super::{QMP_TIMEOUT, QUIT_TIMEOUT};
use crate::actors::child::ChildId;
use crate::actors::supervisor::{ChildSpec, Restart, Shutdown, StartError};
use crate::drivers::devices::DeviceHost;
use crate::drivers::emulator::{DmLaunch, EmulatorConfig, QmpClient};
use crate::drivers::xenstore::XsClient;
use crate::drivers::{DomId, Hv, ShutdownReason};
use crate::vm::layout;

/// The emulator actor.
#[derive(Debug)]
pub struct EmulatorActor {
    pub(super) domid: DomId,
    /// The VM's name (what its log lines say).
    pub(super) vm: String,
    pub(super) pid: Option<Pid>,
    /// None: the device model was found dead at a restart.
    pub(super) qmp: Option<QmpClient>,
    events: Option<tokio::sync::mpsc::UnboundedReceiver<Value>>,
    hv: Hv,
    /// Set once QEMU was asked to go: its death is then expected.
    pub(super) quitting: bool,
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
        hv: Hv,
        xs: XsClient,
        may_launch: bool,
        devices: Arc<dyn DeviceHost>,
    ) -> ChildSpec {
        let may_launch = Arc::new(AtomicBool::new(may_launch));
        ChildSpec::worker_async(ChildId::EMULATOR, move |_exit| {
            let (launch, config, hv, xs) = (launch.clone(), config.clone(), hv.clone(), xs.clone());
            let devices = devices.clone();
            let may_launch = may_launch.clone();
            async move {
                let (domid, vm) = (launch.domid, launch.name.clone());
                let nics = launch.hvm.nics.clone();
                let found = {
                    let config = config.clone();
                    let launch_now = may_launch.swap(false, Ordering::SeqCst);
                    crate::drivers::blocking::run(move || match config.running(domid) {
                        Some(pid) => Ok(Some((pid, false))),
                        None if launch_now => config.launch(&launch).map(|pid| Some((pid, true))),
                        None => Ok(None),
                    })
                    .await
                    .map_err(|e| StartError::new(crate::error::chain(&e)))?
                    .map_err(|e| StartError::new(crate::error::chain(&e)))?
                };
                let Some((pid, fresh)) = found else {
                    // Gone while nobody watched: the actor starts dead and
                    // crashes the domain at once.
                    return Ok(EmulatorActor {
                        domid,
                        vm: vm.clone(),
                        pid: None,
                        qmp: None,
                        events: None,
                        hv,
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
                tracing::info!(vm = %vm, %domid, %pid, %status, fresh, "device model ready");
                if fresh {
                    // What libxl records after the spawn, and what QEMU
                    // itself writes once it is ready (the simulated host's
                    // QEMU knows nothing of xenstore, so it is written here).
                    let writes = async {
                        xs.write(&layout::device_model_pid(domid), pid.to_string())
                            .await?;
                        xs.write(&layout::device_model_state(domid), "running")
                            .await
                    };
                    if let Err(e) = writes.await {
                        let _ = kill(pid, Signal::SIGKILL);
                        return Err(StartError::new(format!("record the device model: {e}")));
                    }
                    // The emulated NICs' taps onto their bridges (what
                    // libxl's vif-bridge `add type_if=tap` does).
                    let joined = crate::drivers::blocking::run(move || {
                        nics.iter()
                            .try_for_each(|n| devices.attach_interface(&n.tap, &n.bridge))
                    })
                    .await;
                    let failed = match joined {
                        Ok(Ok(())) => None,
                        Ok(Err(e)) => Some(crate::error::chain(&e)),
                        Err(e) => Some(crate::error::chain(&e)),
                    };
                    if let Some(e) = failed {
                        let _ = kill(pid, Signal::SIGKILL);
                        return Err(StartError::new(format!(
                            "put the emulated NICs on their bridges: {e}"
                        )));
                    }
                }
                Ok(EmulatorActor {
                    domid,
                    vm: vm.clone(),
                    pid: Some(pid),
                    qmp: Some(qmp),
                    events: Some(events),
                    hv,
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
    pub(super) fn died(&mut self, ctx: &mut Context<Self>) {
        if self.quitting {
            ctx.stop();
            return;
        }
        let (domid, hv) = (self.domid, self.hv.clone());
        let pid = self.pid.map_or(0, Pid::as_raw);
        tracing::warn!(vm = %self.vm, %domid, pid, "the device model died; crashing the domain");
        ctx.wait(
            async move { hv.shutdown(domid, ShutdownReason::Crash).await }
                .into_actor(self)
                .map(|r, act, ctx| {
                    if let Err(e) = r {
                        let error = crate::error::chain(&e);
                        tracing::warn!(vm = %act.vm, domid = %act.domid, %error, "cannot crash the domain");
                    }
                    ctx.stop();
                }),
        );
    }
}
