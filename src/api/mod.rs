//! The one internal API every frontend (the RPC socket, the TLS listener,
//! the shell through them) goes through. Frontends parse their wire format
//! into a [`Call`]; `Api` hands each call to the actor that owns it,
//! through its typed handle, and maps the answer to the wire's types and
//! its error to [`ApiError`] (src/api/error.rs, the one place). The API
//! orchestrates nothing itself: creating, adopting and removing VMs is the
//! inventory's, operations are each VM's domain actor's.
//!
//! What frontends need of the layers below (the call vocabulary, the event
//! classes) is re-exported here: they import this module only.

mod audit;
mod error;
pub mod storage;
pub mod vm;
pub mod xs;

use std::sync::{Arc, OnceLock};

use serde::Serialize;

pub use audit::Caller;
pub use error::{xs_error, ApiError, ErrorCode};

pub use crate::actors::domain::{DeviceChange, FaultKind, VmOp, SHUTDOWN_TIMEOUT};
pub use crate::actors::events::{EventBus, EventClass, Subscription};
pub use crate::actors::host::HostInfo;
pub use crate::drivers::xenstore::WatchStream;
pub use crate::vm::{DiskFile, NicFile, VmSpecFile};

use crate::actors::host::HostHandle;
use crate::actors::inventory::InventoryHandle;
use crate::actors::slot::AddrSlot;
use crate::actors::storage::StorageHandle;
use crate::actors::supervisor::{Supervisor, SupervisorHandle, TreeNode};
use crate::actors::tasks::TaskHandle;
use crate::drivers::devices::InterfaceInfo;
use crate::drivers::xenstore::XsClient;

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
    /// `vm.suspend`: the guest's answer awaited for `timeout`.
    VmSuspend {
        vm: String,
        timeout: std::time::Duration,
    },
    /// `vm.resume`.
    VmResume {
        vm: String,
        paused: bool,
    },
    VmRemove(String),
    VmConsole {
        vm: String,
        lines: Option<u64>,
        offset: Option<u64>,
    },
    FaultInject {
        vm: String,
        part: String,
        kind: FaultKind,
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
    /// `sr.*`, `vdi.*`, `task.*`.
    Storage(storage::StorageCall),
    /// Any call made with `async: true`: answered with its task at once.
    Async {
        method: String,
        call: Box<Call>,
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
    SrList(Vec<storage::SrSummary>),
    Sr(Box<storage::SrInfo>),
    Scan(storage::ScanInfo),
    VdiList(Vec<storage::VdiSummary>),
    Vdi(Box<storage::VdiInfo>),
    Task { task: String },
    TaskList(Vec<storage::TaskSummary>),
    TaskView(Box<storage::TaskInfo>),
    Done {},
}

/// `host.devices`.
#[derive(Debug, Clone, Serialize)]
pub struct HostDevices {
    pub loop_devices: Vec<LoopDevice>,
    pub interfaces: Vec<InterfaceInfo>,
}

/// A bound loop device.
#[derive(Debug, Clone, Serialize)]
pub struct LoopDevice {
    pub device: String,
    pub backing: String,
}

/// What the API reaches: handles only.
#[derive(Debug)]
struct ApiInner {
    host: HostHandle,
    inventory: InventoryHandle,
    storage: StorageHandle,
    tasks: TaskHandle,
    root: AddrSlot<Supervisor>,
    /// The toolstack's (privileged) xenstore connection, set once the tree
    /// (and an embedded xenstored) runs.
    xs: OnceLock<XsClient>,
    /// `--allow-fault-injection`.
    allow_faults: bool,
    /// What drives the VMs: "sim" or "xen" (every VM answer says it).
    hypervisor: &'static str,
    /// What `event.subscribe` streams.
    events: EventBus,
    /// Whether the daemon has taken back the VMs it knows: until then,
    /// calls wait (the socket is claimed early, so that a second daemon is
    /// refused before it touches a domain).
    ready: tokio::sync::watch::Sender<bool>,
}

/// The actors the API reaches.
#[derive(Debug, Clone)]
pub struct Handles {
    pub host: HostHandle,
    pub inventory: InventoryHandle,
    pub storage: StorageHandle,
    pub tasks: TaskHandle,
}

/// xenith's operations, shared by all frontends.
#[derive(Debug, Clone)]
pub struct Api {
    inner: Arc<ApiInner>,
}

impl Api {
    pub fn new(
        handles: Handles,
        root: AddrSlot<Supervisor>,
        events: EventBus,
        allow_faults: bool,
        hypervisor: crate::drivers::HypervisorKind,
    ) -> Self {
        let inner = ApiInner {
            host: handles.host,
            inventory: handles.inventory,
            storage: handles.storage,
            tasks: handles.tasks,
            root,
            xs: OnceLock::new(),
            allow_faults,
            hypervisor: hypervisor.as_str(),
            events,
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

    /// Runs one parsed call for `caller` (once the API is ready); a call
    /// that changes something leaves an audit line.
    pub async fn execute(&self, call: Call, caller: &Caller) -> Result<Reply, ApiError> {
        self.wait_ready().await;
        let audit = match audit::audited(&call) {
            Some((method, key)) => {
                let vm = match (key, &call) {
                    (Some(name), Call::VmCreate(_)) => Some((name.to_owned(), String::new())),
                    (Some(key), _) => Some(match self.inner.inventory.resolve(key).await {
                        Ok(vm) => (vm.name(), vm.uuid.to_string()),
                        Err(_) => (key.to_owned(), String::new()),
                    }),
                    (None, _) => None,
                };
                let path = match &call {
                    Call::Xs(x) => Some(x.path().to_owned()),
                    Call::Storage(c) => c.audited().map(|(_, what)| what),
                    _ => None,
                };
                Some(audit::Audit::begin(method, vm, path, caller))
            }
            None => None,
        };
        let result = self.dispatch(call).await;
        if let Some(audit) = audit {
            audit.end(&result);
        }
        result
    }

    fn dispatch(&self, call: Call) -> futures_util::future::BoxFuture<'_, Result<Reply, ApiError>> {
        Box::pin(self.dispatch_inner(call))
    }

    async fn dispatch_inner(&self, call: Call) -> Result<Reply, ApiError> {
        match call {
            Call::Storage(c) => self.storage_call(c, false).await,
            Call::Async { method, call } => match *call {
                // A long storage operation is a cancellable task already.
                Call::Storage(c) if c.is_long() => self.storage_call(c, true).await,
                // A suspend reports its progress on its task.
                Call::VmSuspend { vm, timeout } => {
                    let api = self.clone();
                    let task = self
                        .inner
                        .tasks
                        .spawn(&method, false, move |job| async move {
                            let r = api.vm_suspend(&vm, timeout, job).await;
                            storage::task_result(r.map(Reply::VmSummary))
                        })
                        .await?;
                    Ok(Reply::Task {
                        task: task.to_string(),
                    })
                }
                call => {
                    let api = self.clone();
                    let task = self
                        .inner
                        .tasks
                        .spawn(&method, false, move |_job| async move {
                            storage::task_result(api.dispatch(call).await)
                        })
                        .await?;
                    Ok(Reply::Task {
                        task: task.to_string(),
                    })
                }
            },
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
            Call::VmSuspend { vm, timeout } => self
                .vm_suspend(&vm, timeout, crate::drivers::storage::Job::new())
                .await
                .map(Reply::VmSummary),
            Call::VmResume { vm, paused } => {
                self.vm_resume(&vm, paused).await.map(Reply::VmSummary)
            }
            Call::VmConsole { vm, lines, offset } => self
                .vm_console(&vm, lines, offset)
                .await
                .map(Reply::Console),
            Call::Xs(call) => self.xs_call(call).await.map(Reply::Xs),
            Call::Device(vm, change) => self
                .vm_device(&vm, change)
                .await
                .map(|(vm, device)| Reply::Device { vm, device }),
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
                .map(|()| Reply::Done {}),
        }
    }

    /// A new event subscription (the transport forwards what it receives).
    pub fn subscribe(&self) -> Subscription {
        self.inner.events.subscribe()
    }

    /// `host.info`, with the state of the toolstack's xenstore connection.
    pub async fn host_info(&self) -> Result<HostInfo, ApiError> {
        let mut info = self.inner.host.info().await?;
        info.xenstore = self.inner.xs.get().map(XsClient::link);
        Ok(info)
    }

    /// `host.devices`: the loop devices and netback interfaces the host
    /// has now (`losetup -a` and `ip link` for guests' devices).
    pub async fn host_devices(&self) -> Result<HostDevices, ApiError> {
        let devices = self.inner.host.devices().await?;
        Ok(HostDevices {
            loop_devices: devices
                .loop_devices
                .into_iter()
                .map(|(device, backing)| LoopDevice {
                    device: device.display().to_string(),
                    backing: backing.display().to_string(),
                })
                .collect(),
            interfaces: devices.interfaces,
        })
    }

    /// `supervisor.tree`: the whole supervision tree.
    pub async fn supervisor_tree(&self) -> Result<TreeNode, ApiError> {
        let root = SupervisorHandle::current(&self.inner.root)
            .ok_or_else(|| ApiError::new(ErrorCode::InternalError, "the tree is still starting"))?;
        Ok(root.tree().await?)
    }

    pub(crate) fn xs(&self) -> Result<XsClient, ApiError> {
        self.inner
            .xs
            .get()
            .cloned()
            .ok_or_else(|| ApiError::new(ErrorCode::InternalError, "xenstore is not connected yet"))
    }
}
