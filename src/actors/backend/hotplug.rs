//! A device's plug, unplug and release, as libxl and its hotplug scripts
//! (`block`, `vif-bridge`) do them around blkback and netback. Every host
//! call (loop devices, interfaces) runs on the blocking pool.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::drivers::devices::{DeviceError, DeviceHost};
use crate::drivers::xenstore::{XsClient, XsClientError};
use crate::vm::layout::Entry;

use super::{DeviceSpec, CLOSE_TIMEOUT};
use crate::xs::XenbusState;

/// How long a NIC's plug waits for netback's interface.
pub const INTERFACE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a release waits for netback to remove its interface.
const INTERFACE_GONE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the hotplug step does for a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hotplug {
    /// A disk: its backing (a block device as it is, a file through a
    /// loop device) is given to blkback as `physical-device`.
    Disk { path: PathBuf, read_only: bool },
    /// A NIC: netback's interface is brought up on the bridge.
    Nic { interface: String, bridge: String },
    /// A disk QEMU's qdisk serves: QEMU opens the image itself, so there
    /// is no host side; the trees are all (`hotplug-status` is QEMU's).
    Qdisk,
}

/// Why a plug, unplug or release failed.
#[derive(Debug, thiserror::Error)]
pub enum HotplugError {
    #[error("xenstore")]
    Xenstore(#[from] XsClientError),
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error("netback made no interface {0} within {INTERFACE_TIMEOUT:?} (is xen-netback loaded?)")]
    NoInterface(String),
    #[error(transparent)]
    Pool(#[from] crate::drivers::blocking::PoolError),
}

impl HotplugError {
    /// Whether the VM's spec is at fault (a missing disk or bridge).
    pub fn is_config(&self) -> bool {
        matches!(self, HotplugError::Device(e) if e.is_config())
    }
}

/// A host call (loop devices, interfaces) on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DeviceError> + Send + 'static,
) -> Result<T, HotplugError> {
    Ok(crate::drivers::blocking::run(f).await??)
}

/// A backend node with what the hotplug step records in it.
fn at(d: &DeviceSpec, key: &str, value: impl Into<String>) -> Entry {
    Entry {
        path: d.trees.backend_node(key),
        value: value.into(),
        perms: None,
    }
}

/// A fresh plug: the host side, then both trees (with what the hotplug
/// step records) in one transaction. Nothing is left behind on failure.
pub async fn plug(
    xs: &XsClient,
    devices: &Arc<dyn DeviceHost>,
    d: &DeviceSpec,
) -> Result<(), HotplugError> {
    match &d.hotplug {
        Hotplug::Disk { path, read_only } => {
            let (host, path2, ro) = (devices.clone(), path.clone(), *read_only);
            let backing = blocking(move || host.attach_disk(&path2, ro)).await?;
            let mut entries = d.trees.entries.clone();
            entries.push(at(d, "physical-device", backing.physical_device()));
            entries.push(at(
                d,
                "physical-device-path",
                backing.node.display().to_string(),
            ));
            entries.push(at(d, "hotplug-status", "connected"));
            if let Err(e) = crate::vm::layout::apply(xs, &entries).await {
                let (host, path, node) = (devices.clone(), path.clone(), backing.node);
                let _ = blocking(move || host.release_disk(&path, &node)).await;
                return Err(e.into());
            }
            Ok(())
        }
        Hotplug::Qdisk => Ok(crate::vm::layout::apply(xs, &d.trees.entries).await?),
        Hotplug::Nic { .. } => {
            crate::vm::layout::apply(xs, &d.trees.entries).await?;
            if let Err(e) = nic_hotplug(xs, devices, d).await {
                let _ = remove_trees(xs, d).await;
                let _ = host_release(devices, d, None).await;
                return Err(e);
            }
            Ok(())
        }
    }
}

/// After a restart of the backend actor: finishes a hotplug step that was
/// cut short (a NIC whose `hotplug-status` is not `connected` yet).
pub async fn resync(
    xs: &XsClient,
    devices: &Arc<dyn DeviceHost>,
    d: &DeviceSpec,
) -> Result<(), HotplugError> {
    if let Hotplug::Nic { .. } = &d.hotplug {
        let status = xs.read_opt(&d.trees.backend_node("hotplug-status")).await?;
        if status.as_deref() != Some("connected") {
            nic_hotplug(xs, devices, d).await?;
        }
    }
    Ok(())
}

