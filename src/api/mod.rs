//! The one internal API every frontend (the RPC socket, the TLS listener,
//! the shell through them) goes through. Frontends parse their wire format
//! into a [`Call`]; `Api` drives the actors through their handles.

mod error;
pub mod fault;
pub mod vm;
pub mod xs;

use std::sync::{Arc, OnceLock};

use serde::Serialize;

pub use error::{ApiError, ErrorCode};

use crate::actors::console::ConsoleConfig;
use crate::actors::domain::{DeviceChange, VmOp};
use crate::actors::events::{EventBus, EventClass, Subscription};
use crate::actors::host::{HostHandle, HostInfo};
use crate::actors::slot::AddrSlot;
use crate::actors::supervisor::{Supervisor, SupervisorHandle, TreeNode};
use crate::drivers::emulator::EmulatorConfig;
use crate::drivers::xenstore::XsClient;
use crate::drivers::Hypervisor;
use crate::vm::{RecordStore, VmSpecFile};

/// One operation, as a frontend parsed it.
#[derive(Debug, Clone)]
pub enum Call {
    HostInfo,
    /// `host.devices` (extension): what the host holds for guests' devices.
    HostDevices,
    SupervisorTree,
    VmCreate(Box<VmSpecFile>),
    VmList,
    VmGet(String),
    VmOp(String, VmOp),
    VmRemove(String),
    VmConsole {
        vm: String,
        lines: Option<u64>,
        offset: Option<u64>,
    },
    FaultInject {
        vm: String,
        part: String,
        kind: fault::FaultKind,
    },
    Xs(xs::XsCall),
    /// `vbd.plug`, `vbd.unplug`, `vif.plug`, `vif.unplug`.
    Device(String, DeviceChange),
    /// Served by the transport, which owns the connection the events go to.
    EventSubscribe {
        classes: Option<Vec<EventClass>>,
    },
    EventUnsubscribe {
        subscription: u64,
    },
    XsWatch {
        path: String,
    },
    SessionLogin {
        token: String,
    },
}

/// What an operation returns (serialises as the inner value).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Reply {
    HostInfo(HostInfo),
    HostDevices(HostDevices),
    Tree(TreeNode),
    Created { uuid: String },
    VmList(Vec<vm::VmSummary>),
    Vm(Box<vm::VmInfo>),
    VmSummary(vm::VmSummary),
    Console(vm::ConsoleText),
    Device { vm: String, device: String },
    Xs(xs::XsReply),
    Done {},
}

/// `host.devices`.
#[derive(Debug, Clone, Serialize)]
pub struct HostDevices {
    pub loop_devices: Vec<LoopDevice>,
    pub interfaces: Vec<crate::drivers::devices::InterfaceInfo>,
}

/// A bound loop device.
#[derive(Debug, Clone, Serialize)]
pub struct LoopDevice {
    pub device: String,
    pub backing: String,
}

/// What the API reaches.
#[derive(Debug)]
pub(crate) struct ApiInner {
    pub(crate) host: HostHandle,
    pub(crate) root: AddrSlot<Supervisor>,
    pub(crate) domains: AddrSlot<Supervisor>,
    pub(crate) records: RecordStore,
    pub(crate) driver: Arc<dyn Hypervisor>,
    /// The toolstack's (privileged) xenstore connection, set once the tree
    /// (and an embedded xenstored) runs.
    pub(crate) xs: OnceLock<XsClient>,
    pub(crate) settings: VmSettings,
    /// Whether the daemon has taken back the VMs it knows: until then,
    /// calls wait (the socket is claimed early, so that a second daemon is
    /// refused before it touches a domain).
    ready: tokio::sync::watch::Sender<bool>,
}

/// How VMs run on this host.
#[derive(Debug, Clone)]
pub struct VmSettings {
    /// Device models (QEMU) for HVM VMs.
    pub emulator: Arc<EmulatorConfig>,
    /// Console logs.
    pub console: Arc<ConsoleConfig>,
    /// `--allow-fault-injection`.
    pub allow_faults: bool,
    /// What `event.subscribe` streams.
    pub events: EventBus,
}

/// xenith's operations, shared by all frontends.
#[derive(Debug, Clone)]
pub struct Api {
    pub(crate) inner: Arc<ApiInner>,
}

