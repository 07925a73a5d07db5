//! The host actor: the host's inventory (hypervisor facts, later the VMs
//! and memory admission). It answers `host.info` from its own state and
//! refreshes it from the hypervisor on the blocking pool.

mod messages;

use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, ActorFutureExt, AsyncContext, Context, Handler, MessageResult, WrapFuture};

pub use messages::{GetHostInfo, HostInfo};

use super::slot::AddrSlot;
use super::supervisor::{ChildSpec, StartError};
use crate::drivers::{Hypervisor, HypervisorError, PhysInfo};

/// How often the cached physical facts are refreshed.
const REFRESH: Duration = Duration::from_secs(5);

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
    pub fn spec(driver: Arc<dyn Hypervisor>, slot: AddrSlot<HostActor>) -> ChildSpec {
        ChildSpec::worker_async("host", move |_exit| {
            let (driver, slot) = (driver.clone(), slot.clone());
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
                })
            }
        })
    }
}

impl Actor for HostActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.slot.publish(ctx.address());
        ctx.run_interval(REFRESH, |act, ctx| {
            let driver = act.driver.clone();
            ctx.spawn(
                async move { blocking(&driver, |d| d.physinfo()).await }
                    .into_actor(act)
                    .map(|result, act, _ctx| match result {
                        Ok(phys) => act.phys = phys,
                        Err(error) => tracing::warn!(%error, "cannot refresh host facts"),
                    }),
            );
        });
    }
}

impl Handler<GetHostInfo> for HostActor {
    type Result = MessageResult<GetHostInfo>;

    fn handle(&mut self, _msg: GetHostInfo, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(HostInfo {
            hostname: self.hostname.clone(),
            hypervisor: self.driver.kind().as_str().to_owned(),
            xen_version: self.phys.xen_version.clone(),
            total_mib: self.phys.total_mib,
            free_mib: self.phys.free_mib,
            cpus: self.phys.cpus,
            // VMs arrive with the domains supervisor; until then the host has none.
            vms: 0,
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

    pub async fn info(&self) -> Result<HostInfo, HostError> {
        let addr = self.slot.get().ok_or(HostError::Unavailable)?;
        Ok(addr.send(GetHostInfo).await?)
    }
}
