//! What the emulator actor does with QMP's events and its messages.

use actix::{
    ActorContext, ActorFutureExt, Context, Handler, ResponseActFuture, ResponseFuture,
    StreamHandler, WrapFuture,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use super::messages::{InjectKill, Quit, Status};
use super::state::EmulatorActor;
use super::{EmulatorStatus, QMP_TIMEOUT, QUIT_TIMEOUT};

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

crate::actors::panics_on_injection!(EmulatorActor, |a| format!(
    "the emulator actor of domain {}",
    a.domid
));
