//! A simulated guest: what a Linux PV guest with Xen drivers (and, when it
//! has one, a guest agent) does that the toolstack can see, all of it
//! through xenstore as its own domain, with that domain's permissions:
//!
//! - it advertises control/feature-poweroff, -reboot, -suspend;
//! - it acknowledges control/shutdown (writes "") and shuts its domain down
//!   with that reason;
//! - its frontends (vbd, vif) do the xenbus handshake: Initialising (1) ->
//!   ring-ref and event-channel, Initialised (3) once the backend waits
//!   (InitWait, 2) -> Connected (4) once the backend is; Closing (5) ->
//!   Closed (6) when the backend closes;
//! - its agent (unless `xenith.agent=0` is on its command line) writes
//!   data/os_*, data/meminfo_*, attr/vif/N/ipv4/0 and data/updated.
//!
//! It also writes a boot log, device messages and its power-off to its
//! console (console 0, read through `Hypervisor::open_console`).
//!
//! Its code runs only while the domain runs: paused, it waits. A guest told
//! to hang (fault injection) stops answering, as a wedged kernel would.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::watch;

use super::{GuestFaults, Inner};
use crate::drivers::hypervisor::{DomId, ShutdownReason};
use crate::drivers::xenstore::{EmbeddedStore, XsClient, XsClientError};
use crate::xs::{DeviceKind, XenbusState};

/// What a simulated guest is like, read from its kernel command line
/// (`xenith.agent=0|1`, `xenith.os=NAME`, `xenith.distro=NAME`,
/// `xenith.hang=1` for frontends that never connect).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestProfile {
    pub agent: bool,
    pub os_name: String,
    pub distro: String,
    pub hang_frontends: bool,
    pub cmdline: String,
    domid: DomId,
}

impl GuestProfile {
    pub fn from_cmdline(cmdline: &str, domid: DomId) -> Self {
        let mut p = GuestProfile {
            agent: true,
            os_name: "Debian GNU/Linux 12 (bookworm)".into(),
            distro: "debian".into(),
            hang_frontends: false,
            cmdline: cmdline.to_owned(),
            domid,
        };
        for word in cmdline.split_whitespace() {
            match word.split_once('=') {
                Some(("xenith.agent", v)) => p.agent = v != "0",
                Some(("xenith.os", v)) => p.os_name = v.replace('_', " "),
                Some(("xenith.distro", v)) => p.distro = v.to_owned(),
                Some(("xenith.hang", v)) => p.hang_frontends = v != "0",
                _ => {}
            }
        }
        p
    }

    /// The address the agent reports for vif `devid`: 10.<128+devid>.<domid>.
    pub fn ipv4(&self, devid: u32) -> String {
        format!(
            "10.{}.{}.{}",
            128 + devid.min(127),
            self.domid.0 >> 8,
            self.domid.0 & 0xff
        )
    }
}

pub(super) struct Guest {
    domid: DomId,
    profile: GuestProfile,
    /// It runs on from a suspend (a resume, a restore, a migration's
    /// arrival) instead of booting.
    resumed: bool,
    hv: Arc<Inner>,
    running: watch::Receiver<bool>,
    faults: watch::Receiver<GuestFaults>,
}

/// The guest stops: its domain is gone, or shut down (or xenstore said no).
struct Gone;

impl From<XsClientError> for Gone {
    fn from(error: XsClientError) -> Self {
        tracing::debug!(%error, "simulated guest stops");
        Gone
    }
}

impl Guest {
    pub(super) fn new(
        domid: DomId,
        profile: GuestProfile,
        resumed: bool,
        hv: Arc<Inner>,
        running: watch::Receiver<bool>,
        faults: watch::Receiver<GuestFaults>,
    ) -> Self {
        Self {
            domid,
            profile,
            resumed,
            hv,
            running,
            faults,
        }
    }

    fn console(&self, text: &str) {
        self.hv.console_write(self.domid, text);
    }

    fn boot_log(&self) {
        let p = &self.profile;
        let domid = self.domid;
        self.console(&format!(
            "[    0.000000] Linux version 6.1.0-xenith-sim (simulated guest of xenith)\n\
             [    0.000000] Command line: {}\n\
             [    0.000000] Booting paravirtualized kernel on Xen\n\
             [    0.000000] Xen version: 4.17 (domain {domid})\n\
             [    0.120000] xenbus_probe_frontend: Device probing started\n\
             [    0.400000] Run /init as init process\n\
             \n{} hvc0\n\nsim-{domid} login: ",
            p.cmdline, p.os_name
        ));
    }

