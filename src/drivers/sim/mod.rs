//! The simulated hypervisor: a Xen host in memory, for hosts without Xen
//! and for tests at scale. It is labelled as such everywhere it shows
//! (`host.info` says `hypervisor: "sim"` and a `(simulated)` version), and
//! behaves like Xen where the toolstack can see it: domids from 1, not
//! reused until they wrap; memory admission; paused at creation; run
//! states; shutdown reasons with Xen's codes; death notifications; and a
//! simulated guest in each domain that acts through xenstore (guest.rs).
//!
//! The state sits behind one mutex: this stands in for the hypervisor
//! itself, and calls reach it from the blocking pool as hypercalls would.

mod backends;
mod guest;
mod save;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use tokio::sync::{mpsc, watch};

use super::faults::{GuestFault, GuestFaults as InjectGuestFaults};
use super::hypervisor::{
    BootImage, Built, DomId, DomainConfig, DomainEvent, DomainInfo, DomainType, Hypervisor,
    HypervisorError, HypervisorKind, PhysInfo, ShutdownReason,
};
use crate::config::SimConfig;
use crate::drivers::devices::sim::SimDevices;
use crate::drivers::xenstore::EmbeddedStore;

pub use guest::GuestProfile;

/// The Xen version the simulation imitates.
pub const SIM_XEN_VERSION: &str = "4.17.0 (simulated)";

#[derive(Debug)]
struct SimDomain {
    uuid: [u8; 16],
    domain_type: DomainType,
    memory_mib: u64,
    /// What the guest holds: its balloon follows memory/target, within
    /// `max_mib`.
    target_mib: u64,
    /// The most the hypervisor lets it hold (Xen's max_pages, which the
    /// toolstack's memory target lowers).
    max_mib: u64,
    vcpus: u32,
    paused: bool,
    built: bool,
    shutdown: Option<ShutdownReason>,
    watchers: Vec<mpsc::UnboundedSender<DomainEvent>>,
    /// The command line, until the guest boots with it.
    cmdline: Option<String>,
    /// The command line it was built with (a restored guest runs with it).
    built_cmdline: String,
    /// The guest's next run is a resume from a suspend, not a boot.
    resumed: bool,
    /// What the guest's memory holds: page `pfn` is derived from the seed,
    /// the pfn and its generation (how often the guest has written it;
    /// the pages never written are generation 0, not kept).
    memory_seed: u64,
    generations: std::collections::HashMap<u64, u32>,
    /// Whether the guest's code runs (unpaused, not shut down); dropped,
    /// and so closed, when the domain is destroyed.
    running: watch::Sender<bool>,
    console: ConsoleRing,
    /// Misbehaviour injected into the guest (fault.inject kind hang).
    faults: watch::Sender<GuestFaults>,
}

/// How much console output a guest keeps while nobody reads it (the oldest
/// goes first). Xen's own ring is 2 KiB and a guest blocks on it when full;
/// the simulation keeps more and never blocks.
const CONSOLE_UNREAD_BYTES: usize = 16 * 1024;

/// Console 0 of a simulated domain: what the guest wrote, for one reader.
#[derive(Debug, Default)]
struct ConsoleRing {
    unread: Vec<u8>,
    reader: Option<mpsc::UnboundedSender<Vec<u8>>>,
}

impl ConsoleRing {
    fn write(&mut self, bytes: &[u8]) {
        if let Some(reader) = &self.reader {
            if reader.send(bytes.to_vec()).is_ok() {
                return;
            }
            self.reader = None;
        }
        self.unread.extend_from_slice(bytes);
        if self.unread.len() > CONSOLE_UNREAD_BYTES {
            let cut = self.unread.len() - CONSOLE_UNREAD_BYTES;
            self.unread.drain(..cut);
        }
    }
}

/// What a simulated guest has been told to get wrong.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestFaults {
    /// The whole guest stops answering.
    pub hung: bool,
    /// Frontends (kind, devid) that stop following their backend.
    pub hung_frontends: Vec<(crate::xs::DeviceKind, u32)>,
}

#[derive(Debug)]
struct State {
    domains: BTreeMap<u16, SimDomain>,
    /// The next domid to try (Xen hands them out round-robin).
    next_domid: u16,
    used_mib: u64,
    next_port: u32,
}

