//! The host actor: the host's facts. `host.info` answers from the
//! hypervisor's facts as last read,
//! and reads them again (on the blocking pool) once the driver says it
//! changed the host's memory or they are older than [`PHYSINFO_MAX_AGE`];
//! memory admission is the hypervisor's own (a domain that does not fit is
//! refused at creation and leaves nothing behind).

mod messages;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{
    Actor, ActorFutureExt, ActorResponse, AsyncContext, Context, Handler, ResponseFuture,
    StreamHandler, WrapFuture,
};
use tokio::sync::broadcast::error::RecvError;

pub use messages::{GetHostDevices, GetHostInfo, HostDevices, HostInfo};

use super::events::{EventBus, EventClass, EventKind};
use super::inventory::VmCount;
use super::slot::AddrSlot;
use super::supervisor::{ChildSpec, StartError};
use crate::drivers::devices::DeviceHost;
use crate::drivers::{Hv, HvError, PhysInfo};

/// What a host request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("the host actor is not running (it may be restarting)")]
    Unavailable,
    #[error(transparent)]
    Pool(#[from] crate::drivers::blocking::PoolError),
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
    /// Reads the hypervisor's facts.
    async fn read(hv: &Hv) -> Result<Phys, HvError> {
        let changes = hv.memory_changes();
        let at = Instant::now();
        Ok(Phys {
            info: hv.physinfo().await?,
            changes,
            at,
        })
    }

    fn fresh(&self, hv: &Hv) -> bool {
        self.changes == hv.memory_changes() && self.at.elapsed() < PHYSINFO_MAX_AGE
    }
}

/// The host actor.
#[derive(Debug)]
pub struct HostActor {
    hv: Hv,
    devices: Arc<dyn DeviceHost>,
    hostname: String,
    phys: Phys,
    slot: AddrSlot<HostActor>,
    /// How many VMs the inventory holds.
    vms: VmCount,
    events: Option<EventBus>,
    /// What the last `host` event said (none is sent when nothing changed).
    told: Option<HostInfo>,
    refreshing: bool,
    dirty: bool,
}

impl HostActor {
    /// The host actor's child spec: it reads the host's facts before it
    /// counts as started (no hypervisor, no start).
    ///
    /// With `events`, it follows VM events and publishes the host's own
    /// (`host`, kind mod: host.info's fields) when they change it.
    pub fn spec(
        hv: Hv,
        devices: Arc<dyn DeviceHost>,
        slot: AddrSlot<HostActor>,
        vms: VmCount,
        events: Option<EventBus>,
    ) -> ChildSpec {
        ChildSpec::worker_async("host", move |_exit| {
            let (hv, devices, slot, vms) = (hv.clone(), devices.clone(), slot.clone(), vms.clone());
            let events = events.clone();
            async move {
                let phys = Phys::read(&hv)
                    .await
                    .map_err(|e| StartError::new(crate::error::chain(&e)))?;
                let hostname = nix::unistd::gethostname()
                    .map(|h| h.to_string_lossy().into_owned())
                    .unwrap_or_else(|_| "localhost".to_owned());
                Ok(HostActor {
                    hv,
                    devices,
                    hostname,
                    phys,
                    slot,
                    vms,
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
    fn keep(&mut self, read: Result<Phys, HvError>) {
        match read {
            Ok(phys) if phys.at >= self.phys.at => self.phys = phys,
            Ok(_) => {}
            Err(e) => {
                let error = crate::error::chain(&e);
                tracing::warn!(%error, "cannot read the host's facts");
            }
        }
    }

    fn info(&self) -> HostInfo {
        HostInfo {
            hostname: self.hostname.clone(),
            hypervisor: self.hv.kind().as_str().to_owned(),
            xen_version: self.phys.info.xen_version.clone(),
            total_mib: self.phys.info.total_mib,
            free_mib: self.phys.info.free_mib,
            cpus: self.phys.info.cpus,
            vms: u64::try_from(*self.vms.borrow()).unwrap_or(u64::MAX),
            xenstore: None,
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
        let hv = self.hv.clone();
        ctx.spawn(
            async move { Phys::read(&hv).await }
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
        if self.phys.fresh(&self.hv) {
            return ActorResponse::reply(self.info());
        }
        let hv = self.hv.clone();
        ActorResponse::r#async(async move { Phys::read(&hv).await }.into_actor(self).map(
            |fresh, act, _ctx| {
                act.keep(fresh);
                act.info()
            },
        ))
    }
}

impl Handler<GetHostDevices> for HostActor {
    type Result = ResponseFuture<Result<HostDevices, HostError>>;

    /// What `losetup -a` and `ip link` would say of guests' devices.
    fn handle(&mut self, _msg: GetHostDevices, _ctx: &mut Context<Self>) -> Self::Result {
        let devices = self.devices.clone();
        Box::pin(async move {
            Ok(crate::drivers::blocking::run(move || HostDevices {
                loop_devices: devices.loop_devices(),
                interfaces: devices.vif_interfaces(),
            })
            .await?)
        })
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

    /// `host.devices`.
    pub async fn devices(&self) -> Result<HostDevices, HostError> {
        self.addr()?.send(GetHostDevices).await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SimConfig;
    use crate::drivers::sim::SimHypervisor;
    use crate::drivers::{DomainConfig, DomainType};

    #[tokio::test]
    async fn a_kept_read_goes_stale_when_the_driver_changes_memory_or_ages() {
        let hv = Hv::new(Arc::new(SimHypervisor::new(SimConfig {
            total_mib: 4096,
            dom0_mib: 512,
            cpus: 2,
        })));
        let phys = Phys::read(&hv).await.unwrap();
        assert!(phys.fresh(&hv));
        let d = hv
            .create_domain(DomainConfig {
                uuid: [1; 16],
                domain_type: DomainType::Pv,
                memory_mib: 64,
                vcpus: 1,
            })
            .await
            .unwrap();
        assert!(!phys.fresh(&hv), "a created domain invalidates it");
        let again = Phys::read(&hv).await.unwrap();
        assert_eq!(again.info.free_mib, phys.info.free_mib - 64);
        assert!(again.fresh(&hv));
        hv.destroy(d).await.unwrap();
        assert!(!again.fresh(&hv), "a destroyed domain invalidates it");
        let last = Phys::read(&hv).await.unwrap();
        tokio::time::sleep(PHYSINFO_MAX_AGE).await;
        assert!(!last.fresh(&hv), "it ages out");
    }
}