impl Api {
    pub fn new(
        host: HostHandle,
        root: AddrSlot<Supervisor>,
        domains: AddrSlot<Supervisor>,
        records: RecordStore,
        driver: Arc<dyn Hypervisor>,
        settings: VmSettings,
    ) -> Self {
        let inner = ApiInner {
            host,
            root,
            domains,
            records,
            driver,
            xs: OnceLock::new(),
            settings,
            ready: tokio::sync::watch::Sender::new(false),
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The toolstack's xenstore connection (set once, at start).
    pub fn set_xenstore(&self, xs: XsClient) {
        let _ = self.inner.xs.set(xs);
    }

    /// Opens the API: the daemon knows all its VMs again. Calls made before
    /// waited for this.
    pub fn set_ready(&self) {
        self.inner.ready.send_replace(true);
    }

    /// Returns once the API is ready (at once, after start).
    pub async fn wait_ready(&self) {
        if !*self.inner.ready.borrow() {
            // The sender lives as long as `self`: this cannot fail.
            let _ = self.inner.ready.subscribe().wait_for(|ready| *ready).await;
        }
    }

    /// Runs one parsed call (once the API is ready).
    pub async fn execute(&self, call: Call) -> Result<Reply, ApiError> {
        self.wait_ready().await;
        match call {
            Call::HostInfo => self.host_info().await.map(Reply::HostInfo),
            Call::HostDevices => self.host_devices().await.map(Reply::HostDevices),
            Call::SupervisorTree => self.supervisor_tree().await.map(Reply::Tree),
            Call::VmCreate(spec) => self
                .vm_create(*spec)
                .await
                .map(|uuid| Reply::Created { uuid }),
            Call::VmList => self.vm_list().await.map(Reply::VmList),
            Call::VmGet(vm) => self.vm_get(&vm).await.map(|v| Reply::Vm(Box::new(v))),
            Call::VmOp(vm, op) => self.vm_op(&vm, op).await.map(Reply::VmSummary),
            Call::VmRemove(vm) => self.vm_remove(&vm).await.map(Reply::VmSummary),
            Call::VmConsole { vm, lines, offset } => self
                .vm_console(&vm, lines, offset)
                .await
                .map(Reply::Console),
            Call::Xs(call) => self.xs_call(call).await.map(Reply::Xs),
            Call::Device(vm, change) => {
                let handle = self.resolve(&vm).await?;
                let device = handle.reconfigure(change).await?;
                Ok(Reply::Device {
                    vm: handle.uuid.to_string(),
                    device,
                })
            }
            Call::EventSubscribe { .. }
            | Call::EventUnsubscribe { .. }
            | Call::XsWatch { .. }
            | Call::SessionLogin { .. } => Err(ApiError::new(
                ErrorCode::InternalError,
                "subscriptions and logins belong to a connection",
            )),
            Call::FaultInject { vm, part, kind } => self
                .fault_inject(&vm, &part, kind)
                .await
                .map(|_| Reply::Done {}),
        }
    }

    /// A new event subscription (the transport forwards what it receives).
    pub fn subscribe(&self) -> Subscription {
        self.inner.settings.events.subscribe()
    }

    /// `host.info`.
    pub async fn host_info(&self) -> Result<HostInfo, ApiError> {
        self.inner.host.info().await.map_err(ApiError::internal)
    }

    /// `host.devices`: the loop devices and netback interfaces the host
    /// has now (`losetup -a` and `ip link` for guests' devices).
    pub async fn host_devices(&self) -> Result<HostDevices, ApiError> {
        let devices = self.inner.driver.devices();
        tokio::task::spawn_blocking(move || HostDevices {
            loop_devices: devices
                .loop_devices()
                .into_iter()
                .map(|(device, backing)| LoopDevice {
                    device: device.display().to_string(),
                    backing: backing.display().to_string(),
                })
                .collect(),
            interfaces: devices.vif_interfaces(),
        })
        .await
        .map_err(ApiError::internal)
    }

    /// `supervisor.tree`: the whole supervision tree.
    pub async fn supervisor_tree(&self) -> Result<TreeNode, ApiError> {
        let root = self
            .inner
            .root
            .get()
            .map(SupervisorHandle::from)
            .ok_or_else(|| ApiError::new(ErrorCode::InternalError, "the tree is still starting"))?;
        root.tree().await.map_err(ApiError::internal)
    }
}