/// What the host and its guests share.
#[derive(Debug)]
struct Inner {
    config: SimConfig,
    state: Mutex<State>,
    /// Bumped, under the state lock, whenever `used_mib` changes.
    memory_changes: AtomicU64,
    /// Where simulated guests run their xenstore side, once attached.
    world: OnceLock<(Arc<dyn EmbeddedStore>, tokio::runtime::Handle)>,
    /// The host's storage, loop devices, interfaces and bridges.
    devices: Arc<SimDevices>,
}

impl Inner {
    /// Starts the domain's guest if it has one to run (built or restored,
    /// not yet running), once guests are attached.
    fn spawn_guest(self: &Arc<Self>, domid: DomId, d: &mut SimDomain) {
        if let (Some(cmdline), Some((store, rt))) = (d.cmdline.take(), self.world.get()) {
            let profile = GuestProfile::from_cmdline(&cmdline, domid);
            let guest = guest::Guest::new(
                domid,
                profile,
                std::mem::take(&mut d.resumed),
                self.clone(),
                d.running.subscribe(),
                d.faults.subscribe(),
            );
            rt.spawn(guest.run(store.clone()));
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the state as it was at that
        // point; the simulation goes on with it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn free_mib(&self, st: &State) -> u64 {
        self.config
            .total_mib
            .saturating_sub(self.config.dom0_mib + st.used_mib)
    }

    /// Marks the domain shut down with `reason` (the toolstack's hard
    /// shutdown, or the guest's own SCHEDOP_shutdown) and tells watchers.
    fn shutdown(&self, domid: DomId, reason: ShutdownReason) -> Result<(), HypervisorError> {
        let mut st = self.state();
        let d = domain(&mut st, domid)?;
        if d.shutdown.is_none() {
            d.shutdown = Some(reason);
            d.running.send_replace(false);
            notify(d, DomainEvent::Shutdown(reason));
        }
        Ok(())
    }

    /// The guest writes to its console.
    fn console_write(&self, domid: DomId, text: &str) {
        if let Some(d) = self.state().domains.get_mut(&domid.0) {
            d.console.write(text.as_bytes());
        }
    }

    /// What the guest holds, in MiB.
    fn target_mib(&self, domid: DomId) -> u64 {
        self.state()
            .domains
            .get(&domid.0)
            .map_or(0, |d| d.target_mib)
    }

    /// The guest's balloon driver moves to `mib` (within what the
    /// hypervisor allows); returns what it holds then.
    fn balloon(&self, domid: DomId, mib: u64) -> u64 {
        let mut st = self.state();
        match st.domains.get_mut(&domid.0) {
            Some(d) => {
                d.target_mib = mib.min(d.max_mib).min(d.memory_mib);
                d.target_mib
            }
            None => 0,
        }
    }
}

/// A simulated Xen host.
#[derive(Debug)]
pub struct SimHypervisor {
    inner: Arc<Inner>,
}

fn domain(st: &mut State, domid: DomId) -> Result<&mut SimDomain, HypervisorError> {
    st.domains
        .get_mut(&domid.0)
        .ok_or(HypervisorError::NoSuchDomain(domid))
}

fn notify(d: &mut SimDomain, event: DomainEvent) {
    d.watchers.retain(|w| w.send(event).is_ok());
}

impl SimHypervisor {
    pub fn new(config: SimConfig) -> Self {
        Self::with_devices(config, SimDevices::new(false))
    }

    /// A simulated host with these devices (bridges it may create or not).
    pub fn with_devices(config: SimConfig, devices: SimDevices) -> Self {
        let state = Mutex::new(State {
            domains: BTreeMap::new(),
            next_domid: 1,
            used_mib: 0,
            next_port: 1,
        });
        Self {
            inner: Arc::new(Inner {
                config,
                state,
                memory_changes: AtomicU64::new(0),
                world: OnceLock::new(),
                devices: Arc::new(devices),
            }),
        }
    }

    /// Lets simulated guests act through xenstore: they connect to `store`
    /// as their own domain, on `runtime`, and the simulated blkback and
    /// netback drive the backend halves from dom0. Without it, domains run
    /// with no guest activity and devices stay Initialising.
    pub fn attach_guests(&self, store: Arc<dyn EmbeddedStore>, runtime: tokio::runtime::Handle) {
        if self
            .inner
            .world
            .set((store.clone(), runtime.clone()))
            .is_ok()
        {
            runtime.spawn(backends::run(store, self.inner.devices.clone()));
        }
    }

