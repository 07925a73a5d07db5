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
//! └── rpc         the MessagePack-RPC listener
//! ```

use std::path::{Path, PathBuf};

use crate::actors::host::{HostActor, HostHandle};
use crate::actors::slot::AddrSlot;
use crate::actors::supervisor::ChildSpec;
use crate::actors::supervisor::{
    ExitReason, RootSupervisor, Strategy, SupervisorError, SupervisorFlags,
};
use crate::actors::xenstored::{XenstoredActor, XenstoredHandle};
use crate::api::Api;
use crate::config::{Config, XenstoreChoice};
use crate::drivers::{self, HypervisorError};
use crate::proto::rpc::RpcService;
use crate::proto::socket::SocketListener;
use crate::proto::xenstore::server::XsService;
use crate::xenstored::Quota;

/// Sockets where a host's own xenstored listens.
const HOST_XENSTORED_SOCKETS: &[&str] = &["/run/xenstored/socket", "/var/run/xenstored/socket"];

/// Why xenithd stopped other than by a signal.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("no usable hypervisor")]
    Hypervisor(#[from] HypervisorError),
    #[error("the supervision tree did not start")]
    Start(#[from] SupervisorError),
    #[error("cannot create the state directory {0}")]
    StateDir(PathBuf, #[source] std::io::Error),
    #[error("cannot install signal handlers")]
    Signals(#[source] std::io::Error),
    #[error("the supervision tree ended: {0}")]
    TreeEnded(ExitReason),
}

/// Which xenstored `auto` means here: the host's when its socket exists.
pub fn resolve_xenstore(choice: &XenstoreChoice, rpc_socket: &Path) -> (&'static str, PathBuf) {
    match choice {
        XenstoreChoice::Socket(p) => ("host", p.clone()),
        XenstoreChoice::Embedded => (
            "embedded",
            crate::paths::embedded_xenstored_socket(rpc_socket),
        ),
        XenstoreChoice::Auto => match HOST_XENSTORED_SOCKETS
            .iter()
            .map(Path::new)
            .find(|p| p.exists())
        {
            Some(p) => ("host", p.to_owned()),
            None => (
                "embedded",
                crate::paths::embedded_xenstored_socket(rpc_socket),
            ),
        },
    }
}

/// The embedded xenstored: the store and its socket listener, rest_for_one
/// (a store that restarts has lost its state, so its connections must go too).
/// Returns the spec, and the handle in-process clients use.
pub fn xenstored_spec(socket: PathBuf, quota: Quota) -> (ChildSpec, XenstoredHandle) {
    let slot = crate::actors::slot::AddrSlot::new();
    let handle = XenstoredHandle::new(slot.clone());
    let flags = SupervisorFlags::new(Strategy::RestForOne, 3, std::time::Duration::from_secs(10));
    let spec = ChildSpec::supervisor(
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
    );
    (spec, handle)
}

/// `xenithd xenstored --socket PATH`: the embedded xenstored alone.
pub async fn run_xenstored(socket: PathBuf) -> Result<(), DaemonError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
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
        _ = term.recv() => {}
        _ = int.recv() => {}
        reason = root.wait_exit() => return Err(DaemonError::TreeEnded(reason)),
    }
    notify(&[sd_notify::NotifyState::Stopping]);
    root.shutdown().await;
    Ok(())
}

/// Runs xenithd until a signal (then `Ok`) or until the tree gives up.
pub async fn run(config: Config) -> Result<(), DaemonError> {
    // Before anything starts: a SIGTERM from then on is an ordered shutdown,
    // never the default action (systemd may stop us as soon as we are ready).
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    prepare_state_dir(&config.state_dir)?;
    let driver = drivers::select(&config)?;
    let (xs_kind, xs_socket) = resolve_xenstore(&config.xenstore, &config.socket);
    tracing::info!(
        hypervisor = driver.kind().as_str(),
        xenstore = xs_kind,
        xenstore_socket = %xs_socket.display(),
        state_dir = %config.state_dir.display(),
        config = %config.source.as_deref().map_or("(built-in defaults)".into(), |p| p.display().to_string()),
        "xenithd starting"
    );

    let host_slot = AddrSlot::new();
    let root_slot = AddrSlot::new();
    let api = Api::new(HostHandle::new(host_slot.clone()), root_slot.clone());
    let flags = SupervisorFlags::new(
        Strategy::OneForOne,
        config.supervisor.max_restarts,
        config.supervisor.period,
    );
    let mut children = vec![HostActor::spec(driver, host_slot)];
    if xs_kind == "embedded" {
        children.push(xenstored_spec(xs_socket.clone(), Quota::default()).0);
    }
    children.extend([RpcService::spec(
        config.socket.clone(),
        config.rpc.clone(),
        api,
    )]);
    let root = RootSupervisor::start("root", flags, children).await?;
    root.handle().publish(&root_slot);
    notify(&[sd_notify::NotifyState::Ready]);
    tracing::info!(socket = %config.socket.display(), "xenithd ready");

    let signal_name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
        reason = root.wait_exit() => {
            notify(&[sd_notify::NotifyState::Stopping]);
            return Err(DaemonError::TreeEnded(reason));
        }
    };
    tracing::info!(signal = signal_name, "shutting down");
    notify(&[sd_notify::NotifyState::Stopping]);
    let reason = root.shutdown().await;
    tracing::info!(%reason, "xenithd stopped");
    Ok(())
}

/// The state directory holds VM records: private to the daemon's user.
fn prepare_state_dir(dir: &Path) -> Result<(), DaemonError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| DaemonError::StateDir(dir.to_owned(), e))
}

/// Tells systemd (Type=notify) about readiness; a no-op outside systemd.
fn notify(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(false, state) {
        tracing::warn!(%error, "sd_notify failed");
    }
}
