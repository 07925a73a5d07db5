//! What a VM's actors work with: the host's parts every VM shares
//! ([`VmEnv`]), what one VM's successive domain actors share
//! ([`VmParts`]), and what an operation's steps use ([`Ctx`]).

use std::sync::Arc;

use tokio::sync::watch;

use super::state::{DomainActor, VmSnapshot};
use crate::actors::agent::GuestMetrics;
use crate::actors::backend::{DeviceEvents, DeviceStates};
use crate::actors::console::ConsoleConfig;
use crate::actors::events::{EventBus, EventKind};
use crate::actors::slot::AddrSlot;
use crate::actors::storage::StorageHandle;
use crate::actors::supervisor::{Supervisor, SupervisorHandle};
use crate::drivers::devices::DeviceHost;
use crate::drivers::emulator::EmulatorConfig;
use crate::drivers::migration::{DomainSaver, SuspendImages};
use crate::drivers::xenstore::XsClient;
use crate::drivers::{BootImages, DomId, GuestFaults, Hv};
use crate::vm::{RecordStore, VmSpec};
use crate::xs::{DeviceKind, XenbusState};

/// The host's parts every VM uses, composed once by the daemon.
#[derive(Debug)]
pub struct VmEnv {
    pub hv: Hv,
    /// The toolstack's (privileged) xenstore connection.
    pub xs: XsClient,
    /// The host side of guest devices (loop devices, bridges).
    pub devices: Arc<dyn DeviceHost>,
    /// Boot images prepared when a VM is defined.
    pub images: Arc<dyn BootImages>,
    /// Guests that can be told to misbehave (the simulated host only).
    pub faults: Option<Arc<dyn GuestFaults>>,
    pub emulator: Arc<EmulatorConfig>,
    pub console: Arc<ConsoleConfig>,
    pub events: EventBus,
    pub records: RecordStore,
    /// The SRs: VDIs a VM's disks name are attached and activated there.
    pub storage: StorageHandle,
    /// Saves and restores domains (suspend, resume, migration).
    pub saver: Arc<dyn DomainSaver>,
    /// Where suspended VMs' images are kept.
    pub suspends: SuspendImages,
}

/// What one VM's successive domain actors share (the VM's supervisor
/// restarts its domain actor from these).
#[derive(Debug, Clone)]
pub struct VmParts {
    pub uuid: uuid::Uuid,
    pub env: Arc<VmEnv>,
    pub vm_sup: AddrSlot<Supervisor>,
    pub domain: AddrSlot<DomainActor>,
    /// The VM's state as its domain actor last published it; its spec is
    /// the VM's as it is now (what a restarted domain actor starts from).
    pub snapshot: Arc<watch::Sender<VmSnapshot>>,
    pub guest: Arc<watch::Sender<GuestMetrics>>,
    pub device_states: DeviceStates,
}

/// Everything an operation's steps use.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub env: Arc<VmEnv>,
    pub uuid: uuid::Uuid,
    /// The VM's spec as it is now (device hotplug changes it).
    pub spec: Arc<VmSpec>,
    /// The VM's own supervisor (its domain's actors are its children).
    pub vm_sup: SupervisorHandle,
    /// The guest agent's metrics, kept by the agent actor.
    pub guest: Arc<watch::Sender<GuestMetrics>>,
    /// The devices' states, kept by their backend actors.
    pub device_states: DeviceStates,
}

impl Ctx {
    /// Where a device's backend of this domain tells its changes.
    pub fn device_events(&self, domid: DomId) -> DeviceEvents {
        DeviceEvents {
            bus: self.env.events.clone(),
            vm: self.uuid,
            domid,
            states: self.device_states.clone(),
        }
    }

    /// Publishes a device's plug (add) or removal (del).
    pub fn tell_device(
        &self,
        domid: DomId,
        kind: DeviceKind,
        name: &str,
        what: EventKind,
        state: XenbusState,
    ) {
        self.device_events(domid).tell(kind, name, what, state);
    }
}