    /// The simulated host's devices, as the simulation sees them.
    pub fn sim_devices(&self) -> Arc<SimDevices> {
        self.inner.devices.clone()
    }

    /// The hypervisor's state, for a hypercall: like Xen's, it is reached
    /// from the blocking pool, never from an async thread.
    fn state(&self) -> MutexGuard<'_, State> {
        crate::drivers::blocking::debug_assert_blocking_allowed("a simulated hypercall");
        self.inner.state()
    }

    fn dom0_info(&self) -> DomainInfo {
        let c = &self.inner.config;
        DomainInfo {
            domid: DomId::DOM0,
            uuid: [0; 16],
            domain_type: DomainType::Pv,
            paused: false,
            dying: false,
            shutdown: None,
            memory_kib: c.dom0_mib * 1024,
            max_memory_kib: c.dom0_mib * 1024,
            vcpus: c.cpus,
            cpu_time_ns: 0,
        }
    }

    /// Ids of the domains that exist.
    pub fn domids(&self) -> Vec<DomId> {
        self.state().domains.keys().map(|d| DomId(*d)).collect()
    }
}

impl Hypervisor for SimHypervisor {
    fn kind(&self) -> HypervisorKind {
        HypervisorKind::Sim
    }

    fn physinfo(&self) -> Result<PhysInfo, HypervisorError> {
        let st = self.state();
        Ok(PhysInfo {
            xen_version: SIM_XEN_VERSION.to_owned(),
            total_mib: self.inner.config.total_mib,
            free_mib: self.inner.free_mib(&st),
            cpus: self.inner.config.cpus,
        })
    }

    fn memory_changes(&self) -> u64 {
        self.inner.memory_changes.load(Ordering::Acquire)
    }

    fn create_domain(&self, config: &DomainConfig) -> Result<DomId, HypervisorError> {
        if config.vcpus == 0 || config.vcpus > self.inner.config.cpus.max(1) * 8 {
            return Err(HypervisorError::InvalidConfig(format!(
                "{} vcpus",
                config.vcpus
            )));
        }
        if config.memory_mib == 0 {
            return Err(HypervisorError::InvalidConfig("no memory".into()));
        }
        let mut st = self.state();
        let free_mib = self.inner.free_mib(&st);
        if config.memory_mib > free_mib {
            return Err(HypervisorError::NotEnoughMemory {
                needed_mib: config.memory_mib,
                free_mib,
            });
        }
        // Round-robin from the last id handed out, skipping ids in use.
        let wrap = |d: u16| {
            if d + 1 >= DomId::FIRST_RESERVED {
                1
            } else {
                d + 1
            }
        };
        let mut candidate = st.next_domid;
        let mut tries = 0u32;
        while st.domains.contains_key(&candidate) {
            candidate = wrap(candidate);
            tries += 1;
            if tries >= u32::from(DomId::FIRST_RESERVED) {
                return Err(HypervisorError::NoFreeDomid);
            }
        }
        st.next_domid = wrap(candidate);
        st.used_mib += config.memory_mib;
        self.inner.memory_changes.fetch_add(1, Ordering::Release);
        st.domains.insert(
            candidate,
            SimDomain {
                uuid: config.uuid,
                domain_type: config.domain_type,
                memory_mib: config.memory_mib,
                target_mib: config.memory_mib,
                max_mib: config.memory_mib,
                vcpus: config.vcpus,
                paused: true,
                built: false,
                shutdown: None,
                watchers: Vec::new(),
                cmdline: None,
                built_cmdline: String::new(),
                resumed: false,
                memory_seed: save::seed(&config.uuid, candidate),
                generations: std::collections::HashMap::new(),
                running: watch::Sender::new(false),
                console: ConsoleRing::default(),
                faults: watch::Sender::new(GuestFaults::default()),
            },
        );
        Ok(DomId(candidate))
    }

