//! The host actor: the host's facts and its inventory of VMs (by uuid and
//! name). `host.info` reads the hypervisor's facts when asked, on the
//! blocking pool; memory admission is the hypervisor's own (a domain that
//! does not fit is refused at creation and leaves nothing behind).

mod messages;

use std::sync::{Arc, Mutex, MutexGuard};

use actix::{
    Actor, ActorFutureExt, AsyncContext, Context, Handler, MessageResult, ResponseActFuture,
    StreamHandler, WrapFuture,
};
use tokio::sync::broadcast::error::RecvError;

pub use messages::{GetHostInfo, HostInfo, ListVms, RegisterVm, ResolveVm, UnregisterVm};

use super::domain::VmHandle;
use super::events::{EventBus, EventClass, EventKind};
use super::slot::AddrSlot;
use super::supervisor::{ChildSpec, StartError};
use crate::api::{ApiError, ErrorCode};
use crate::drivers::{Hypervisor, HypervisorError, PhysInfo};

/// What a host request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("the host actor is not running (it may be restarting)")]
    Unavailable,
}

impl From<actix::MailboxError> for HostError {
    fn from(_: actix::MailboxError) -> Self {
        HostError::Unavailable
    }
}

/// The host actor.
#[derive(Debug)]
pub struct HostActor {
    driver: Arc<dyn Hypervisor>,
    hostname: String,
    phys: PhysInfo,
    slot: AddrSlot<HostActor>,
    /// The inventory. It outlives this incarnation (the child spec owns
    /// it, like an OTP table with an heir): a restarted host actor finds
    /// every VM again. Only the current incarnation touches it.
    inventory: Arc<Mutex<Inventory>>,
    events: Option<EventBus>,
    /// What the last `host` event said (none is sent when nothing changed).
    told: Option<HostInfo>,
    refreshing: bool,
    dirty: bool,
}

/// Every VM xenith knows, by uuid, and names to uuids.
#[derive(Debug, Default)]
pub struct Inventory {
    vms: std::collections::BTreeMap<uuid::Uuid, VmHandle>,
    names: std::collections::HashMap<String, uuid::Uuid>,
}

impl HostActor {
    fn inventory(&self) -> MutexGuard<'_, Inventory> {
        self.inventory.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Runs a hypervisor call on the blocking pool.
async fn blocking<T: Send + 'static>(
    driver: &Arc<dyn Hypervisor>,
    call: fn(&dyn Hypervisor) -> Result<T, HypervisorError>,
) -> Result<T, String> {
    let driver = driver.clone();
    match tokio::task::spawn_blocking(move || call(driver.as_ref())).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(crate::error::chain(&e)),
        Err(e) => Err(format!("hypervisor call did not complete: {e}")),
    }
}

impl HostActor {
    /// The host actor's child spec: it reads the host's facts before it
    /// counts as started (no hypervisor, no start).
    ///
    /// With `events`, it follows VM events and publishes the host's own
    /// (`host`, kind mod: host.info's fields) when they change it.
    pub fn spec(
        driver: Arc<dyn Hypervisor>,
        slot: AddrSlot<HostActor>,
        events: Option<EventBus>,
    ) -> ChildSpec {
        let inventory = Arc::new(Mutex::new(Inventory::default()));
        ChildSpec::worker_async("host", move |_exit| {
            let (driver, slot, inventory) = (driver.clone(), slot.clone(), inventory.clone());
            let events = events.clone();
            async move {
                let phys = blocking(&driver, |d| d.physinfo())
                    .await
                    .map_err(StartError)?;
                let hostname = nix::unistd::gethostname()
                    .map(|h| h.to_string_lossy().into_owned())
                    .unwrap_or_else(|_| "localhost".to_owned());
                Ok(HostActor {
                    driver,
                    hostname,
                    phys,
                    slot,
                    inventory: inventory.clone(),
                    events,
                    told: None,
                    refreshing: false,
                    dirty: false,
                })
            }
        })
    }
}

impl Actor for HostActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.slot.publish(ctx.address());
        if let Some(bus) = &self.events {
            let rx = bus.subscribe_internal();
            ctx.add_stream(futures_util::stream::unfold(rx, |mut rx| async move {
                loop {
                    match rx.recv().await {
                        Ok(e) if e.class == EventClass::Vm => return Some(((), rx)),
                        Ok(_) => continue,
                        // Behind: something changed; look again.
                        Err(RecvError::Lagged(_)) => return Some(((), rx)),
                        Err(RecvError::Closed) => return None,
                    }
                }
            }));
        }
    }
}

impl HostActor {
    fn info(&self) -> HostInfo {
        HostInfo {
            hostname: self.hostname.clone(),
            hypervisor: self.driver.kind().as_str().to_owned(),
            xen_version: self.phys.xen_version.clone(),
            total_mib: self.phys.total_mib,
            free_mib: self.phys.free_mib,
            cpus: self.phys.cpus,
            vms: self.inventory().vms.len() as u64,
        }
    }