    pub(super) async fn run(self, store: Arc<dyn EmbeddedStore>) {
        let domid = self.domid;
        match XsClient::connect_embedded_dyn(store, Some(u32::from(domid.0))).await {
            Ok(xs) => {
                let _ = self.live(xs).await;
            }
            Err(error) => tracing::warn!(%domid, %error, "simulated guest cannot reach xenstore"),
        }
    }

    async fn wait_running(running: &mut watch::Receiver<bool>) -> Result<(), Gone> {
        running.wait_for(|r| *r).await.map(drop).map_err(|_| Gone)
    }

    async fn live(mut self, xs: XsClient) -> Result<(), Gone> {
        Self::wait_running(&mut self.running).await?;
        if self.resumed {
            // Linux's xen:manage after a suspend: the same kernel carries
            // on, its frontends reconnect to the backends there are now.
            self.console(&format!(
                "\nPM: resume from suspend (domain {})\nxen:manage: resumed\n",
                self.domid
            ));
        } else {
            self.boot_log();
        }
        for feature in ["feature-poweroff", "feature-reboot", "feature-suspend"] {
            xs.write(&format!("control/{feature}"), "1").await?;
        }
        if self.profile.agent {
            self.agent_report(&xs).await?;
        }
        let mut control = xs.watch("control/shutdown").await?;
        let mut target = xs.watch("memory/target").await?;
        let mut devices = xs.watch("device").await?;
        // The frontends running, by "vbd/51712"; each says when it ends (its
        // device was removed), so a device plugged again with that id gets a
        // new one, as Linux's xenbus probes it again.
        let mut known: HashSet<String> = HashSet::new();
        let (done_tx, mut done) = tokio::sync::mpsc::unbounded_channel::<String>();
        loop {
            tokio::select! {
                event = control.next() => {
                    event.ok_or(Gone)?;
                    Self::wait_running(&mut self.running).await?;
                    if self.faults.borrow().hung {
                        continue;
                    }
                    let word = xs.read_opt("control/shutdown").await?.unwrap_or_default();
                    if let Some(reason) = ShutdownReason::from_control_word(&word) {
                        // Acknowledge, then go down with that reason.
                        xs.write("control/shutdown", "").await?;
                        self.console(match reason {
                            ShutdownReason::Reboot => "\nreboot: Restarting system\n",
                            ShutdownReason::Suspend => "\nPM: suspend entry (s2idle)\n",
                            _ => "\nreboot: Power down\n",
                        });
                        let _ = self.hv.shutdown(self.domid, reason);
                        return Ok(());
                    }
                }
                event = target.next() => {
                    // The balloon driver: follow memory/target (KiB).
                    event.ok_or(Gone)?;
                    if self.faults.borrow().hung {
                        continue;
                    }
                    let kib = xs.read_opt("memory/target").await?.and_then(|v| v.parse::<u64>().ok());
                    if let Some(kib) = kib {
                        let before = self.hv.target_mib(self.domid);
                        if self.hv.balloon(self.domid, kib / 1024) != before && self.profile.agent {
                            self.agent_report(&xs).await?;
                        }
                    }
                }
                key = done.recv() => {
                    if let Some(key) = key {
                        known.remove(&key);
                    }
                    self.probe(&xs, &mut known, &done_tx).await?;
                }
                event = devices.next() => {
                    event.ok_or(Gone)?;
                    self.probe(&xs, &mut known, &done_tx).await?;
                }
            }
        }
    }