    fn build_domain(&self, domid: DomId, image: &BootImage) -> Result<Built, HypervisorError> {
        if image.kernel.as_os_str().is_empty() {
            return Err(HypervisorError::InvalidConfig("no kernel".into()));
        }
        let mut st = self.state();
        let port = st.next_port;
        st.next_port += 2;
        let d = domain(&mut st, domid)?;
        if d.built {
            return Err(HypervisorError::InvalidConfig(format!(
                "domain {domid} is already built"
            )));
        }
        d.built = true;
        d.cmdline = Some(image.cmdline.clone());
        d.built_cmdline = image.cmdline.clone();
        // Guest frame numbers as a PV builder would place them, high in the guest's memory.
        let top = d.memory_mib * 256;
        Ok(Built {
            store_port: port,
            store_gfn: top - 2,
            console_port: port + 1,
            console_gfn: top - 1,
        })
    }

    fn unpause(&self, domid: DomId) -> Result<(), HypervisorError> {
        let mut st = self.state();
        let d = domain(&mut st, domid)?;
        if !d.built {
            return Err(HypervisorError::InvalidConfig(format!(
                "domain {domid} has not been built"
            )));
        }
        d.paused = false;
        d.running.send_replace(d.shutdown.is_none());
        // The first time it runs, its guest boots (or resumes).
        self.inner.spawn_guest(domid, d);
        Ok(())
    }

    fn pause(&self, domid: DomId) -> Result<(), HypervisorError> {
        let mut st = self.state();
        let d = domain(&mut st, domid)?;
        d.paused = true;
        d.running.send_replace(false);
        Ok(())
    }

    fn shutdown(&self, domid: DomId, reason: ShutdownReason) -> Result<(), HypervisorError> {
        self.inner.shutdown(domid, reason)
    }

    fn destroy(&self, domid: DomId) -> Result<(), HypervisorError> {
        let mut st = self.state();
        let mut d = st
            .domains
            .remove(&domid.0)
            .ok_or(HypervisorError::NoSuchDomain(domid))?;
        st.used_mib -= d.memory_mib;
        self.inner.memory_changes.fetch_add(1, Ordering::Release);
        notify(&mut d, DomainEvent::Destroyed);
        Ok(())
    }

    fn domain_info(&self, domid: DomId) -> Result<DomainInfo, HypervisorError> {
        if domid == DomId::DOM0 {
            return Ok(self.dom0_info());
        }
        let st = self.state();
        let d = st
            .domains
            .get(&domid.0)
            .ok_or(HypervisorError::NoSuchDomain(domid))?;
        Ok(info(domid, d))
    }

    fn list_domains(&self) -> Result<Vec<DomainInfo>, HypervisorError> {
        let st = self.state();
        let mut all = vec![self.dom0_info()];
        all.extend(st.domains.iter().map(|(id, d)| info(DomId(*id), d)));
        Ok(all)
    }

    fn set_memory_target(&self, domid: DomId, mib: u64) -> Result<(), HypervisorError> {
        let mut st = self.state();
        let d = domain(&mut st, domid)?;
        if mib > d.memory_mib {
            return Err(HypervisorError::InvalidConfig(format!(
                "target {mib} MiB above the maximum {} MiB",
                d.memory_mib
            )));
        }
        // The hypervisor's side only: the guest balloons down to it (or up
        // within it) when it reads memory/target.
        d.max_mib = mib;
        Ok(())
    }

    fn subscribe(
        &self,
        domid: DomId,
    ) -> Result<mpsc::UnboundedReceiver<DomainEvent>, HypervisorError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut st = self.state();
        let d = domain(&mut st, domid)?;
        // A subscriber that arrives after the shutdown still learns of it.
        if let Some(reason) = d.shutdown {
            let _ = tx.send(DomainEvent::Shutdown(reason));
        }
        d.watchers.push(tx);
        Ok(rx)
    }

    fn open_console(
        &self,
        domid: DomId,
        _name: &str,
    ) -> Result<mpsc::UnboundedReceiver<Vec<u8>>, HypervisorError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut st = self.state();
        let console = &mut domain(&mut st, domid)?.console;
        let unread = std::mem::take(&mut console.unread);
        if !unread.is_empty() {
            let _ = tx.send(unread);
        }
        console.reader = Some(tx);
        Ok(rx)
    }
}

impl InjectGuestFaults for SimHypervisor {
    fn inject(&self, domid: DomId, fault: GuestFault) -> Result<(), HypervisorError> {
        let mut st = self.state();
        let d = domain(&mut st, domid)?;
        d.faults.send_modify(|f| match fault {
            GuestFault::Hang => f.hung = true,
            GuestFault::HangFrontend { kind, devid } => f.hung_frontends.push((kind, devid)),
        });
        Ok(())
    }
}

