//! A clean shutdown or reboot: the guest is asked (control/shutdown), and
//! then the VM waits for its domain to shut down without holding the
//! domain actor: the mailbox is served meanwhile. The wait ends when the
//! domain shuts down (for whatever reason), is destroyed (by anyone), is
//! killed or shut down hard through xenith (which pre-empt it), or when the
//! timeout passes (an error, or with `fallback` a hard shutdown). Every
//! waiter is answered then, saying what ended the wait.

use std::time::Duration;

use actix::{AsyncContext, Context, SpawnHandle};
use tokio::sync::oneshot;

use super::error::VmError;
use super::lifecycle;
use super::messages::{OpReply, Operation, VmOp};
use super::ops;
use super::state::{DomainActor, Outcome, PowerState};
use crate::drivers::ShutdownReason;

/// Where an operation's answer goes.
pub(super) type Reply = oneshot::Sender<Result<OpReply, VmError>>;

/// A clean shutdown or reboot waiting for the guest.
#[derive(Debug)]
pub(crate) struct PendingStop {
    /// Poweroff or Reboot.
    pub reason: ShutdownReason,
    /// Who waits for it: the call that asked, and any that joined.
    pub waiters: Vec<Reply>,
    timer: Option<SpawnHandle>,
    fallback: bool,
    timeout: Duration,
    /// What ended the wait, once something did (an operation runs to
    /// finish it: the teardown, the restart).
    pub resolved: Option<String>,
}

impl PendingStop {
    /// The busy marker it shows.
    pub fn name(&self) -> &'static str {
        match self.reason {
            ShutdownReason::Reboot => "reboot",
            _ => "shutdown",
        }
    }

    fn word(&self) -> &'static str {
        self.reason.control_word().unwrap_or("shut down")
    }
}

/// How a guest's own shutdown reads in an answer.
fn described(reason: ShutdownReason) -> String {
    match reason {
        ShutdownReason::Poweroff => "the guest powered off".into(),
        ShutdownReason::Reboot => "the guest rebooted".into(),
        ShutdownReason::Crash => "the guest crashed".into(),
        ShutdownReason::Watchdog => "the guest's watchdog fired".into(),
        ShutdownReason::Suspend => "the guest suspended".into(),
        ShutdownReason::SoftReset => "the guest asked for a soft reset".into(),
    }
}

impl DomainActor {
    /// The guest was asked: wait (at most `timeout`) for its domain.
    pub(super) fn wait_for_stop(
        &mut self,
        ctx: &mut Context<Self>,
        reason: ShutdownReason,
        timeout: Duration,
        fallback: bool,
    ) {
        let timer = ctx.run_later(timeout, |act, ctx| act.stop_timed_out(ctx));
        self.stopping = Some(PendingStop {
            reason,
            waiters: Vec::new(),
            timer: Some(timer),
            fallback,
            timeout,
            resolved: None,
        });
    }

    /// What the gate does with `op` while a clean stop waits: joins it (the
    /// same stop asked again), lets it pre-empt the wait (a kill, a hard
    /// shutdown), or refuses it (anything else). Returns the op when it may
    /// run, the refusal otherwise; a joined op's answer comes with the stop's.
    pub(super) fn while_stopping(
        &mut self,
        ctx: &mut Context<Self>,
        op: Operation,
        done: Reply,
    ) -> Result<(Operation, Reply), Option<VmError>> {
        let Some(stop) = self.stopping.as_mut() else {
            return Ok((op, done));
        };
        let pre_empt = match op {
            Operation::Power(VmOp::Kill) => Some("killed (vm.kill)"),
            Operation::Power(VmOp::Shutdown { force: true, .. }) => {
                Some("shut down hard (vm.shutdown --force)")
            }
            Operation::Power(VmOp::Shutdown { force: false, .. })
                if stop.reason == ShutdownReason::Poweroff =>
            {
                stop.waiters.push(done);
                return Err(None);
            }
            Operation::Power(VmOp::Reboot { force: false })
                if stop.reason == ShutdownReason::Reboot =>
            {
                stop.waiters.push(done);
                return Err(None);
            }
            _ => None,
        };
        match pre_empt {
            Some(how) if stop.resolved.is_none() => {
                if let Some(timer) = stop.timer.take() {
                    ctx.cancel_future(timer);
                }
                stop.resolved = Some(format!(
                    "{how} while the guest was asked to {}",
                    stop.word()
                ));
                Ok((op, done))
            }
            _ => Err(Some(VmError::OtherOperation {
                vm: self.c.uuid,
                op: stop.name(),
            })),
        }
    }

