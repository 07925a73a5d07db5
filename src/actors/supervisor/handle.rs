//! Typed handles to supervisors: what the rest of xenith holds instead of
//! an `Addr`, with mailbox failures turned into [`SupervisorError`].

use std::marker::PhantomData;

use actix::{Actor, Addr};
use tokio::sync::{mpsc, oneshot, watch};

use super::messages::{ChildAddr, CountChildren, GetTree, RemoveChild, StartChild};
use super::runner::{spawn_supervised, wait_exit, Ctl, Started};
use super::spec::{ChildKind, ChildSpec, ExitReason, ExitSlot, StartError, SupervisorFlags};
use super::state::Supervisor;
use super::tree::{ChildCount, TreeNode};
use super::SupervisorError;

/// A cheap, clonable handle to a running supervisor.
#[derive(Debug, Clone)]
pub struct SupervisorHandle {
    addr: Addr<Supervisor>,
}

impl SupervisorHandle {
    pub(crate) fn new(addr: Addr<Supervisor>) -> Self {
        Self { addr }
    }

    /// Adds and starts a child; returns once it has started.
    pub async fn start_child(&self, spec: ChildSpec) -> Result<(), SupervisorError> {
        self.addr.send(StartChild(spec)).await?
    }

    /// Stops a child (within its shutdown policy) and forgets it.
    pub async fn remove_child(&self, id: impl Into<String>) -> Result<(), SupervisorError> {
        self.addr.send(RemoveChild(id.into())).await?
    }

    /// The address of a running child of type `A` (for that actor's own typed handle).
    pub async fn child<A: Actor>(
        &self,
        id: impl Into<String>,
    ) -> Result<Option<Addr<A>>, SupervisorError> {
        Ok(self
            .addr
            .send(ChildAddr::<A>(id.into(), PhantomData))
            .await?)
    }

    /// The handle of a nested supervisor, if that child runs.
    pub async fn child_supervisor(
        &self,
        id: impl Into<String>,
    ) -> Result<Option<SupervisorHandle>, SupervisorError> {
        Ok(self
            .child::<Supervisor>(id)
            .await?
            .map(SupervisorHandle::new))
    }

    /// A snapshot of the subtree below (and including) this supervisor.
    pub async fn tree(&self) -> Result<TreeNode, SupervisorError> {
        Ok(self.addr.send(GetTree).await?)
    }

    pub async fn count(&self) -> Result<ChildCount, SupervisorError> {
        Ok(self.addr.send(CountChildren).await?)
    }

    /// The supervisor `slot` holds now, if it runs.
    pub fn current(slot: &crate::actors::slot::AddrSlot<Supervisor>) -> Option<SupervisorHandle> {
        slot.get().map(SupervisorHandle::new)
    }

    /// Makes this supervisor the current one in `slot`.
    pub fn publish(&self, slot: &crate::actors::slot::AddrSlot<Supervisor>) {
        slot.publish(self.addr.clone());
    }
}

/// The top of a supervision tree, owned by the program that started it.
/// Dropping it kills the tree at once; [`RootSupervisor::shutdown`] stops
/// it in order.
#[derive(Debug)]
pub struct RootSupervisor {
    handle: SupervisorHandle,
    ctl: mpsc::UnboundedSender<Ctl>,
    exit: watch::Receiver<Option<ExitReason>>,
}

impl RootSupervisor {
    /// Starts a root supervisor and its children, in order, on the current
    /// arbiter; fails with the reason if a child fails to start.
    pub async fn start(
        name: impl Into<String>,
        flags: SupervisorFlags,
        children: Vec<ChildSpec>,
    ) -> Result<Self, SupervisorError> {
        Self::start_with_events(name, flags, children, None).await
    }

    /// Like [`RootSupervisor::start`]; the root's children's exits and
    /// restarts are published on `events`.
    pub async fn start_with_events(
        name: impl Into<String>,
        flags: SupervisorFlags,
        children: Vec<ChildSpec>,
        events: Option<crate::actors::events::EventBus>,
    ) -> Result<Self, SupervisorError> {
        let name = name.into();
        let started = start_supervisor(name.clone(), flags, children, None, events)
            .await
            .map_err(|source| SupervisorError::StartFailed { id: name, source })?;
        let handle = started
            .addr::<Supervisor>()
            .map(SupervisorHandle::new)
            .ok_or(SupervisorError::Unavailable)?;
        Ok(Self {
            handle,
            ctl: started.ctl,
            exit: started.exit,
        })
    }

    pub fn handle(&self) -> SupervisorHandle {
        self.handle.clone()
    }

    /// Waits until the tree ends by itself (e.g. past its restart intensity).
    pub async fn wait_exit(&self) -> ExitReason {
        wait_exit(self.exit.clone()).await
    }

    /// Stops the whole tree in reverse start order and returns how it ended.
    pub async fn shutdown(self) -> ExitReason {
        let _ = self.ctl.send(Ctl::Stop);
        wait_exit(self.exit.clone()).await
    }
}

/// Spawns a supervisor on the current arbiter and waits for its initial
/// children to start.
pub(crate) async fn start_supervisor(
    name: String,
    flags: SupervisorFlags,
    children: Vec<ChildSpec>,
    publish: Option<crate::actors::slot::AddrSlot<Supervisor>>,
    events: Option<crate::actors::events::EventBus>,
) -> Result<Started, StartError> {
    let (init_tx, init_rx) = oneshot::channel();
    let exit = ExitSlot::new();
    let mut sup = Supervisor::new(name.clone(), flags, children, exit.clone(), init_tx);
    sup.publish = publish;
    sup.events = events;
    let started = spawn_supervised(sup, exit, ChildKind::Supervisor);
    match init_rx.await {
        Ok(Ok(())) => Ok(started),
        Ok(Err(e)) => Err(e),
        Err(_) => {
            let reason = wait_exit(started.exit.clone()).await;
            Err(StartError::new(format!(
                "supervisor {name} ended during its start: {reason}"
            )))
        }
    }
}

impl From<Addr<Supervisor>> for SupervisorHandle {
    fn from(addr: Addr<Supervisor>) -> Self {
        Self::new(addr)
    }
}