    /// Starts a frontend for each device of the guest that has none.
    async fn probe(
        &self,
        xs: &XsClient,
        known: &mut HashSet<String>,
        done: &tokio::sync::mpsc::UnboundedSender<String>,
    ) -> Result<(), Gone> {
        for kind in DeviceKind::ALL {
            let ids = match xs.directory(&format!("device/{kind}")).await {
                Ok(ids) => ids,
                Err(XsClientError::Xs(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            for id in ids {
                let key = format!("{kind}/{id}");
                if !known.insert(key.clone()) {
                    continue;
                }
                let frontend = Frontend {
                    xs: xs.clone(),
                    path: format!("device/{key}"),
                    kind,
                    devid: id.parse().unwrap_or(0),
                    profile: self.profile.clone(),
                    running: self.running.clone(),
                    faults: self.faults.clone(),
                    hv: self.hv.clone(),
                    domid: self.domid,
                };
                let done = done.clone();
                tokio::spawn(async move {
                    frontend.run().await;
                    let _ = done.send(key);
                });
            }
        }
        Ok(())
    }

    async fn agent_report(&self, xs: &XsClient) -> Result<(), Gone> {
        let p = &self.profile;
        let mem_kib = self.hv.target_mib(self.domid) * 1024;
        for (key, value) in [
            ("data/os_name", p.os_name.clone()),
            ("data/os_distro", p.distro.clone()),
            ("data/os_majorver", "12".to_owned()),
            ("data/os_minorver", "0".to_owned()),
            ("data/os_uname", "6.1.0-xenith-sim".to_owned()),
            ("data/meminfo_total", mem_kib.to_string()),
            ("data/meminfo_free", (mem_kib * 3 / 4).to_string()),
            // libxl leaves control/ read-only for the guest; XAPI lets it write this.
            ("control/feature-balloon", "1".to_owned()),
            ("data/updated", updated()),
        ] {
            // Like a real agent: a key the toolstack did not make writable is
            // skipped; only a lost connection stops the guest.
            match xs.write(key, value).await {
                Ok(()) | Err(XsClientError::Xs(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

fn updated() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    secs.to_string()
}

/// One frontend's side of the xenbus handshake.
struct Frontend {
    xs: XsClient,
    /// Relative: device/vbd/51712.
    path: String,
    kind: DeviceKind,
    devid: u32,
    profile: GuestProfile,
    running: watch::Receiver<bool>,
    faults: watch::Receiver<GuestFaults>,
    hv: Arc<Inner>,
    domid: DomId,
}

impl Frontend {
    fn hung(&self) -> bool {
        let f = self.faults.borrow();
        f.hung || f.hung_frontends.contains(&(self.kind, self.devid))
    }

    async fn run(mut self) {
        let _ = self.handshake().await;
        tracing::debug!(frontend = %self.path, "simulated frontend done");
    }

    async fn handshake(&mut self) -> Result<(), Gone> {
        let xs = self.xs.clone();
        let Some(backend) = xs.read_opt(&format!("{}/backend", self.path)).await? else {
            return Ok(());
        };
        let mut backend_state = xs.watch(&format!("{backend}/state")).await?;
        loop {
            backend_state.next().await.ok_or(Gone)?;
            Guest::wait_running(&mut self.running).await?;
            if self.profile.hang_frontends || self.hung() {
                continue;
            }
            let front = match xs.read_opt(&format!("{}/state", self.path)).await? {
                Some(s) => s,
                // The toolstack removed the device: this frontend is done.
                None => return Ok(()),
            };
            let back = xs
                .read_opt(&format!("{backend}/state"))
                .await?
                .unwrap_or_default();
            use XenbusState::*;
            match (XenbusState::parse(&front), XenbusState::parse(&back)) {
                (Initialising, InitWait) => self.initialise().await?,
                (Initialised, Connected) => {
                    self.set_state(Connected).await?;
                    let line = match self.kind {
                        DeviceKind::Vbd => {
                            format!("blkfront: device/vbd/{}: connected\n", self.devid)
                        }
                        DeviceKind::Vif => format!("xen_netfront: eth{}: link up\n", self.devid),
                    };
                    self.hv.console_write(self.domid, &line);
                    if self.kind == DeviceKind::Vif && self.profile.agent {
                        let ip = self.profile.ipv4(self.devid);
                        xs.write(&format!("attr/vif/{}/ipv4/0", self.devid), ip)
                            .await?;
                        xs.write("data/updated", updated()).await?;
                    }
                }
                (f, Closing) if f != Closing && f != Closed => {
                    self.set_state(Closing).await?;
                    self.set_state(Closed).await?;
                }
                (f, Closed) if f != Closed => self.set_state(Closed).await?,
                _ => {}
            }
        }
    }

    /// Grants the rings, allocates the event channel, says Initialised.
    async fn initialise(&self) -> Result<(), Gone> {
        let ring = 8 + self.devid % 1000;
        let keys: &[(&str, String)] = match self.kind {
            DeviceKind::Vbd => &[
                ("ring-ref", ring.to_string()),
                ("event-channel", (ring + 1).to_string()),
                ("protocol", "x86_64-abi".to_owned()),
            ],
            DeviceKind::Vif => &[
                ("tx-ring-ref", ring.to_string()),
                ("rx-ring-ref", (ring + 1).to_string()),
                ("event-channel", (ring + 2).to_string()),
                ("request-rx-copy", "1".to_owned()),
                ("feature-rx-notify", "1".to_owned()),
                ("feature-sg", "1".to_owned()),
            ],
        };
        let xs = &self.xs;
        let path = self.path.clone();
        let keys = keys.to_vec();
        xs.transaction(|tx| {
            let (path, keys) = (path.clone(), keys.clone());
            async move {
                for (k, v) in keys {
                    tx.write(&format!("{path}/{k}"), v).await?;
                }
                tx.write(&format!("{path}/state"), XenbusState::Initialised.value())
                    .await
            }
        })
        .await?;
        Ok(())
    }

    async fn set_state(&self, state: XenbusState) -> Result<(), Gone> {
        self.xs
            .write(&format!("{}/state", self.path), state.value())
            .await?;
        Ok(())
    }
}
