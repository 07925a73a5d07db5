//! A VM's typed handle, and its supervisor's spec.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::devices::DeviceChange;
use super::env::{VmEnv, VmParts};
use super::error::VmError;
use super::messages::{OpReply, Operation, Run, VmOp};
use super::state::{DomainActor, VmSnapshot};
use crate::actors::agent::GuestMetrics;
use crate::actors::backend::DeviceStates;
use crate::actors::emulator::{EmulatorHandle, EmulatorStatus};
use crate::actors::slot::AddrSlot;
use crate::actors::supervisor::{
    ChildSpec, Strategy, Supervisor, SupervisorFlags, SupervisorHandle,
};
use crate::drivers::DomainType;
use crate::vm::{VmRecord, VmSpec};
use crate::xs::{DeviceKind, XenbusState};

/// A VM supervisor's restart intensity: its domain actor and device
/// backends are restarted one by one (one_for_one), at most 10 times a
/// minute; past that the VM's supervisor gives up and the domains
/// supervisor restarts it (re-syncing from the hypervisor and xenstore).
pub const VM_FLAGS: SupervisorFlags = SupervisorFlags {
    strategy: Strategy::OneForOne,
    max_restarts: 10,
    period: Duration::from_secs(60),
};

/// How long an operation waits for a domain actor that is restarting.
const RESTART_WAIT: Duration = Duration::from_secs(5);

/// What the rest of xenith holds of a VM.
#[derive(Debug, Clone)]
pub struct VmHandle {
    pub uuid: uuid::Uuid,
    domain: AddrSlot<DomainActor>,
    vm_sup: AddrSlot<Supervisor>,
    snapshot: watch::Receiver<VmSnapshot>,
    guest: watch::Receiver<GuestMetrics>,
    device_states: DeviceStates,
    env: Arc<VmEnv>,
    /// Its name is another VM's: two records gave one name (only this
    /// VM's uuid names it).
    name_conflict: Arc<std::sync::atomic::AtomicBool>,
}

/// What `vm.get` shows of a VM: its state, its devices' states, what its
/// guest agent reports and, for a running HVM VM, its device model.
#[derive(Debug, Clone)]
pub struct VmDetails {
    pub snapshot: VmSnapshot,
    /// Each device of the spec, in order, with its backend's state
    /// (Unknown while the VM does not run).
    pub devices: Vec<(DeviceKind, String, XenbusState)>,
    pub guest: GuestMetrics,
    pub emulator: Option<EmulatorStatus>,
}

