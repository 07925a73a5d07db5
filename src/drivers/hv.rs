//! The async adapter in front of the hypervisor: every caller (the domain,
//! host, console and emulator actors, the inventory, the daemon) reaches
//! domain control through it. Each call runs on the blocking pool
//! ([`super::blocking`]) within a timeout, and fails one way: [`HvError`],
//! naming the call.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;

use super::hypervisor::{
    BootImage, Built, DomId, DomainConfig, DomainEvent, DomainInfo, Hypervisor, HypervisorError,
    HypervisorKind, PhysInfo, ShutdownReason,
};

/// How long one hypervisor call may take by default.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A hypervisor call that failed, by the step it was.
#[derive(Debug, thiserror::Error)]
pub enum HvError {
    #[error("{call}")]
    Failed {
        call: &'static str,
        #[source]
        source: HypervisorError,
    },
    #[error("{call} did not finish within {after:?}")]
    Timeout { call: &'static str, after: Duration },
    #[error("{call}")]
    Pool {
        call: &'static str,
        #[source]
        source: super::blocking::PoolError,
    },
}

impl HvError {
    /// The step that failed ("create the domain").
    pub fn call(&self) -> &'static str {
        match self {
            HvError::Failed { call, .. }
            | HvError::Timeout { call, .. }
            | HvError::Pool { call, .. } => call,
        }
    }

    /// The hypervisor's own error, if it answered.
    pub fn hypervisor(&self) -> Option<&HypervisorError> {
        match self {
            HvError::Failed { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The hypervisor, async: cheap to clone.
#[derive(Debug, Clone)]
pub struct Hv {
    inner: Arc<dyn Hypervisor>,
    timeout: Duration,
}

impl Hv {
    pub fn new(inner: Arc<dyn Hypervisor>) -> Self {
        Self::with_timeout(inner, CALL_TIMEOUT)
    }

    pub fn with_timeout(inner: Arc<dyn Hypervisor>, timeout: Duration) -> Self {
        Hv { inner, timeout }
    }

    /// Which backend this is (no call is made).
    pub fn kind(&self) -> HypervisorKind {
        self.inner.kind()
    }

    /// The driver's memory change count (no call is made; see
    /// [`Hypervisor::memory_changes`]).
    pub fn memory_changes(&self) -> u64 {
        self.inner.memory_changes()
    }

    /// Runs one call on the blocking pool, within the timeout.
    async fn call<T, F>(&self, call: &'static str, f: F) -> Result<T, HvError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Hypervisor) -> Result<T, HypervisorError> + Send + 'static,
    {
        let inner = self.inner.clone();
        let t0 = std::time::Instant::now();
        let run = super::blocking::run(move || f(inner.as_ref()));
        let out = match tokio::time::timeout(self.timeout, run).await {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(source))) => Err(HvError::Failed { call, source }),
            Ok(Err(source)) => Err(HvError::Pool { call, source }),
            Err(_) => Err(HvError::Timeout {
                call,
                after: self.timeout,
            }),
        };
        tracing::trace!(
            call,
            elapsed_us = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX),
            ok = out.is_ok(),
            "hypercall"
        );
        out
    }

    pub async fn physinfo(&self) -> Result<PhysInfo, HvError> {
        self.call("read the host's facts", |h| h.physinfo()).await
    }

    pub async fn create_domain(&self, config: DomainConfig) -> Result<DomId, HvError> {
        self.call("create the domain", move |h| h.create_domain(&config))
            .await
    }

    pub async fn build_domain(&self, domid: DomId, image: BootImage) -> Result<Built, HvError> {
        self.call("build the domain", move |h| h.build_domain(domid, &image))
            .await
    }

    pub async fn unpause(&self, domid: DomId) -> Result<(), HvError> {
        self.call("unpause the domain", move |h| h.unpause(domid))
            .await
    }

    pub async fn pause(&self, domid: DomId) -> Result<(), HvError> {
        self.call("pause the domain", move |h| h.pause(domid)).await
    }

    pub async fn listens_for_shutdown(&self, domid: DomId) -> Result<bool, HvError> {
        self.call("read the guest's callback", move |h| {
            h.listens_for_shutdown(domid)
        })
        .await
    }

    pub async fn power_button(&self, domid: DomId) -> Result<(), HvError> {
        self.call("press the ACPI power button", move |h| {
            h.power_button(domid)
        })
        .await
    }

    pub async fn shutdown(&self, domid: DomId, reason: ShutdownReason) -> Result<(), HvError> {
        self.call("shut the domain down", move |h| h.shutdown(domid, reason))
            .await
    }

    pub async fn destroy(&self, domid: DomId) -> Result<(), HvError> {
        self.call("destroy the domain", move |h| h.destroy(domid))
            .await
    }

    pub async fn domain_info(&self, domid: DomId) -> Result<DomainInfo, HvError> {
        self.call("read the domain's state", move |h| h.domain_info(domid))
            .await
    }

    pub async fn list_domains(&self) -> Result<Vec<DomainInfo>, HvError> {
        self.call("list the domains", |h| h.list_domains()).await
    }

    /// The running domain with this uuid (dom0 never counts), if any.
    pub async fn find_domain(&self, uuid: [u8; 16]) -> Result<Option<DomainInfo>, HvError> {
        self.call("find the VM's domain", move |h| {
            Ok(h.list_domains()?
                .into_iter()
                .find(|d| d.uuid == uuid && d.domid != DomId::DOM0))
        })
        .await
    }

    pub async fn set_memory_target(&self, domid: DomId, mib: u64) -> Result<(), HvError> {
        self.call("set the memory target", move |h| {
            h.set_memory_target(domid, mib)
        })
        .await
    }

    pub async fn subscribe(&self, domid: DomId) -> Result<UnboundedReceiver<DomainEvent>, HvError> {
        self.call("follow the domain", move |h| h.subscribe(domid))
            .await
    }

    pub async fn open_console(
        &self,
        domid: DomId,
        name: String,
    ) -> Result<UnboundedReceiver<Vec<u8>>, HvError> {
        self.call("open the console", move |h| h.open_console(domid, &name))
            .await
    }
}