    /// A VM changed: read the host's facts again (one read at a time) and
    /// tell subscribers if they changed.
    fn refresh(&mut self, ctx: &mut Context<Self>) {
        if self.refreshing {
            self.dirty = true;
            return;
        }
        self.refreshing = true;
        let driver = self.driver.clone();
        ctx.spawn(
            async move { blocking(&driver, |d| d.physinfo()).await }
                .into_actor(self)
                .map(|fresh, act, ctx| {
                    act.refreshing = false;
                    if let Ok(phys) = fresh {
                        act.phys = phys;
                    }
                    let now = act.info();
                    if act.told.as_ref() != Some(&now) {
                        if let Some(bus) = &act.events {
                            bus.publish(
                                EventClass::Host,
                                now.hostname.clone(),
                                EventKind::Mod,
                                || &now,
                            );
                        }
                        act.told = Some(now);
                    }
                    if std::mem::take(&mut act.dirty) {
                        act.refresh(ctx);
                    }
                }),
        );
    }
}

impl StreamHandler<()> for HostActor {
    fn handle(&mut self, _: (), ctx: &mut Context<Self>) {
        self.refresh(ctx);
    }
}

impl Handler<GetHostInfo> for HostActor {
    type Result = ResponseActFuture<Self, HostInfo>;

    /// Free memory changes with every VM start and stop: read the
    /// hypervisor's facts now (on the blocking pool), falling back to the
    /// last ones known if that fails.
    fn handle(&mut self, _msg: GetHostInfo, _ctx: &mut Context<Self>) -> Self::Result {
        let driver = self.driver.clone();
        Box::pin(
            async move { blocking(&driver, |d| d.physinfo()).await }
                .into_actor(self)
                .map(|fresh, act, _ctx| {
                    if let Ok(phys) = fresh {
                        act.phys = phys;
                    }
                    act.info()
                }),
        )
    }
}

impl Handler<RegisterVm> for HostActor {
    type Result = Result<(), ApiError>;

    fn handle(&mut self, RegisterVm(vm): RegisterVm, _ctx: &mut Context<Self>) -> Self::Result {
        let mut inv = self.inventory();
        if inv.names.contains_key(&vm.name) {
            return Err(ApiError::new(
                ErrorCode::AlreadyExists,
                format!("a VM named {} exists", vm.name),
            )
            .with_details(vec![vm.name.clone()]));
        }
        if inv.vms.contains_key(&vm.uuid) {
            return Err(ApiError::new(
                ErrorCode::AlreadyExists,
                format!("VM {} exists", vm.uuid),
            ));
        }
        inv.names.insert(vm.name.clone(), vm.uuid);
        inv.vms.insert(vm.uuid, vm);
        Ok(())
    }
}

impl Handler<UnregisterVm> for HostActor {
    type Result = ();

    fn handle(&mut self, UnregisterVm(uuid): UnregisterVm, _ctx: &mut Context<Self>) {
        let mut inv = self.inventory();
        if let Some(vm) = inv.vms.remove(&uuid) {
            inv.names.remove(&vm.name);
        }
    }
}

impl Handler<ResolveVm> for HostActor {
    type Result = Option<VmHandle>;

    fn handle(&mut self, ResolveVm(key): ResolveVm, _ctx: &mut Context<Self>) -> Self::Result {
        let inv = self.inventory();
        let uuid = uuid::Uuid::parse_str(&key)
            .ok()
            .or_else(|| inv.names.get(&key).copied())?;
        inv.vms.get(&uuid).cloned()
    }
}

impl Handler<ListVms> for HostActor {
    type Result = MessageResult<ListVms>;

    fn handle(&mut self, _msg: ListVms, _ctx: &mut Context<Self>) -> Self::Result {
        let mut vms: Vec<VmHandle> = self.inventory().vms.values().cloned().collect();
        vms.sort_by(|a, b| a.name.cmp(&b.name));
        MessageResult(vms)
    }
}

/// The typed handle to the host actor.
#[derive(Debug, Clone)]
pub struct HostHandle {
    slot: AddrSlot<HostActor>,
}

impl HostHandle {
    pub fn new(slot: AddrSlot<HostActor>) -> Self {
        Self { slot }
    }

    fn addr(&self) -> Result<actix::Addr<HostActor>, HostError> {
        self.slot.get().ok_or(HostError::Unavailable)
    }

    pub async fn info(&self) -> Result<HostInfo, HostError> {
        Ok(self.addr()?.send(GetHostInfo).await?)
    }

    pub async fn register(&self, vm: VmHandle) -> Result<Result<(), ApiError>, HostError> {
        Ok(self.addr()?.send(RegisterVm(vm)).await?)
    }

    pub async fn unregister(&self, uuid: uuid::Uuid) -> Result<(), HostError> {
        Ok(self.addr()?.send(UnregisterVm(uuid)).await?)
    }

    pub async fn resolve(&self, key: &str) -> Result<Option<VmHandle>, HostError> {
        Ok(self.addr()?.send(ResolveVm(key.to_owned())).await?)
    }

    pub async fn vms(&self) -> Result<Vec<VmHandle>, HostError> {
        Ok(self.addr()?.send(ListVms).await?)
    }
}
