//! xenithd: builds the supervision tree, serves until SIGTERM/SIGINT, then
//! stops the tree in reverse order.
//!
//! The tree (each level's strategy is documented in docs/supervision.md):
//!
//! ```text
//! root (one_for_one, intensity from [supervisor])
//! ├── host        the host's inventory and hypervisor facts
//! ├── xenstored   (embedded only; rest_for_one)
//! │   ├── store            the xenstore database
//! │   └── xenstore-socket  its Unix socket
//! ├── rpc         the MessagePack-RPC listener (Unix socket)
//! ├── rpc-tls     the same over TCP with TLS, when [tls] listen is set
//! └── vms         rest_for_one, started once xenstore is connected:
//!     ├── domains     one_for_one, one child per VM:
//!     │   └── <uuid>  the VM's supervisor (one_for_one): domain, and while
//!     │               its domain runs: console, vbd:*, vif:*, agent, emulator (HVM)
//!     └── inventory   the VMs: created, taken back at its start, removed
//! ```
//!
//! Before anything else, the state directory's lock is taken and the
//! sockets are checked (preflight.rs): a second daemon is refused, exit 2,
//! having touched nothing. The RPC socket is claimed before any VM is taken
//! back; calls wait until the inventory has started.

mod preflight;

pub use preflight::{check_socket, resolve_xenstore, StateLock, LOCK_FILE};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::watch;

use crate::actors::console::ConsoleConfig;
use crate::actors::domain::VmEnv;
use crate::actors::events::EventBus;
use crate::actors::host::{HostActor, HostHandle};
use crate::actors::inventory::{InventoryActor, InventoryHandle};
use crate::actors::slot::AddrSlot;
use crate::actors::storage::{storage_spec, CatalogEnv, StorageHandle};
use crate::actors::supervisor::ChildSpec;
use crate::actors::supervisor::{
    ExitReason, RootSupervisor, Strategy, Supervisor, SupervisorError, SupervisorFlags,
};
use crate::actors::tasks::{TaskHandle, TasksActor};
use crate::actors::xenstored::{XenstoredActor, XenstoredHandle};
use crate::api::{Api, Handles};
use crate::config::Config;
use crate::drivers::emulator::EmulatorConfig;
use crate::drivers::storage::StorageTools;
use crate::drivers::xenstore::{Dial, EmbeddedStore, XsClient};
use crate::drivers::{self, Hv, HypervisorError, HypervisorKind};
use crate::proto::rpc::RpcService;
use crate::proto::socket::SocketListener;
use crate::proto::xenstore::XsService;
use crate::storage::StorageRecords;
use crate::vm::RecordStore;
use crate::xenstored::Quota;

/// The domains supervisor: one child (a VM supervisor) per VM, restarted
/// one by one. Its intensity is high: a VM whose own supervisor gives up is
/// restarted here, and one VM's trouble must not take the others down.
pub const DOMAINS_FLAGS: SupervisorFlags = SupervisorFlags {
    strategy: Strategy::OneForOne,
    max_restarts: 1000,
    period: std::time::Duration::from_secs(60),
};

/// The `vms` supervisor: the domains supervisor, then the inventory
/// (rest_for_one: a restarted `domains` is empty, and the inventory that
/// follows it takes every VM back). Past 3 restarts a minute it gives up
/// and the root supervisor handles it.
pub const VMS_FLAGS: SupervisorFlags = SupervisorFlags {
    strategy: Strategy::RestForOne,
    max_restarts: 3,
    period: std::time::Duration::from_secs(60),
};

