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

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::drivers::devices::sim::SimDevices;
use crate::drivers::devices::vif_name;
use crate::drivers::xenstore::{EmbeddedStore, XsClient, XsClientError};
use crate::drivers::DomId;

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
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}

/// A device the drivers have probed: ("vbd", domid, devid).
type Key = (&'static str, u16, u32);

/// The devices being driven.
type Probed = Arc<Mutex<HashSet<Key>>>;

/// Where a node under the backend directory belongs.
fn device_of(path: &str) -> Option<Key> {
    let mut parts = path.strip_prefix(BACKEND)?.strip_prefix('/')?.split('/');
    let kind = match parts.next()? {
        "vbd" => "vbd",
        "vif" => "vif",
        _ => return None,
    };
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
    for kind in ["vbd", "vif"] {
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

/// Starts driving a device, unless it is driven already.
fn probe(xs: &XsClient, devices: &Arc<SimDevices>, probed: &Probed, key: Key) {
    let fresh = probed.lock().unwrap_or_else(|p| p.into_inner()).insert(key);
    if !fresh {
        return;
    }
    let device = Device {
        xs: xs.clone(),
        key,
        path: format!("{BACKEND}/{}/{}/{}", key.0, key.1, key.2),
        devices: devices.clone(),
    };
    let probed = probed.clone();
    tokio::spawn(async move {
        if let Err(error) = device.run().await {
            tracing::debug!(%error, "simulated backend device stopped");
        }
        probed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
    });
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

    async fn set_state(&self, state: u8) -> Result<(), XsClientError> {
        self.xs
            .write(&format!("{}/state", self.path), state.to_string())
            .await
    }

    async fn run(self) -> Result<(), XsClientError> {
        // Probe: a node being removed (or half written) is nothing to drive.
        let (Some(state), Some(frontend)) =
            (self.read("state").await?, self.read("frontend").await?)
        else {
            return Ok(());
        };
        let is_vif = self.key.0 == "vif";
        if is_vif {
            self.devices.add_interface(&self.interface());
        }
        if state == "1" {
            self.set_state(2).await?;
        }
        let mut own = self.xs.watch(&self.path).await?;
        let front_state = format!("{frontend}/state");
        let mut front = self.xs.watch(&front_state).await?;
        let unregistered = self.follow(&mut own, &mut front, &front_state).await?;
        // Unregistered: netback's interface goes with the device. (With
        // the connection lost, it stays until the device is probed again.)
        if is_vif && unregistered {
            self.devices.remove_interface(&self.interface());
        }
        Ok(())
    }

    /// Follows the frontend and the toolstack until the device is
    /// unregistered (true) or the connection is lost (false).
    async fn follow(
        &self,
        own: &mut crate::drivers::xenstore::WatchStream,
        front: &mut crate::drivers::xenstore::WatchStream,
        front_state: &str,
    ) -> Result<bool, XsClientError> {
        loop {
            tokio::select! {
                e = own.next() => if e.is_none() { return Ok(false) },
                e = front.next() => if e.is_none() { return Ok(false) },
            }
            let Some(back) = self.read("state").await? else {
                return Ok(true); // the toolstack removed the node
            };
            let Some(frontend) = self.xs.read_opt(front_state).await? else {
                return Ok(true); // the frontend is gone (its domain died)
            };
            let ready = if self.key.0 == "vif" {
                self.read("hotplug-status").await?.as_deref() == Some("connected")
            } else {
                self.read("physical-device").await?.is_some()
            };
            match (back.as_str(), frontend.as_str()) {
                ("2", "3" | "4") if ready => self.set_state(4).await?,
                ("2" | "4", "5") => self.set_state(5).await?,
                (b, "6") => {
                    if b != "6" {
                        self.set_state(6).await?;
                    }
                    if self.read("online").await?.as_deref() == Some("0") {
                        return Ok(true);
                    }
                }
                _ => {}
            }
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
            Some(("vbd", 3, 51712))
        );
        assert_eq!(
            device_of("/local/domain/0/backend/vif/3/0"),
            Some(("vif", 3, 0))
        );
        assert_eq!(device_of("/local/domain/0/backend/vif/3"), None);
        assert_eq!(device_of("/local/domain/0/backend/console/3/0"), None);
        assert_eq!(device_of("/local/domain/0/backend"), None);
    }
}
