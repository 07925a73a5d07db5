//! What the domain actor does with its operations and with the domain's
//! own shutdowns and death.

use actix::{Context, Handler, ResponseFuture, StreamHandler};
use tokio::sync::oneshot;

use super::error::VmError;
use super::lifecycle;
use super::messages::{OpReply, Operation, Run};
use super::ops;
use super::state::{DomainActor, Outcome, PowerState};
use crate::drivers::{DomainEvent, ShutdownReason};
use crate::vm::OnEvent;

impl Handler<Run> for DomainActor {
    type Result = ResponseFuture<Result<OpReply, VmError>>;

    /// The gate: the operation runs only from a state it allows, and not on
    /// a VM that is being removed.
    fn handle(&mut self, Run(op): Run, ctx: &mut Context<Self>) -> Self::Result {
        let refused = match &op {
            Operation::Unretire => {
                self.retired = false;
                return Box::pin(std::future::ready(Ok(OpReply::Done)));
            }
            _ if self.retired => Some(VmError::Removed),
            op if !op.allowed().contains(&self.state) => Some(VmError::BadPowerState {
                vm: self.c.uuid,
                op: op.name(),
                state: self.state,
                expected: op.allowed()[0],
            }),
            _ => None,
        };
        if let Some(e) = refused {
            return Box::pin(std::future::ready(Err(e)));
        }
        if matches!(op, Operation::Retire) {
            self.retired = true;
        }
        let (tx, rx) = oneshot::channel();
        let what = op.name();
        let work = ops::work(self.c.clone(), self.running.clone(), self.state, op);
        self.run(ctx, what, work, Some(tx));
        Box::pin(async move { rx.await.unwrap_or(Err(VmError::Interrupted)) })
    }
}

impl DomainActor {
    /// The domain shut down by itself (or crashed): the VM's action follows.
    fn on_shutdown(&mut self, reason: ShutdownReason, ctx: &mut Context<Self>) {
        let spec = &self.c.spec;
        let (action, preserved) = match reason {
            ShutdownReason::Poweroff => (spec.on_poweroff, PowerState::Halted),
            ShutdownReason::Reboot | ShutdownReason::SoftReset => {
                (spec.on_reboot, PowerState::Halted)
            }
            ShutdownReason::Crash | ShutdownReason::Watchdog => {
                (spec.on_crash, PowerState::Crashed)
            }
            ShutdownReason::Suspend => {
                self.state = PowerState::Suspended;
                self.publish(None);
                return;
            }
        };
        tracing::info!(vm = %self.c.spec.name, reason = ?reason, action = ?action, "domain shut down");
        let Some(r) = self.running.clone() else {
            return;
        };
        let c = self.c.clone();
        match action {
            OnEvent::Preserve => {
                self.state = preserved;
                self.publish(None);
            }
            OnEvent::Destroy => self.run(
                ctx,
                "destroy",
                async move {
                    lifecycle::teardown(&c, &r).await;
                    Outcome::Halted
                },
                None,
            ),
            OnEvent::Restart => self.run(
                ctx,
                "restart",
                async move {
                    lifecycle::teardown(&c, &r).await;
                    ops::start(&c, false).await
                },
                None,
            ),
        }
    }
}

impl StreamHandler<(u64, DomainEvent)> for DomainActor {
    fn handle(&mut self, (epoch, event): (u64, DomainEvent), ctx: &mut Context<Self>) {
        if epoch != self.epoch {
            return; // from a domain this actor no longer follows
        }
        match event {
            DomainEvent::Shutdown(reason) => self.on_shutdown(reason, ctx),
            DomainEvent::Destroyed => {
                // Destroyed behind our back: clean up what is left.
                if let Some(r) = self.running.clone() {
                    let c = self.c.clone();
                    self.run(
                        ctx,
                        "clean up",
                        async move {
                            lifecycle::teardown(&c, &r).await;
                            Outcome::Halted
                        },
                        None,
                    );
                }
            }
        }
    }

    fn finished(&mut self, _ctx: &mut Context<Self>) {
        // The notification stream ended with the domain: nothing to stop.
    }
}

crate::actors::panics_on_injection!(DomainActor, |a| format!("the domain actor of {}", a.c.uuid));
