//! A VM's typed handle and its supervisor's spec.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{DomainActor, Op, PowerState, VmEnv, VmOp, VmParts, VmSnapshot};
use crate::actors::agent::GuestMetrics;
use crate::actors::backend::{DeviceStates, XenbusState};
use crate::actors::slot::AddrSlot;
use crate::actors::supervisor::{
    ChildSpec, Strategy, Supervisor, SupervisorFlags, SupervisorHandle,
};
use crate::api::{ApiError, ErrorCode};
use crate::vm::VmRecord;

/// A VM supervisor's restart intensity: its domain actor and device
/// backends are restarted one by one (one_for_one), at most 10 times a
/// minute; past that the VM's supervisor gives up and the domains
/// supervisor restarts it (re-syncing from the hypervisor and xenstore).
pub const VM_FLAGS: SupervisorFlags = SupervisorFlags {
    strategy: Strategy::OneForOne,
    max_restarts: 10,
    period: Duration::from_secs(60),
};

/// What the rest of xenith holds of a VM.
#[derive(Debug, Clone)]
pub struct VmHandle {
    pub uuid: uuid::Uuid,
    pub name: String,
    domain: AddrSlot<DomainActor>,
    vm_sup: AddrSlot<Supervisor>,
    snapshot: watch::Receiver<VmSnapshot>,
    guest: watch::Receiver<GuestMetrics>,
    device_states: DeviceStates,
}

impl VmHandle {
    /// The VM's supervisor spec (child of the domains supervisor, id =
    /// uuid) and its handle.
    pub fn build(record: VmRecord, env: VmEnv) -> (ChildSpec, VmHandle) {
        let (vm_sup, domain) = (AddrSlot::new(), AddrSlot::new());
        let spec = &record.spec;
        let initial = VmSnapshot {
            uuid: record.uuid,
            power_state: PowerState::Halted,
            domid: None,
            busy: None,
            spec: Arc::new(spec.clone()),
        };
        let snapshot = Arc::new(watch::Sender::new(initial));
        let guest = Arc::new(watch::Sender::new(GuestMetrics::default()));
        let device_states = DeviceStates::default();
        let handle = VmHandle {
            uuid: record.uuid,
            name: spec.name.clone(),
            domain: domain.clone(),
            vm_sup: vm_sup.clone(),
            snapshot: snapshot.subscribe(),
            guest: guest.subscribe(),
            device_states: device_states.clone(),
        };
        let id = record.uuid.to_string();
        let events = env.events.clone();
        let parts = VmParts {
            record,
            env,
            vm_sup: vm_sup.clone(),
            domain,
            snapshot,
            guest,
            device_states,
        };
        let child = ChildSpec::supervisor_observed(
            id,
            VM_FLAGS,
            vec![DomainActor::spec(parts)],
            Some(vm_sup),
            Some(events),
        );
        (child, handle)
    }

    /// The VM's state as its domain actor last published it.
    pub fn snapshot(&self) -> VmSnapshot {
        self.snapshot.borrow().clone()
    }

    /// The VM's spec as it is now.
    pub fn spec(&self) -> Arc<crate::vm::VmSpec> {
        self.snapshot.borrow().spec.clone()
    }

    /// Plugs or unplugs a device; returns its name ("xvdb", "1").
    pub async fn reconfigure(&self, change: super::DeviceChange) -> Result<String, ApiError> {
        let addr = self.domain.get().ok_or_else(unavailable)?;
        addr.send(super::Reconfigure(change))
            .await
            .map_err(|_| unavailable())?
    }

    /// A device's backend state as its actor last set it ("vbd", "xvda").
    pub fn device_state(&self, kind: &str, name: &str) -> XenbusState {
        self.device_states.get(kind, name)
    }

    /// What the guest agent last reported (empty when the VM does not run).
    pub fn guest(&self) -> GuestMetrics {
        self.guest.borrow().clone()
    }

    /// Runs an operation; returns when the VM has reached its new state.
    pub async fn op(&self, op: VmOp) -> Result<(), ApiError> {
        let addr = self.domain.get().ok_or_else(unavailable)?;
        addr.send(Op(op)).await.map_err(|_| unavailable())?
    }

    /// The VM's own supervisor (its domain actor and device backends).
    pub fn supervisor(&self) -> Option<SupervisorHandle> {
        self.vm_sup.get().map(SupervisorHandle::from)
    }

    /// The domain actor's current address (fault injection, tests).
    pub fn domain_addr(&self) -> Option<actix::Addr<DomainActor>> {
        self.domain.get()
    }
}

fn unavailable() -> ApiError {
    ApiError::new(
        ErrorCode::InternalError,
        "the VM's domain actor is not running (it may be restarting)",
    )
}