    /// The domain shut down or was destroyed while a clean stop waited:
    /// finish it (teardown, or teardown and restart for a reboot the guest
    /// did). Returns false when no stop waits.
    pub(super) fn stop_event(
        &mut self,
        ctx: &mut Context<Self>,
        shutdown: Option<ShutdownReason>,
    ) -> bool {
        let Some(stop) = self.stopping.as_mut() else {
            return false;
        };
        if stop.resolved.is_some() {
            // Already being finished (a kill, the fallback).
            return true;
        }
        if let Some(timer) = stop.timer.take() {
            ctx.cancel_future(timer);
        }
        stop.resolved = Some(match shutdown {
            Some(reason) => described(reason),
            None => "the domain was destroyed".into(),
        });
        let restart =
            shutdown == Some(ShutdownReason::Reboot) && stop.reason == ShutdownReason::Reboot;
        let Some(r) = self.running.clone() else {
            return true;
        };
        let c = self.c.clone();
        if restart {
            self.run(
                ctx,
                "reboot",
                async move {
                    lifecycle::teardown(&c, &r).await;
                    ops::start(&c, false).await
                },
                None,
            );
        } else {
            self.run(
                ctx,
                "shutdown",
                async move {
                    lifecycle::teardown(&c, &r).await;
                    Outcome::Halted
                },
                None,
            );
        }
        true
    }

    /// The guest did not do it in time: shut it down hard (`fallback`), or
    /// answer the waiters with the timeout (the VM keeps running).
    fn stop_timed_out(&mut self, ctx: &mut Context<Self>) {
        let Some(stop) = self.stopping.as_mut() else {
            return;
        };
        stop.timer = None;
        if stop.resolved.is_some() {
            return;
        }
        if stop.fallback {
            let timeout_s = stop.timeout.as_secs();
            tracing::warn!(vm = %self.c.spec.name, timeout_s, "the guest did not shut down in time: shutting it down hard");
            stop.resolved = Some(format!(
                "the guest did not {} within {:?}: shut down hard",
                stop.word(),
                stop.timeout
            ));
            let Some(r) = self.running.clone() else {
                return;
            };
            let c = self.c.clone();
            self.run(
                ctx,
                "shutdown",
                async move {
                    if let Err(e) = c.env.hv.shutdown(r.domid, ShutdownReason::Poweroff).await {
                        let error = crate::error::chain(&e);
                        tracing::debug!(%error, "hard shutdown (the teardown destroys it)");
                    }
                    lifecycle::teardown(&c, &r).await;
                    Outcome::Halted
                },
                None,
            );
            return;
        }
        if let Some(stop) = self.stopping.take() {
            for waiter in stop.waiters {
                let _ = waiter.send(Err(VmError::GuestTimeout {
                    what: stop.reason.control_word().unwrap_or("shut down"),
                    after: stop.timeout,
                }));
            }
        }
        self.publish();
    }

    /// After an operation: a clean stop it finished (the VM halted, or the
    /// reboot came back) is answered, saying what ended it.
    pub(super) fn settle_stop(
        &mut self,
        ctx: &mut Context<Self>,
        result: &Result<OpReply, VmError>,
    ) {
        let settled = self
            .stopping
            .as_ref()
            .is_some_and(|s| s.resolved.is_some() || self.state == PowerState::Halted);
        if !settled {
            return;
        }
        let Some(mut stop) = self.stopping.take() else {
            return;
        };
        if let Some(timer) = stop.timer.take() {
            ctx.cancel_future(timer);
        }
        let why = stop
            .resolved
            .take()
            .unwrap_or_else(|| "the domain went".to_owned());
        let failed = result.as_ref().err().map(|e| crate::error::chain(e));
        for waiter in stop.waiters {
            let answer = match (&failed, self.state) {
                (None, PowerState::Halted) => Ok(OpReply::Halted(why.clone())),
                (None, _) => Ok(OpReply::Done),
                (Some(message), _) => Err(VmError::Step {
                    step: why.clone(),
                    message: message.clone(),
                }),
            };
            let _ = waiter.send(answer);
        }
    }
}