impl VmHandle {
    /// The VM's supervisor spec (child of the domains supervisor, id =
    /// uuid) and its handle.
    pub fn build(record: VmRecord, env: Arc<VmEnv>) -> (ChildSpec, VmHandle) {
        let (vm_sup, domain) = (AddrSlot::new(), AddrSlot::new());
        let uuid = record.uuid;
        let snapshot = Arc::new(watch::Sender::new(VmSnapshot::halted(uuid, record.spec)));
        let guest = Arc::new(watch::Sender::new(GuestMetrics::default()));
        let device_states = DeviceStates::default();
        let handle = VmHandle {
            uuid,
            domain: domain.clone(),
            vm_sup: vm_sup.clone(),
            snapshot: snapshot.subscribe(),
            guest: guest.subscribe(),
            device_states: device_states.clone(),
            env: env.clone(),
            name_conflict: Arc::default(),
        };
        let events = env.events.clone();
        let parts = VmParts {
            uuid,
            env,
            vm_sup: vm_sup.clone(),
            domain,
            snapshot,
            guest,
            device_states,
        };
        let child = ChildSpec::supervisor_observed(
            uuid.to_string(),
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
    pub fn spec(&self) -> Arc<VmSpec> {
        self.snapshot.borrow().spec.clone()
    }

    /// Whether another VM has this VM's name (it is named by its uuid only).
    pub fn name_conflict(&self) -> bool {
        self.name_conflict
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn set_name_conflict(&self) {
        self.name_conflict
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// The VM's name as it is now.
    pub fn name(&self) -> String {
        self.snapshot.borrow().spec.name.clone()
    }

    /// Runs an operation; returns when the VM has reached its new state. A
    /// domain actor that is restarting (after a panic) is waited for.
    pub async fn run(&self, op: Operation) -> Result<OpReply, VmError> {
        let addr = self
            .domain
            .running(RESTART_WAIT)
            .await
            .ok_or(VmError::Unavailable)?;
        // Sent to a running actor: a failure now means it stopped with the
        // operation under way.
        addr.send(Run(op)).await.map_err(|_| VmError::Interrupted)?
    }

    /// Runs a power operation; answers when the VM has reached its new
    /// state (why, when it halted while the operation waited).
    pub async fn op(&self, op: VmOp) -> Result<OpReply, VmError> {
        self.run(Operation::Power(op)).await
    }

    /// Suspends the running VM into its image (progress on `job`).
    pub async fn suspend(
        &self,
        timeout: std::time::Duration,
        job: crate::drivers::storage::Job,
    ) -> Result<OpReply, VmError> {
        self.run(Operation::Suspend { timeout, job }).await
    }

    /// Resumes the Suspended VM (paused, if asked).
    pub async fn resume(&self, paused: bool) -> Result<OpReply, VmError> {
        self.run(Operation::Resume { paused }).await
    }

    /// Plugs or unplugs a device; returns its name ("xvdb", "1").
    pub async fn reconfigure(&self, change: DeviceChange) -> Result<String, VmError> {
        match self.run(Operation::Device(change)).await? {
            OpReply::Device(name) => Ok(name),
            OpReply::Done | OpReply::Halted(_) => Err(VmError::Interrupted),
        }
    }

    /// A device's backend state as its actor last set it.
    pub fn device_state(&self, kind: DeviceKind, name: &str) -> XenbusState {
        self.device_states.get(kind, name)
    }

    /// What the guest agent last reported (empty when the VM does not run).
    pub fn guest(&self) -> GuestMetrics {
        self.guest.borrow().clone()
    }

    /// The VM's own supervisor (its domain's actors are its children).
    pub(crate) fn supervisor(&self) -> Option<SupervisorHandle> {
        self.vm_sup.get().map(SupervisorHandle::from)
    }

    pub(crate) fn env(&self) -> &Arc<VmEnv> {
        &self.env
    }

    /// Everything `vm.get` shows, from one snapshot: the devices listed are
    /// the spec's at that moment, in the states their backends last set.
    pub async fn details(&self) -> VmDetails {
        let snapshot = self.snapshot();
        let running = snapshot.domid.is_some();
        let state = |kind, name: &str| {
            if running {
                self.device_state(kind, name)
            } else {
                XenbusState::Unknown
            }
        };
        let spec = &snapshot.spec;
        let disks = spec
            .disks
            .iter()
            .map(|d| (DeviceKind::Vbd, d.device.clone()));
        let nics = spec
            .nics
            .iter()
            .map(|n| (DeviceKind::Vif, n.devid.to_string()));
        let devices = disks
            .chain(nics)
            .map(|(kind, name)| {
                let s = state(kind, &name);
                (kind, name, s)
            })
            .collect();
        let mut emulator = None;
        if let (true, true, Some(sup)) = (
            spec.domain_type == DomainType::Hvm,
            running,
            self.supervisor(),
        ) {
            if let Some(e) = EmulatorHandle::find(&sup).await {
                emulator = e.status().await.ok();
            }
        }
        VmDetails {
            devices,
            guest: self.guest(),
            emulator,
            snapshot,
        }
    }

    /// The last `lines` lines of the VM's console log, or what came after
    /// `offset`; and the offset just past them.
    pub async fn console(
        &self,
        lines: usize,
        offset: Option<u64>,
    ) -> Result<(String, u64), VmError> {
        self.env
            .console
            .read(self.uuid, lines, offset)
            .await
            .map_err(|e| VmError::step("read the console log", &e))
    }
}
