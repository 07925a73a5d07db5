//! The supervisor's `Actor` lifecycle and its message handlers.

use std::time::Duration;

use actix::{
    Actor, ActorFutureExt, Addr, Context, Handler, MessageResult, ResponseActFuture,
    ResponseFuture, Running, WrapFuture,
};
use futures_util::future::join_all;

use super::messages::{ChildAddr, CountChildren, GetTree, RemoveChild, RetryRestart, StartChild};
use super::runner::{run_start, stop_child, StopTicket};
use super::spec::ChildKind;
use super::state::{unix_ms, ChildState, Phase, Supervisor};
use super::tree::{ChildCount, TreeNode};
use super::SupervisorError;

/// How long a nested supervisor gets to answer a tree snapshot.
const TREE_TIMEOUT: Duration = Duration::from_secs(5);

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // A supervisor of 10,000 VMs gets many requests at once.
        ctx.set_mailbox_capacity(0); // 0: unbounded
        if let Some(slot) = &self.publish {
            slot.publish(actix::AsyncContext::address(ctx));
        }
        self.start_initial(ctx);
    }

    fn stopping(&mut self, ctx: &mut Context<Self>) -> Running {
        match self.phase {
            Phase::Stopped => Running::Stop,
            Phase::ShuttingDown => Running::Continue,
            Phase::Starting | Phase::Running => {
                self.phase = Phase::ShuttingDown;
                tracing::debug!(supervisor = %self.name, "stopping children in reverse order");
                self.shutdown_children(ctx);
                Running::Continue
            }
        }
    }
}

impl Handler<StartChild> for Supervisor {
    type Result = ResponseActFuture<Self, Result<(), SupervisorError>>;

    fn handle(&mut self, StartChild(spec): StartChild, _ctx: &mut Context<Self>) -> Self::Result {
        if self.phase != Phase::Running {
            return Box::pin(actix::fut::ready(Err(SupervisorError::ShuttingDown)));
        }
        let id = spec.id.clone();
        let seq = match self.add_spec(spec) {
            Ok(seq) => seq,
            Err(e) => return Box::pin(actix::fut::ready(Err(e))),
        };
        let Some(child) = self.children.get_mut(&seq) else {
            return Box::pin(actix::fut::ready(Err(SupervisorError::NotFound(id))));
        };
        child.state = ChildState::Starting;
        let start = run_start(child.spec.start.clone(), child.spec.arbiter.clone());
        Box::pin(start.into_actor(self).map(move |result, act, ctx| match result {
            Ok(started) => {
                let present = matches!(
                    act.children.get(&seq).map(|c| &c.state),
                    Some(ChildState::Starting)
                );
                if act.phase == Phase::Running && present {
                    act.install(seq, started, ctx);
                    Ok(())
                } else {
                    // Removed, or the supervisor is stopping: dropping `started` kills it.
                    Err(SupervisorError::ShuttingDown)
                }
            }
            Err(source) => {
                act.remove_seq(seq);
                tracing::warn!(supervisor = %act.name, child = %id, error = %source, "child failed to start");
                Err(SupervisorError::StartFailed { id, source })
            }
        }))
    }
}

impl Handler<RemoveChild> for Supervisor {
    type Result = ResponseFuture<Result<(), SupervisorError>>;

    fn handle(&mut self, RemoveChild(id): RemoveChild, _ctx: &mut Context<Self>) -> Self::Result {
        let Some(seq) = self.index.get(&id).copied() else {
            return Box::pin(std::future::ready(Err(SupervisorError::NotFound(id))));
        };
        let Some(child) = self.remove_seq(seq) else {
            return Box::pin(std::future::ready(Err(SupervisorError::NotFound(id))));
        };
        match child.state {
            ChildState::Running(started) => {
                let ticket = StopTicket {
                    started,
                    shutdown: child.spec.shutdown,
                };
                Box::pin(async move {
                    stop_child(ticket).await;
                    Ok(())
                })
            }
            // A child still starting is dropped (and so killed) when its start completes.
            ChildState::Starting | ChildState::Stopped => Box::pin(std::future::ready(Ok(()))),
        }
    }
}

impl<A: Actor> Handler<ChildAddr<A>> for Supervisor {
    type Result = Option<Addr<A>>;

    fn handle(&mut self, msg: ChildAddr<A>, _ctx: &mut Context<Self>) -> Option<Addr<A>> {
        let seq = self.index.get(&msg.0)?;
        match &self.children.get(seq)?.state {
            ChildState::Running(started) => started.addr::<A>(),
            _ => None,
        }
    }
}

impl Handler<CountChildren> for Supervisor {
    type Result = MessageResult<CountChildren>;

    fn handle(&mut self, _msg: CountChildren, _ctx: &mut Context<Self>) -> Self::Result {
        let mut count = ChildCount {
            specs: self.children.len(),
            active: 0,
            supervisors: 0,
            workers: 0,
        };
        for child in self.children.values() {
            if matches!(child.state, ChildState::Running(_)) {
                count.active += 1;
            }
            match child.spec.kind {
                ChildKind::Supervisor => count.supervisors += 1,
                ChildKind::Worker => count.workers += 1,
            }
        }
        MessageResult(count)
    }
}

impl Handler<GetTree> for Supervisor {
    type Result = ResponseFuture<TreeNode>;

    fn handle(&mut self, _msg: GetTree, _ctx: &mut Context<Self>) -> Self::Result {
        let mut nodes = Vec::with_capacity(self.children.len());
        for child in self.children.values() {
            let (state, nested) = match &child.state {
                ChildState::Running(started) => (
                    "running",
                    started
                        .addr::<Supervisor>()
                        .filter(|_| child.spec.kind == ChildKind::Supervisor),
                ),
                ChildState::Starting => ("starting", None),
                ChildState::Stopped => ("stopped", None),
            };
            let node = TreeNode {
                id: child.spec.id.clone(),
                kind: child.spec.kind,
                state: state.to_owned(),
                restarts: child.restarts,
                last_exit: child.last_exit.as_ref().map(ToString::to_string),
                started_at_ms: child.started_at.map(unix_ms),
                children: Vec::new(),
            };
            nodes.push(async move {
                let Some(addr) = nested else { return node };
                match tokio::time::timeout(TREE_TIMEOUT, addr.send(GetTree)).await {
                    Ok(Ok(sub)) => TreeNode {
                        children: sub.children,
                        ..node
                    },
                    _ => TreeNode {
                        state: "unresponsive".to_owned(),
                        ..node
                    },
                }
            });
        }
        let own = TreeNode {
            id: self.name.clone(),
            kind: ChildKind::Supervisor,
            state: match self.phase {
                Phase::Starting => "starting",
                Phase::Running => "running",
                Phase::ShuttingDown => "stopping",
                Phase::Stopped => "stopped",
            }
            .to_owned(),
            restarts: 0,
            last_exit: None,
            started_at_ms: Some(unix_ms(self.started_at)),
            children: Vec::new(),
        };
        Box::pin(async move {
            TreeNode {
                children: join_all(nodes).await,
                ..own
            }
        })
    }
}

impl Handler<RetryRestart> for Supervisor {
    type Result = ();

    fn handle(&mut self, RetryRestart(seqs): RetryRestart, ctx: &mut Context<Self>) {
        self.retry_restart(seqs, ctx);
    }
}
