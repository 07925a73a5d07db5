//! The simulated host's blkback and netback: the dom0 kernel drivers that
//! own the backend half of each device, as Linux 6.1's do it (what the
//! toolstack sees of them in xenstore):
//!
//! - a new node under /local/domain/0/backend/{vbd,vif}/D/N is probed: the
//!   driver goes to InitWait (2); netback makes the `vifD.N` interface;
//! - it connects (4) once the frontend is Initialised (3) or Connected and
//!   the hotplug step is done: blkback needs `physical-device`, netback
//!   `hotplug-status = connected`;
//! - it follows the frontend closing: Closing (5) when the frontend is,
//!   Closed (6) when the frontend is Closed; then, with `online = 0`, the
//!   device is unregistered (netback's interface goes with it);
//! - a frontend that vanishes (its domain died) or a backend node the
//!   toolstack removed unregisters the device too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use crate::drivers::devices::sim::SimDevices;
use crate::drivers::devices::vif_name;
use crate::drivers::xenstore::{EmbeddedStore, XsClient, XsClientError};
use crate::drivers::DomId;
use crate::xs::{DeviceKind, XenbusState};

const BACKEND: &str = "/local/domain/0/backend";

/// Runs the simulated backend drivers on `store` for as long as the
/// runtime lives: it connects once the store is up (it may not be yet), and
/// again after the connection is lost (re-probing what is there).
pub(super) async fn run(store: Arc<dyn EmbeddedStore>, devices: Arc<SimDevices>) {
    let probed: Probed = Arc::default();
    let mut delay = Duration::from_millis(5);
    loop {
        if let Ok(xs) = XsClient::connect_embedded_dyn(store.clone(), None).await {
            delay = Duration::from_millis(5);
            if let Err(error) = probe_loop(xs, &devices, &probed).await {
                tracing::debug!(%error, "simulated backend drivers lost xenstore");
            }
            // The connection is gone: every device wakes, fails to read
            // and ends; they are probed again on the next connection.
            let mut driven = lock(&probed);
            for (_, watcher) in driven.domains.drain() {
                watcher.abort();
            }
            for changed in driven.devices.values().filter_map(Weak::upgrade) {
                changed.notify_one();
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}

/// A device the drivers have probed: (its kind, domid, devid).
type Key = (DeviceKind, u16, u32);

/// The devices being driven, each woken by a [`Notify`] when its backend
/// node or its frontend changed: one watch on the whole backend directory
/// and one per domain on its frontends (`/local/domain/D/device`) serve
/// them all (as Linux's xenbus has one backend watch; a watch per device
/// would cost the simulation memory at thousands of VMs).
#[derive(Debug, Default)]
struct Driven {
    devices: HashMap<Key, Weak<Notify>>,
    /// Each domain's frontend watcher, while it has devices.
    domains: HashMap<u16, tokio::task::JoinHandle<()>>,
}

type Probed = Arc<Mutex<Driven>>;

fn lock(probed: &Probed) -> std::sync::MutexGuard<'_, Driven> {
    probed.lock().unwrap_or_else(|p| p.into_inner())
}

/// Wakes the device `key`, if it is driven; false if it is not.
fn wake(probed: &Probed, key: &Key) -> bool {
    match lock(probed).devices.get(key).and_then(Weak::upgrade) {
        Some(changed) => {
            // A stored permit: a burst of changes wakes the device once.
            changed.notify_one();
            true
        }
        None => false,
    }
}

/// Where a node under the backend directory belongs.
fn device_of(path: &str) -> Option<Key> {
    let mut parts = path.strip_prefix(BACKEND)?.strip_prefix('/')?.split('/');
    let kind = DeviceKind::parse(parts.next()?)?;
    let domid = parts.next()?.parse().ok()?;
    let devid = parts.next()?.parse().ok()?;
    Some((kind, domid, devid))
}

async fn probe_loop(
    xs: XsClient,
    devices: &Arc<SimDevices>,
    probed: &Probed,
) -> Result<(), XsClientError> {
    let mut watch = xs.watch(BACKEND).await?;
    // What is there already (after a reconnection).
    for kind in DeviceKind::ALL {
        let dir = format!("{BACKEND}/{kind}");
        for domid in xs.directory(&dir).await.unwrap_or_default() {
            for devid in xs
                .directory(&format!("{dir}/{domid}"))
                .await
                .unwrap_or_default()
            {
                if let Some(key) = device_of(&format!("{dir}/{domid}/{devid}")) {
                    probe(&xs, devices, probed, key);
                }
            }
        }
    }
    while let Some(path) = watch.next().await {
        if let Some(key) = device_of(&path) {
            probe(&xs, devices, probed, key);
        }
    }
    Ok(())
}

/// Starts driving a device, or tells the one driving it that its node
/// changed.
fn probe(xs: &XsClient, devices: &Arc<SimDevices>, probed: &Probed, key: Key) {
    if wake(probed, &key) {
        return;
    }
    let changed = Arc::new(Notify::new());
    {
        let mut driven = lock(probed);
        driven.devices.insert(key, Arc::downgrade(&changed));
        let domid = key.1;
        driven
            .domains
            .entry(domid)
            .or_insert_with(|| tokio::spawn(watch_frontends(xs.clone(), domid, probed.clone())));
    }
    let device = Device {
        xs: xs.clone(),
        key,
        path: format!("{BACKEND}/{}/{}/{}", key.0, key.1, key.2),
        devices: devices.clone(),
    };
    let probed = probed.clone();
    tokio::spawn(async move {
        // `changed` is dropped when `run` returns: the key's entry is dead.
        if let Err(error) = device.run(changed).await {
            tracing::debug!(%error, "simulated backend device stopped");
        }
        // Forgotten, unless a new device took the key meanwhile; the
        // domain's frontend watcher goes with its last device.
        let mut driven = lock(&probed);
        if driven
            .devices
            .get(&key)
            .is_some_and(|w| w.strong_count() == 0)
        {
            driven.devices.remove(&key);
        }
        if !driven.devices.keys().any(|k| k.1 == key.1) {
            if let Some(watcher) = driven.domains.remove(&key.1) {
                watcher.abort();
            }
        }
    });
}

/// Wakes a domain's devices when their frontends change.
async fn watch_frontends(xs: XsClient, domid: u16, probed: Probed) {
    let home = format!("/local/domain/{domid}/device/");
    let Ok(mut watch) = xs.watch(home.trim_end_matches('/')).await else {
        return;
    };
    while let Some(path) = watch.next().await {
        let mut parts = path.strip_prefix(&home).unwrap_or_default().split('/');
        let Some(kind) = parts.next().and_then(DeviceKind::parse) else {
            continue;
        };
        if let Some(devid) = parts.next().and_then(|d| d.parse().ok()) {
            wake(&probed, &(kind, domid, devid));
        }
    }
}

/// One device, from probe to unregister.
struct Device {
    xs: XsClient,
    key: Key,
    /// The backend node.
    path: String,
    devices: Arc<SimDevices>,
}

impl Device {
    fn interface(&self) -> String {
        vif_name(DomId(self.key.1), self.key.2)
    }

    async fn read(&self, key: &str) -> Result<Option<String>, XsClientError> {
        self.xs.read_opt(&format!("{}/{key}", self.path)).await
    }

    async fn set_state(&self, state: XenbusState) -> Result<(), XsClientError> {
        self.xs
            .write(&format!("{}/state", self.path), state.value())
            .await
    }

    async fn run(self, own: Arc<Notify>) -> Result<(), XsClientError> {
        // Probe: a node being removed (or half written) is nothing to drive.
        let (Some(state), Some(frontend)) =
            (self.read("state").await?, self.read("frontend").await?)
        else {
            return Ok(());
        };
        let is_vif = self.key.0 == DeviceKind::Vif;
        if is_vif {
            self.devices.add_interface(&self.interface());
        }
        if XenbusState::parse(&state) == XenbusState::Initialising {
            self.set_state(XenbusState::InitWait).await?;
        }
        let front_state = format!("{frontend}/state");
        let result = self.follow(&own, &front_state).await;
        // Unregistered: netback's interface goes with the device. (With
        // the connection lost, it stays until the device is probed again.)
        if is_vif && result.is_ok() {
            self.devices.remove_interface(&self.interface());
        }
        result
    }

    /// Follows the frontend and the toolstack until the device is
    /// unregistered (Ok) or the connection is lost (Err).
    async fn follow(&self, own: &Notify, front_state: &str) -> Result<(), XsClientError> {
        loop {
            let Some(back) = self.read("state").await? else {
                return Ok(()); // the toolstack removed the node
            };
            let Some(frontend) = self.xs.read_opt(front_state).await? else {
                return Ok(()); // the frontend is gone (its domain died)
            };
            let ready = if self.key.0 == DeviceKind::Vif {
                self.read("hotplug-status").await?.as_deref() == Some("connected")
            } else {
                self.read("physical-device").await?.is_some()
            };
            use XenbusState::*;
            match (XenbusState::parse(&back), XenbusState::parse(&frontend)) {
                (InitWait, Initialised | Connected) if ready => self.set_state(Connected).await?,
                (InitWait | Connected, Closing) => self.set_state(Closing).await?,
                (b, Closed) => {
                    if b != Closed {
                        self.set_state(Closed).await?;
                    }
                    if self.read("online").await?.as_deref() == Some("0") {
                        return Ok(());
                    }
                }
                _ => {}
            }
            own.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_paths_name_their_device() {
        assert_eq!(
            device_of("/local/domain/0/backend/vbd/3/51712/state"),
            Some((DeviceKind::Vbd, 3, 51712))
        );
        assert_eq!(
            device_of("/local/domain/0/backend/vif/3/0"),
            Some((DeviceKind::Vif, 3, 0))
        );
        assert_eq!(device_of("/local/domain/0/backend/vif/3"), None);
        assert_eq!(device_of("/local/domain/0/backend/console/3/0"), None);
        assert_eq!(device_of("/local/domain/0/backend"), None);
    }
}