/// vif-bridge's `online`: wait for netback's interface, bring it up on the
/// bridge, say `hotplug-status = connected` (netback connects only then).
async fn nic_hotplug(
    xs: &XsClient,
    devices: &Arc<dyn DeviceHost>,
    d: &DeviceSpec,
) -> Result<(), HotplugError> {
    let Hotplug::Nic { interface, bridge } = &d.hotplug else {
        return Ok(());
    };
    if !wait_interface(devices, interface, true, INTERFACE_TIMEOUT).await? {
        return Err(HotplugError::NoInterface(interface.clone()));
    }
    let (host, name, br) = (devices.clone(), interface.clone(), bridge.clone());
    blocking(move || host.attach_interface(&name, &br)).await?;
    xs.write(&d.trees.backend_node("hotplug-status"), "connected")
        .await?;
    tracing::debug!(%interface, %bridge, "interface up on its bridge");
    Ok(())
}

/// Waits until the interface exists (`present`) or is gone (not
/// `present`); false if it did not within `timeout`.
async fn wait_interface(
    devices: &Arc<dyn DeviceHost>,
    interface: &str,
    present: bool,
    timeout: Duration,
) -> Result<bool, HotplugError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let (host, name) = (devices.clone(), interface.to_owned());
        if blocking(move || Ok(host.interface_exists(&name))).await? == present {
            return Ok(true);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn remove_trees(xs: &XsClient, d: &DeviceSpec) -> Result<(), XsClientError> {
    xs.rm(&d.trees.frontend).await?;
    xs.rm(&d.trees.backend).await
}

/// The hotplug scripts' `remove`: the loop device released (`node` is
/// `physical-device-path` as it was read, None when unknown), the
/// interface off its bridge once netback has let it go.
async fn host_release(
    devices: &Arc<dyn DeviceHost>,
    d: &DeviceSpec,
    node: Option<String>,
) -> Result<(), HotplugError> {
    match &d.hotplug {
        Hotplug::Disk { path, .. } => {
            if let Some(node) = node {
                let (host, path) = (devices.clone(), path.clone());
                blocking(move || host.release_disk(&path, std::path::Path::new(&node))).await?;
            }
        }
        Hotplug::Nic { interface, .. } => {
            // netback removes its interface when the device is unregistered.
            if !wait_interface(devices, interface, false, INTERFACE_GONE_TIMEOUT).await? {
                tracing::warn!(%interface, "netback did not remove the interface; taken off its bridge");
                let (host, name) = (devices.clone(), interface.clone());
                blocking(move || host.detach_interface(&name)).await?;
            }
        }
        Hotplug::Qdisk => {}
    }
    Ok(())
}

/// The backend's state now (None once its node is gone).
pub(super) async fn backend_state(
    xs: &XsClient,
    d: &DeviceSpec,
) -> Result<Option<XenbusState>, XsClientError> {
    Ok(xs
        .read_opt(&d.trees.backend_node("state"))
        .await?
        .map(|s| XenbusState::parse(&s)))
}

/// Unplug from a live guest (libxl's device remove): `online = 0` and
/// Closing in the backend; the frontend closes, and blkback or netback
/// with it; once the backend is Closed (or after [`CLOSE_TIMEOUT`]) both
/// trees go and the host side is released. Returns whether the backend
/// closed in time.
pub async fn unplug(
    xs: &XsClient,
    devices: &Arc<dyn DeviceHost>,
    d: &DeviceSpec,
) -> Result<bool, HotplugError> {
    let node = xs
        .read_opt(&d.trees.backend_node("physical-device-path"))
        .await?;
    let state = d.trees.backend_node("state");
    let mut watch = xs.watch(&state).await?;
    {
        let (online, state) = (d.trees.backend_node("online"), state.clone());
        xs.transaction(move |tx| {
            let (online, state) = (online.clone(), state.clone());
            async move {
                tx.write(&online, "0").await?;
                tx.write(&state, XenbusState::Closing.value()).await
            }
        })
        .await?;
    }
    let deadline = tokio::time::Instant::now() + CLOSE_TIMEOUT;
    let closed = loop {
        match backend_state(xs, d).await? {
            None | Some(XenbusState::Closed) => break true,
            _ => {}
        }
        match tokio::time::timeout_at(deadline, watch.next()).await {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break false,
        }
    };
    drop(watch);
    remove_trees(xs, d).await?;
    host_release(devices, d, node).await?;
    Ok(closed)
}

/// Release when the domain goes (shut down, crashed or killed): nobody to
/// close with, so `online = 0`, both trees removed (blkback and netback
/// unregister the device) and the host side released.
pub async fn release(
    xs: &XsClient,
    devices: &Arc<dyn DeviceHost>,
    d: &DeviceSpec,
) -> Result<(), HotplugError> {
    let node = xs
        .read_opt(&d.trees.backend_node("physical-device-path"))
        .await?;
    if backend_state(xs, d).await?.is_some() {
        xs.write(&d.trees.backend_node("online"), "0").await?;
    }
    remove_trees(xs, d).await?;
    host_release(devices, d, node).await
}