/// Why xenithd stopped other than by a signal.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("no usable hypervisor")]
    Hypervisor(#[from] HypervisorError),
    #[error("the supervision tree did not start")]
    Start(#[from] SupervisorError),
    #[error("cannot create the state directory {0}")]
    StateDir(PathBuf, #[source] std::io::Error),
    #[error("VM records")]
    Records(#[source] crate::vm::RecordError),
    #[error("storage records")]
    StorageRecords(#[source] crate::storage::StorageRecordError),
    #[error("cannot connect to xenstore")]
    Xenstore(#[source] crate::drivers::xenstore::XsClientError),
    #[error("cannot install signal handlers")]
    Signals(#[source] std::io::Error),
    #[error("{0}: {1}")]
    Tls(&'static str, String),
    #[error("the supervision tree ended: {0}")]
    TreeEnded(ExitReason),
    /// Another daemon holds the state directory or answers on the socket.
    #[error("xenithd is already running (pid {}, {})", .pid.map_or("unknown".to_owned(), |p| p.to_string()), .path.display())]
    AlreadyRunning { pid: Option<i32>, path: PathBuf },
    /// The environment does not allow what was asked (a xenstored that
    /// does not fit the hypervisor, none running on a Xen host).
    #[error("{0}")]
    Refused(String),
}

impl DaemonError {
    /// The exit status: 2 when the configuration or the host is at fault
    /// (restarting would fail the same way: the unit does not restart on
    /// 2), 1 when the tree gave up or a part it needs went away.
    pub fn exit_code(&self) -> u8 {
        match self {
            DaemonError::Hypervisor(_)
            | DaemonError::StateDir(..)
            | DaemonError::Records(_)
            | DaemonError::StorageRecords(_)
            | DaemonError::Signals(_)
            | DaemonError::Tls(..)
            | DaemonError::AlreadyRunning { .. }
            | DaemonError::Refused(_) => 2,
            DaemonError::Start(_) | DaemonError::Xenstore(_) | DaemonError::TreeEnded(_) => 1,
        }
    }
}

/// The embedded xenstored: the store and its socket listener, rest_for_one
/// (a store that restarts has lost its state, so its connections must go too).
/// Returns the spec, and the handle in-process clients use.
pub fn xenstored_spec(socket: PathBuf, quota: Quota) -> (ChildSpec, XenstoredHandle) {
    xenstored_spec_observed(socket, quota, None)
}

/// Like [`xenstored_spec`]; its children's exits and restarts are published.
pub fn xenstored_spec_observed(
    socket: PathBuf,
    quota: Quota,
    events: Option<EventBus>,
) -> (ChildSpec, XenstoredHandle) {
    let slot = crate::actors::slot::AddrSlot::new();
    let handle = XenstoredHandle::new(slot.clone());
    let flags = SupervisorFlags::new(Strategy::RestForOne, 3, std::time::Duration::from_secs(10));
    let spec = ChildSpec::supervisor_observed(
        "xenstored",
        flags,
        vec![
            XenstoredActor::spec(quota, slot),
            SocketListener::<XsService>::spec(
                "xenstore-socket",
                socket,
                None,
                XsService::new(handle.clone()),
            ),
        ],
        None,
        events,
    );
    (spec, handle)
}

/// `xenithd xenstored --socket PATH`: the embedded xenstored alone.
pub async fn run_xenstored(socket: PathBuf) -> Result<(), DaemonError> {
    let mut signals = Signals::install()?;
    check_socket(&socket)?;
    let flags = SupervisorFlags::new(Strategy::OneForOne, 5, std::time::Duration::from_secs(30));
    let root = RootSupervisor::start(
        "root",
        flags,
        vec![xenstored_spec(socket.clone(), Quota::default()).0],
    )
    .await?;
    notify(&[sd_notify::NotifyState::Ready]);
    tracing::info!(socket = %socket.display(), "xenstored ready");
    tokio::select! {
        _ = signals.stop() => {}
        reason = root.wait_exit() => return Err(DaemonError::TreeEnded(reason)),
    }
    notify(&[sd_notify::NotifyState::Stopping]);
    root.shutdown().await;
    Ok(())
}

/// The `vms` subtree: `domains` (one child per VM) and the inventory, which
/// takes the VMs of the records back at each of its starts.
pub fn vms_spec(
    env: Arc<VmEnv>,
    inventory: AddrSlot<InventoryActor>,
    count: Arc<watch::Sender<usize>>,
    domains_max_restarts: u32,
) -> ChildSpec {
    let domains: AddrSlot<Supervisor> = AddrSlot::new();
    let events = env.events.clone();
    ChildSpec::supervisor_observed(
        "vms",
        VMS_FLAGS,
        vec![
            ChildSpec::supervisor_observed(
                "domains",
                SupervisorFlags {
                    max_restarts: domains_max_restarts,
                    ..DOMAINS_FLAGS
                },
                vec![],
                Some(domains.clone()),
                Some(events.clone()),
            ),
            InventoryActor::spec(env, domains, inventory, count),
        ],
        None,
        Some(events),
    )
}

/// Runs xenithd until a signal (then `Ok`) or until the tree gives up.
pub async fn run(config: Config) -> Result<(), DaemonError> {
    // Before anything starts: a SIGTERM from then on is an ordered shutdown,
    // never the default action (systemd may stop us as soon as we are ready).
    let mut signals = Signals::install()?;
    // One daemon per state directory and per socket, checked before
    // anything reads a record or touches a domain or a process.
    let lock = StateLock::acquire(&config.state_dir)?;
    raise_descriptor_limit();
    check_socket(&config.socket)?;
    let kind = drivers::select::choose(config.hypervisor, Path::new("/"))?;
    // Xen is opened first: a host without it is told so at once.
    let xen = match kind {
        HypervisorKind::Xen => Some(drivers::select(kind, &config, None)?),
        HypervisorKind::Sim => None,
    };
    let (xs_kind, xs_socket) = resolve_xenstore(
        &config.xenstore,
        &config.socket,
        kind,
        config.force_embedded_xenstore,
    )
    .await?;
    if xs_kind == "embedded" {
        check_socket(&xs_socket)?;
    }
    let records = RecordStore::open(&config.state_dir).map_err(DaemonError::Records)?;
    let events = EventBus::new(config.rpc.event_backlog);
    let embedded = (xs_kind == "embedded").then(|| {
        xenstored_spec_observed(xs_socket.clone(), Quota::default(), Some(events.clone()))
    });
    let guests = embedded
        .as_ref()
        .map(|(_, h)| Arc::new(h.clone()) as Arc<dyn EmbeddedStore>);
    let host = match xen {
        Some(host) => host,
        None => drivers::select(kind, &config, guests)?,
    };
    let hv = Hv::new(host.hypervisor.clone());
    tracing::info!(
        lock = %lock.path().display(),
        hypervisor = hv.kind().as_str(),
        xenstore = xs_kind,
        xenstore_socket = %xs_socket.display(),
        state_dir = %config.state_dir.display(),
        config = %config.source.as_deref().map_or("(built-in defaults)".into(), |p| p.display().to_string()),
        "xenithd starting"
    );
    if kind == HypervisorKind::Sim {
        tracing::warn!(
            "running on the SIMULATED hypervisor: its domains, guests and devices are not real \
             (host.info, vm.list and vm.get say hypervisor \"sim\")"
        );
    }

    let emulator = Arc::new(EmulatorConfig {
        qemu: match hv.kind() {
            HypervisorKind::Xen => config.qemu_xen.clone(),
            HypervisorKind::Sim => config.qemu.clone(),
        },
        run_dir: emulator_run_dir(&config.socket),
        host: hv.kind(),
    });
    let console = Arc::new(ConsoleConfig {
        dir: config.state_dir.join("console"),
        max_bytes: config.console_log_max_bytes,
    });
    reap_device_models(&emulator, &hv).await;

    let host_slot = AddrSlot::new();
    let root_slot = AddrSlot::new();
    let inventory_slot = AddrSlot::new();
    let tasks_slot = AddrSlot::new();
    let catalog_slot = AddrSlot::new();
    let tools = StorageTools::new(config.qemu_img.clone(), config.lvm.clone());
    let storage_records =
        StorageRecords::open(&config.state_dir).map_err(DaemonError::StorageRecords)?;
    let storage = StorageHandle::new(
        catalog_slot.clone(),
        tools.clone(),
        config.state_dir.clone(),
    );
    let (count, vm_count) = watch::channel(0);
    let api = Api::new(
        Handles {
            host: HostHandle::new(host_slot.clone()),
            inventory: InventoryHandle::new(inventory_slot.clone()),
            storage: storage.clone(),
            tasks: TaskHandle::new(tasks_slot.clone()),
        },
        root_slot.clone(),
        events.clone(),
        config.allow_fault_injection,
        kind,
    );
    let flags = SupervisorFlags::new(
        Strategy::OneForOne,
        config.supervisor.max_restarts,
        config.supervisor.period,
    );
    let mut children = vec![HostActor::spec(
        hv.clone(),
        host.devices.clone(),
        host_slot,
        vm_count.clone(),
        Some(events.clone()),
    )];
    let embedded_handle = embedded.map(|(spec, handle)| {
        children.push(spec);
        handle
    });
    children.push(TasksActor::spec(events.clone(), tasks_slot));
    children.push(storage_spec(
        CatalogEnv {
            records: storage_records,
            tools,
            state_dir: config.state_dir.clone(),
            events: events.clone(),
        },
        catalog_slot,
    ));
    children.push(RpcService::spec(
        config.socket.clone(),
        config.rpc.clone(),
        api.clone(),
    ));
    if let Some(tls) = &config.tls {
        // Checked when the configuration was; read again for this run.
        let setup = tls.load().map_err(|e| DaemonError::Tls(e.key, e.message))?;
        children.push(crate::proto::rpc::tls::TlsListener::spec(
            setup,
            config.rpc.clone(),
            api.clone(),
        ));
    }
    let root =
        RootSupervisor::start_with_events("root", flags, children, Some(events.clone())).await?;
    root.handle().publish(&root_slot);

    // The toolstack's own xenstore connection, then the VMs it knows.
    // It is established again whenever it is lost (xenstored restarted,
    // or dropped it).
    let dial = match &embedded_handle {
        Some(handle) => Dial::Embedded(Arc::new(handle.clone())),
        None => Dial::Socket(xs_socket.clone()),
    };
    let xs = XsClient::persistent(dial)
        .await
        .map_err(DaemonError::Xenstore)?;
    if let Some(follower) = &host.follower {
        follower.follow(&xs);
    }
    api.set_xenstore(xs.clone());
    let env = Arc::new(VmEnv {
        hv: hv.clone(),
        xs,
        devices: host.devices.clone(),
        images: host.images.clone(),
        faults: host.faults.clone(),
        emulator: emulator.clone(),
        console,
        events,
        records,
        storage,
        saver: host.saver.clone(),
        suspends: crate::drivers::migration::SuspendImages::new(config.state_dir.join("suspend")),
    });
    root.handle()
        .start_child(vms_spec(
            env,
            inventory_slot,
            Arc::new(count),
            config.supervisor.domains_max_restarts,
        ))
        .await?;
    api.set_ready();
    notify(&[sd_notify::NotifyState::Ready]);
    let vms = *vm_count.borrow();
    tracing::info!(socket = %config.socket.display(), vms, "xenithd ready");

    let signal_name = tokio::select! {
        name = signals.stop() => name,
        reason = root.wait_exit() => {
            notify(&[sd_notify::NotifyState::Stopping]);
            return Err(DaemonError::TreeEnded(reason));
        }
    };
    tracing::info!(signal = signal_name, "shutting down");
    notify(&[sd_notify::NotifyState::Stopping]);
    let reason = root.shutdown().await;
    if hv.kind() == HypervisorKind::Sim {
        // The simulated host's domains end with the daemon: so do all
        // their device models.
        let emulator = emulator.clone();
        let stopped = crate::drivers::blocking::run(move || emulator.reap(&[]))
            .await
            .unwrap_or_default();
        if !stopped.is_empty() {
            let domids = stopped.iter().map(ToString::to_string).collect::<Vec<_>>();
            tracing::info!(domids = %domids.join(" "), "stopped the simulated domains' device models");
        }
    }
    tracing::info!(%reason, "xenithd stopped");
    drop(lock);
    Ok(())
}

/// The signals xenithd handles: SIGTERM and SIGINT stop it in order; SIGHUP
/// is logged and ignored (logs go to stderr, so there is nothing to reopen;
/// the configuration is read at start only).
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Signals, DaemonError> {
        use tokio::signal::unix::{signal, SignalKind};
        let make = |kind| signal(kind).map_err(DaemonError::Signals);
        Ok(Signals {
            term: make(SignalKind::terminate())?,
            int: make(SignalKind::interrupt())?,
            hup: make(SignalKind::hangup())?,
        })
    }

    /// Waits for a signal that stops the daemon; returns its name.
    async fn stop(&mut self) -> &'static str {
        loop {
            tokio::select! {
                _ = self.term.recv() => return "SIGTERM",
                _ = self.int.recv() => return "SIGINT",
                _ = self.hup.recv() => tracing::info!(
                    "SIGHUP: ignored (logs go to stderr, nothing to reopen; the configuration is read at start)"
                ),
            }
        }
    }
}

/// Where device models' pidfiles and QMP sockets go: next to the RPC socket.
pub fn emulator_run_dir(rpc_socket: &Path) -> PathBuf {
    rpc_socket
        .parent()
        .map_or_else(|| PathBuf::from("/run/xenith"), Path::to_owned)
}

/// Kills device models whose domain is gone (left by an earlier daemon).
async fn reap_device_models(emulator: &Arc<EmulatorConfig>, hv: &Hv) {
    let live: Vec<_> = match hv.list_domains().await {
        Ok(all) => all.into_iter().map(|d| d.domid).collect(),
        Err(e) => {
            let error = crate::error::chain(&e);
            tracing::warn!(%error, "cannot list the domains: device models left alone");
            return;
        }
    };
    let emulator = emulator.clone();
    let reaped = crate::drivers::blocking::run(move || emulator.reap(&live))
        .await
        .unwrap_or_default();
    if !reaped.is_empty() {
        let domids = reaped.iter().map(ToString::to_string).collect::<Vec<_>>();
        tracing::info!(domids = %domids.join(" "), "stopped device models of domains that are gone");
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit: every VM device,
/// console and connection holds descriptors.
fn raise_descriptor_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(error) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(%error, soft, hard, "cannot raise the descriptor limit");
            }
        }
    }
}

/// Tells systemd (Type=notify) about readiness; a no-op outside systemd.
fn notify(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(false, state) {
        tracing::warn!(%error, "sd_notify failed");
    }
}
