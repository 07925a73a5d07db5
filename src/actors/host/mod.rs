//! The host actor: the host's facts and its inventory of VMs (by uuid and
//! name). `host.info` answers from the hypervisor's facts as last read,
//! and reads them again (on the blocking pool) once the driver says it
//! changed the host's memory or they are older than [`PHYSINFO_MAX_AGE`];
//! memory admission is the hypervisor's own (a domain that does not fit is
//! refused at creation and leaves nothing behind).

mod messages;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix::{
    Actor, ActorFutureExt, ActorResponse, AsyncContext, Context, Handler, MessageResult,
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

/// How long `host.info` trusts a physinfo read when the driver changed
/// nothing since: what other toolstacks or guests' balloons do shows
/// within this.
pub const PHYSINFO_MAX_AGE: Duration = Duration::from_millis(10);

/// A physinfo read, with the driver's memory change count read just
/// before it, and when.
#[derive(Debug)]
struct Phys {
    info: PhysInfo,
    changes: u64,
    at: Instant,
}

impl Phys {
    /// Reads the hypervisor's facts (blocking).
    fn read(driver: &dyn Hypervisor) -> Result<Phys, HypervisorError> {
        let changes = driver.memory_changes();
        let at = Instant::now();
        Ok(Phys {
            info: driver.physinfo()?,
            changes,
            at,
        })
    }

    fn fresh(&self, driver: &dyn Hypervisor) -> bool {
        self.changes == driver.memory_changes() && self.at.elapsed() < PHYSINFO_MAX_AGE
    }
}

/// The host actor.
#[derive(Debug)]
pub struct HostActor {
    driver: Arc<dyn Hypervisor>,
    hostname: String,
    phys: Phys,
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
                let phys = blocking(&driver, Phys::read)
                    .await
                    .map_err(StartError::new)?;
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
    /// Keeps a read unless a later one is already kept (reads may finish
    /// out of order).
    fn keep(&mut self, read: Result<Phys, String>) {
        match read {
            Ok(phys) if phys.at >= self.phys.at => self.phys = phys,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the host's facts"),
        }
    }

    fn info(&self) -> HostInfo {
        HostInfo {
            hostname: self.hostname.clone(),
            hypervisor: self.driver.kind().as_str().to_owned(),
            xen_version: self.phys.info.xen_version.clone(),
            total_mib: self.phys.info.total_mib,
            free_mib: self.phys.info.free_mib,
            cpus: self.phys.info.cpus,
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
            async move { blocking(&driver, Phys::read).await }
                .into_actor(self)
                .map(|fresh, act, ctx| {
                    act.refreshing = false;
                    act.keep(fresh);
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
    type Result = ActorResponse<Self, HostInfo>;

    /// From the last read while it is fresh; otherwise read the
    /// hypervisor's facts again (on the blocking pool), falling back to the
    /// last ones known if that fails.
    fn handle(&mut self, _msg: GetHostInfo, _ctx: &mut Context<Self>) -> Self::Result {
        if self.phys.fresh(self.driver.as_ref()) {
            return ActorResponse::reply(self.info());
        }
        let driver = self.driver.clone();
        ActorResponse::r#async(
            async move { blocking(&driver, Phys::read).await }
                .into_actor(self)
                .map(|fresh, act, _ctx| {
                    act.keep(fresh);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SimConfig;
    use crate::drivers::sim::SimHypervisor;
    use crate::drivers::{DomainConfig, DomainType};

    #[test]
    fn a_kept_read_goes_stale_when_the_driver_changes_memory_or_ages() {
        let h = SimHypervisor::new(SimConfig {
            total_mib: 4096,
            dom0_mib: 512,
            cpus: 2,
        });
        let phys = Phys::read(&h).unwrap();
        assert!(phys.fresh(&h));
        let d = h
            .create_domain(&DomainConfig {
                uuid: [1; 16],
                domain_type: DomainType::Pv,
                memory_mib: 64,
                vcpus: 1,
            })
            .unwrap();
        assert!(!phys.fresh(&h), "a created domain invalidates it");
        let again = Phys::read(&h).unwrap();
        assert_eq!(again.info.free_mib, phys.info.free_mib - 64);
        assert!(again.fresh(&h));
        h.destroy(d).unwrap();
        assert!(!again.fresh(&h), "a destroyed domain invalidates it");
        let last = Phys::read(&h).unwrap();
        std::thread::sleep(PHYSINFO_MAX_AGE);
        assert!(!last.fresh(&h), "it ages out");
    }
}