fn info(domid: DomId, d: &SimDomain) -> DomainInfo {
    DomainInfo {
        domid,
        uuid: d.uuid,
        domain_type: d.domain_type,
        paused: d.paused,
        dying: false,
        shutdown: d.shutdown,
        memory_kib: d.target_mib * 1024,
        max_memory_kib: d.memory_mib * 1024,
        vcpus: d.vcpus,
        cpu_time_ns: 0,
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn sim() -> SimHypervisor {
        SimHypervisor::new(SimConfig {
            total_mib: 4096,
            dom0_mib: 1024,
            cpus: 4,
        })
    }

    fn cfg(mib: u64) -> DomainConfig {
        DomainConfig {
            uuid: [7; 16],
            domain_type: DomainType::Pv,
            memory_mib: mib,
            vcpus: 1,
        }
    }

    fn image() -> BootImage {
        BootImage {
            kernel: "/boot/vmlinuz".into(),
            ramdisk: None,
            cmdline: String::new(),
            firmware: Default::default(),
        }
    }

    #[test]
    fn domids_are_handed_out_like_xen() {
        let h = sim();
        let a = h.create_domain(&cfg(64)).unwrap();
        let b = h.create_domain(&cfg(64)).unwrap();
        assert_eq!((a, b), (DomId(1), DomId(2)));
        h.destroy(a).unwrap();
        // Not reused until the ids wrap.
        assert_eq!(h.create_domain(&cfg(64)).unwrap(), DomId(3));
    }

    #[test]
    fn memory_admission_leaves_nothing_behind() {
        let h = sim();
        assert_eq!(h.physinfo().unwrap().free_mib, 3072);
        let a = h.create_domain(&cfg(2048)).unwrap();
        let err = h.create_domain(&cfg(2048)).unwrap_err();
        assert!(matches!(
            err,
            HypervisorError::NotEnoughMemory {
                needed_mib: 2048,
                free_mib: 1024
            }
        ));
        assert_eq!(h.domids(), vec![a]);
        h.destroy(a).unwrap();
        assert_eq!(h.physinfo().unwrap().free_mib, 3072);
    }

    #[test]
    fn memory_changes_move_with_free_memory_only() {
        let h = sim();
        let n = h.memory_changes();
        let a = h.create_domain(&cfg(64)).unwrap();
        assert_eq!(h.memory_changes(), n + 1);
        // A refused creation changed nothing.
        h.create_domain(&cfg(1 << 20)).unwrap_err();
        h.pause(a).unwrap();
        assert_eq!(h.memory_changes(), n + 1);
        h.destroy(a).unwrap();
        assert_eq!(h.memory_changes(), n + 2);
    }

    #[test]
    fn lifecycle_states_and_events() {
        let h = sim();
        let d = h.create_domain(&cfg(128)).unwrap();
        assert!(h.domain_info(d).unwrap().paused, "created paused");
        assert!(h.unpause(d).is_err(), "cannot run an unbuilt domain");
        let built = h.build_domain(d, &image()).unwrap();
        assert_ne!(built.store_port, built.console_port);
        h.unpause(d).unwrap();
        let mut events = h.subscribe(d).unwrap();
        h.pause(d).unwrap();
        assert!(h.domain_info(d).unwrap().paused);
        h.shutdown(d, ShutdownReason::Reboot).unwrap();
        assert_eq!(
            h.domain_info(d).unwrap().shutdown,
            Some(ShutdownReason::Reboot)
        );
        h.destroy(d).unwrap();
        assert_eq!(
            events.try_recv().unwrap(),
            DomainEvent::Shutdown(ShutdownReason::Reboot)
        );
        assert_eq!(events.try_recv().unwrap(), DomainEvent::Destroyed);
        assert!(matches!(
            h.domain_info(d),
            Err(HypervisorError::NoSuchDomain(_))
        ));
        assert_eq!(ShutdownReason::from_code(3), Some(ShutdownReason::Crash));
        assert_eq!(ShutdownReason::Crash.code(), 3);
        assert_eq!(h.list_domains().unwrap().len(), 1, "dom0 only");
    }
}
