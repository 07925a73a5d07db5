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

    /// The gate: an operation runs only from a state it allows, not on a VM
    /// being removed, and not while another runs (refused, not queued; a
    /// kill or a hard shutdown pre-empts a clean stop waiting for the guest).
    fn handle(&mut self, Run(op): Run, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        let answer = Box::pin(async move { rx.await.unwrap_or(Err(VmError::Interrupted)) });
        let refused = match &op {
            Operation::Unretire => {
                self.retired = false;
                return Box::pin(std::future::ready(Ok(OpReply::Done)));
            }
            _ if self.retired => Some(VmError::Removed),
            _ if self.busy.is_some() => Some(VmError::OtherOperation {
                vm: self.c.uuid,
                op: self.busy.unwrap_or("an operation"),
            }),
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
        let (op, tx) = match self.while_stopping(ctx, op, tx) {
            Ok(go) => go,
            // Joined the stop under way: answered with it.
            Err(None) => return answer,
            Err(Some(e)) => return Box::pin(std::future::ready(Err(e))),
        };
        if matches!(op, Operation::Retire) {
            self.retired = true;
        }
        let what = op.name();
        let work = ops::work(self.c.clone(), self.running.clone(), self.state, op);
        self.run(ctx, what, work, Some(tx));
        answer
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
                self.publish();
                return;
            }
        };
        tracing::info!(vm = %self.c.spec.name, %reason, %action, "domain shut down");
        let Some(r) = self.running.clone() else {
            return;
        };
        let c = self.c.clone();
        match action {
            OnEvent::Preserve => {
                self.state = preserved;
                self.publish();
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

impl DomainActor {
    /// The domain's own event: a clean stop waiting for it is finished;
    /// otherwise a shutdown applies the VM's on_* action and a destruction
    /// behind xenith's back is cleaned up.
    pub(super) fn domain_event(&mut self, event: DomainEvent, ctx: &mut Context<Self>) {
        match event {
            DomainEvent::Shutdown(reason) => {
                if !self.stop_event(ctx, Some(reason)) {
                    self.on_shutdown(reason, ctx);
                }
            }
            DomainEvent::Destroyed => {
                if self.stop_event(ctx, None) {
                    return;
                }
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
}

impl StreamHandler<(u64, DomainEvent)> for DomainActor {
    fn handle(&mut self, (epoch, event): (u64, DomainEvent), ctx: &mut Context<Self>) {
        if epoch != self.epoch {
            return; // from a domain this actor no longer follows
        }
        if self.busy.is_some() {
            // Handled once the operation under way is done.
            self.deferred.push((epoch, event));
            return;
        }
        self.domain_event(event, ctx);
    }

    fn finished(&mut self, _ctx: &mut Context<Self>) {
        // The notification stream ended with the domain: nothing to stop.
    }
}

crate::actors::panics_on_injection!(DomainActor, |a| format!("the domain actor of {}", a.c.uuid));
