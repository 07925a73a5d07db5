//! The xen backend: real Xen 4.17 through libxenctrl and libxenguest,
//! loaded at run time ([`ffi`]). It builds PV guests the way libxl does
//! (docs/xen-driver-research.md §3.1): create, max vcpus, max memory, TSC
//! and CPUID defaults, the xenstore and console event channels, then
//! libxenguest's builder (`xc_dom_*` in `xc_linux_build`'s order, from
//! the kernel decompressed once and kept mapped, [`kernel`]). PVH guests
//! go through the same builder with xenith's ACPI tables (§3.2, [`acpi`]).
//! HVM guests are built as libxl builds them with a device model
//! (docs/hvm.md): hvmloader as the kernel with SeaBIOS as its firmware
//! module, libxl's MMIO hole and emulation flags; the guest's kernel (if
//! its spec names one) is QEMU's to boot, not the builder's.
//!
//! Shutdown and death notifications come from a poller thread that reads
//! the domain list (the flags libxl reads) whenever xenstored fires
//! `@releaseDomain`, and every second anyway.
//! Consoles are xenconsoled's: `open_console` follows the log it writes
//! for the domain (`xenconsoled --log=guest`).

mod acpi;
mod console;
mod hvm;
pub use hvm::{HVMLOADER, OVMF, SEABIOS};
pub mod ffi;
pub mod kernel;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tokio::sync::mpsc;

use self::ffi::{CreateDomain, DomainInfoRaw, Xc};
use super::hypervisor::{
    BootImage, Built, DomId, DomainConfig, DomainEvent, DomainInfo, DomainType, Hypervisor,
    HypervisorError, HypervisorKind, PhysInfo, ShutdownReason,
};
use super::images::BootImages;
use super::xenstore::XenstoreFollower;

/// Where xenconsoled writes guests' console logs (`--log-dir`).
pub const CONSOLE_LOG_DIR: &str = "/var/log/xen/console";
/// Where an HVM guest's QEMU writes its serial line (console 0 of an HVM
/// guest: xenconsoled does not serve it).
pub fn serial_log(name: &str) -> PathBuf {
    serial_log_in(std::path::Path::new(CONSOLE_LOG_DIR), name)
}

fn serial_log_in(dir: &std::path::Path, name: &str) -> PathBuf {
    dir.join(format!("serial-{name}.log"))
}

/// How often a console reader looks at xenconsoled's log.
const CONSOLE_POLL: Duration = Duration::from_millis(200);
/// How often domain states are read for shutdown and death when
/// `@releaseDomain` has not fired (it is what normally wakes the poller).
const POLL: Duration = Duration::from_secs(1);
/// libxl's LIBXL_MAXMEM_CONSTANT: max memory is the target plus this.
const MAXMEM_SLACK_KIB: u64 = 1024;
/// libxl's default ssidref (SECINITSID_DOMU); ignored unless FLASK enforces.
const SSIDREF_DOMU: u32 = 12;

fn call(call: &'static str, e: std::io::Error) -> HypervisorError {
    HypervisorError::Call { call, source: e }
}

fn utf8(p: &std::path::Path) -> Result<&str, HypervisorError> {
    p.to_str()
        .ok_or_else(|| HypervisorError::InvalidConfig(format!("{} is not UTF-8", p.display())))
}

/// Who follows which domain, and what was last told.
#[derive(Debug, Default)]
struct Watches {
    by_domid: HashMap<u16, Vec<mpsc::UnboundedSender<DomainEvent>>>,
    told_shutdown: HashMap<u16, ShutdownReason>,
}

/// A Xen host.
#[derive(Debug)]
pub struct XenHypervisor {
    xc: Arc<Xc>,
    watches: Arc<Mutex<Watches>>,
    poller: OnceLock<()>,
    console_dir: PathBuf,
    kernels: Arc<kernel::KernelCache>,
    memory_changes: AtomicU64,
    /// Wakes the poller: `@releaseDomain` fired (a domain shut down or
    /// died). The receiver is the poller's, once it runs.
    kick: std::sync::mpsc::SyncSender<()>,
    kicked: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    /// How far into xenconsoled's log of each domain the console readers
    /// got: a reader opened again (a restarted console actor) goes on from
    /// there, as it would from the console ring.
    console_read: Arc<Mutex<ConsoleOffsets>>,
}

use console::ConsoleOffsets;

/// Bumps the driver's memory change count when the call that holds it
/// returns, however it returns (a failed build may have populated memory).
struct MemoryChange<'a>(&'a AtomicU64);

impl Drop for MemoryChange<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Release);
    }
}

/// Locks state that stays consistent even if a holder panicked (watcher
/// lists, console offsets, the poller's receiver): goes on with it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Hypercalls block: debug builds check they are made off the async threads.
#[track_caller]
fn hypercall() {
    crate::drivers::blocking::debug_assert_blocking_allowed("a hypercall");
}

fn info(raw: &DomainInfoRaw) -> DomainInfo {
    let shutdown = (raw.flags & ffi::DOMINF_SHUTDOWN != 0)
        .then(|| ShutdownReason::from_code((raw.flags >> ffi::DOMINF_SHUTDOWN_SHIFT) & 0xff))
        .flatten();
    let domain_type = if raw.flags & ffi::DOMINF_HVM_GUEST == 0 {
        DomainType::Pv
    } else if raw.arch_config.emulation_flags == ffi::EMU_LAPIC {
        DomainType::Pvh
    } else {
        DomainType::Hvm
    };
    DomainInfo {
        domid: DomId(raw.domain),
        uuid: raw.handle,
        domain_type,
        paused: raw.flags & ffi::DOMINF_PAUSED != 0,
        dying: raw.flags & ffi::DOMINF_DYING != 0,
        shutdown,
        memory_kib: raw.tot_pages * 4,
        max_memory_kib: raw.max_pages * 4,
        vcpus: raw.nr_online_vcpus,
        cpu_time_ns: raw.cpu_time,
    }
}

impl XenHypervisor {
    /// Opens libxenctrl (needs /dev/xen/privcmd and Xen 4.17's libraries);
    /// decompressed kernels are cached in `kernel_cache`, which is returned
    /// too (what the VMs' definitions prepare).
    pub fn open(kernel_cache: PathBuf) -> Result<(Self, Arc<dyn BootImages>), HypervisorError> {
        // Said here rather than by libxenctrl, which prints its own line.
        let privcmd = crate::drivers::select::PRIVCMD;
        if !std::path::Path::new(privcmd).exists() {
            return Err(HypervisorError::Unavailable(
                "xen",
                format!("{privcmd} is missing: this host does not run Xen, or xen_privcmd is not loaded"),
            ));
        }
        let xc = Xc::open().map_err(|e| HypervisorError::Unavailable("xen", e.to_string()))?;
        let version = xc
            .version()
            .map_err(|e| HypervisorError::Unavailable("xen", e.to_string()))?;
        if !version.starts_with("4.17") {
            return Err(HypervisorError::Unavailable(
                "xen",
                format!("this build drives Xen 4.17, the host runs {version}"),
            ));
        }
        // One pending kick is enough: a read serves all that came before.
        let (kick, kicked) = std::sync::mpsc::sync_channel(1);
        let kernels = Arc::new(kernel::KernelCache::new(kernel_cache));
        let xen = Self {
            kick,
            kicked: Mutex::new(Some(kicked)),
            xc: Arc::new(xc),
            watches: Arc::new(Mutex::new(Watches::default())),
            poller: OnceLock::new(),
            console_dir: PathBuf::from(CONSOLE_LOG_DIR),
            kernels: kernels.clone(),
            memory_changes: AtomicU64::new(0),
            console_read: Arc::default(),
        };
        Ok((xen, kernels))
    }

    /// The kernel to build from, decompressed once ([`kernel`]).
    fn kernel(&self, path: &std::path::Path) -> Result<kernel::Kernel, HypervisorError> {
        prepare_kernel(&self.kernels, path)
    }

    fn raw(&self, domid: DomId) -> Result<DomainInfoRaw, HypervisorError> {
        find(&self.xc, domid)
            .map_err(|e| call("xc_domain_getinfolist", e))?
            .ok_or(HypervisorError::NoSuchDomain(domid))
    }

    /// Starts the poller once: it tells watchers of shutdowns and deaths.
    fn start_poller(&self) {
        self.poller.get_or_init(|| {
            let (xc, watches) = (self.xc.clone(), self.watches.clone());
            let kicked = lock(&self.kicked).take();
            let spawned = std::thread::Builder::new()
                .name("xen-domain-poller".into())
                .spawn(move || poll_domains(&xc, &watches, kicked));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start the domain poller");
            }
        });
    }
}

/// Every domain, in batches.
fn all(xc: &Xc) -> std::io::Result<Vec<DomainInfoRaw>> {
    const BATCH: usize = 256;
    let mut out = Vec::new();
    let mut next = 0u32;
    loop {
        let batch = xc.domain_getinfolist(next, BATCH)?;
        let full = batch.len() == BATCH;
        if let Some(last) = batch.last() {
            next = u32::from(last.domain) + 1;
        }
        out.extend(batch);
        if !full {
            return Ok(out);
        }
    }
}

/// One domain, if it exists: Xen 4.17 answers with the next domain at or
/// after the id, so the id is checked.
fn find(xc: &Xc, domid: DomId) -> std::io::Result<Option<DomainInfoRaw>> {
    Ok(xc
        .domain_getinfolist(u32::from(domid.0), 1)?
        .into_iter()
        .find(|d| d.domain == domid.0))
}

/// Reads the domains followed whenever `@releaseDomain` fires, and every
/// [`POLL`] anyway: tells their followers of shutdowns and deaths.
fn poll_domains(xc: &Xc, watches: &Mutex<Watches>, kicked: Option<std::sync::mpsc::Receiver<()>>) {
    use std::sync::mpsc::RecvTimeoutError;
    let mut kicked = kicked;
    loop {
        match kicked.as_ref().map(|k| k.recv_timeout(POLL)) {
            Some(Ok(())) => {
                // One read serves every kick queued meanwhile.
                while kicked.as_ref().is_some_and(|k| k.try_recv().is_ok()) {}
            }
            Some(Err(RecvTimeoutError::Timeout)) => {}
            Some(Err(RecvTimeoutError::Disconnected)) => kicked = None,
            None => std::thread::sleep(POLL),
        }
        let watched: Vec<u16> = lock(watches).by_domid.keys().copied().collect();
        if watched.is_empty() {
            continue;
        }
        let Ok(all) = all(xc) else {
            continue;
        };
        let now: HashMap<u16, DomainInfo> = all.iter().map(|d| (d.domain, info(d))).collect();
        let mut w = lock(watches);
        for domid in watched {
            match now.get(&domid) {
                None => tell(&mut w, domid, DomainEvent::Destroyed, true),
                Some(d) if d.dying => tell(&mut w, domid, DomainEvent::Destroyed, true),
                Some(d) => {
                    if let Some(reason) = d.shutdown {
                        if w.told_shutdown.get(&domid) != Some(&reason) {
                            w.told_shutdown.insert(domid, reason);
                            tell(&mut w, domid, DomainEvent::Shutdown(reason), false);
                        }
                    }
                }
            }
        }
    }
}

fn tell(w: &mut Watches, domid: u16, event: DomainEvent, last: bool) {
    if let Some(list) = w.by_domid.get_mut(&domid) {
        list.retain(|tx| tx.send(event).is_ok());
    }
    if last {
        w.by_domid.remove(&domid);
        w.told_shutdown.remove(&domid);
    }
}

impl Hypervisor for XenHypervisor {
    fn kind(&self) -> HypervisorKind {
        HypervisorKind::Xen
    }

    fn physinfo(&self) -> Result<PhysInfo, HypervisorError> {
        hypercall();
        let p = self.xc.physinfo().map_err(|e| call("xc_physinfo", e))?;
        Ok(PhysInfo {
            xen_version: self.xc.version().map_err(|e| call("xc_version", e))?,
            total_mib: p.total_pages / 256,
            free_mib: p.free_pages / 256,
            cpus: p.nr_cpus,
        })
    }

    fn memory_changes(&self) -> u64 {
        self.memory_changes.load(Ordering::Acquire)
    }

    fn create_domain(&self, config: &DomainConfig) -> Result<DomId, HypervisorError> {
        hypercall();
        let _changed = MemoryChange(&self.memory_changes);
        let p = self.xc.physinfo().map_err(|e| call("xc_physinfo", e))?;
        let free_mib = p.free_pages / 256;
        if config.memory_mib > free_mib {
            return Err(HypervisorError::NotEnoughMemory {
                needed_mib: config.memory_mib,
                free_mib,
            });
        }
        let (flags, emulation_flags) = match config.domain_type {
            DomainType::Pv => (0, 0),
            DomainType::Pvh if p.capabilities & ffi::PHYSCAP_HAP != 0 => {
                (ffi::CDF_HVM | ffi::CDF_HAP, ffi::EMU_LAPIC)
            }
            DomainType::Pvh => {
                return Err(HypervisorError::InvalidConfig(
                    "PVH needs hardware-assisted paging, which this host lacks".into(),
                ))
            }
            DomainType::Hvm if p.capabilities & ffi::PHYSCAP_HAP != 0 => {
                (ffi::CDF_HVM | ffi::CDF_HAP, ffi::EMU_HVM)
            }
            DomainType::Hvm => {
                return Err(HypervisorError::InvalidConfig(
                    "HVM needs hardware-assisted paging, which this host lacks".into(),
                ))
            }
        };
        let grant_version = if p.capabilities & ffi::PHYSCAP_GNTTAB_V2 != 0 {
            2
        } else {
            1
        };
        let mut create = CreateDomain {
            ssidref: SSIDREF_DOMU,
            handle: config.uuid,
            flags,
            max_vcpus: config.vcpus,
            max_evtchn_port: 1023,
            max_grant_frames: -1,
            max_maptrack_frames: -1,
            grant_opts: grant_version,
            arch: ffi::ArchDomainConfig {
                emulation_flags,
                misc_flags: 0,
            },
            ..CreateDomain::default()
        };
        let domid = self
            .xc
            .domain_create(&mut create)
            .map_err(|e| call("xc_domain_create", e))?;
        let setup = || -> Result<(), HypervisorError> {
            self.xc
                .domain_max_vcpus(domid, config.vcpus)
                .map_err(|e| call("xc_domain_max_vcpus", e))?;
            self.xc
                .domain_setmaxmem(domid, config.memory_mib * 1024 + MAXMEM_SLACK_KIB)
                .map_err(|e| call("xc_domain_setmaxmem", e))?;
            self.xc
                .domain_set_tsc_default(domid)
                .map_err(|e| call("xc_domain_set_tsc_info", e))?;
            // libxl's paging pool for HAP: 4 KiB × (256 per vCPU + 1 per MiB).
            let pool_bytes = (4 * (256 * u64::from(config.vcpus) + config.memory_mib)) << 10;
            match config.domain_type {
                DomainType::Pvh => self
                    .xc
                    .hvm_container_setup(domid, pool_bytes)
                    .map_err(|e| call("set up the HVM container", e))?,
                DomainType::Hvm => self
                    .xc
                    .hvm_setup(domid, pool_bytes)
                    .map_err(|e| call("set up the HVM domain", e))?,
                DomainType::Pv => {}
            }
            self.xc
                .cpuid_apply_default(domid)
                .map_err(|e| call("xc_cpuid_apply_policy", e))
        };
        if let Err(e) = setup() {
            let _ = self.xc.domain_destroy(domid);
            return Err(e);
        }
        // Xen hands out domids below DOMID_FIRST_RESERVED (0x7ff0).
        u16::try_from(domid).map(DomId).map_err(|_| {
            call(
                "xc_domain_create",
                std::io::Error::other(format!("domid {domid}")),
            )
        })
    }

    fn build_domain(&self, domid: DomId, image: &BootImage) -> Result<Built, HypervisorError> {
        hypercall();
        let _changed = MemoryChange(&self.memory_changes);
        let d = self.raw(domid)?;
        let domain_type = info(&d).domain_type;
        let mem_mib = (d.max_pages * 4).saturating_sub(MAXMEM_SLACK_KIB) / 1024;
        let id = u32::from(domid.0);
        // xenstored and xenconsoled are in dom0: store first, then console (libxl's order).
        let store_port = self
            .xc
            .evtchn_alloc_unbound(id, 0)
            .map_err(|e| call("xc_evtchn_alloc_unbound", e))?;
        let console_port = self
            .xc
            .evtchn_alloc_unbound(id, 0)
            .map_err(|e| call("xc_evtchn_alloc_unbound", e))?;
        if domain_type == DomainType::Hvm {
            let vcpus = d.max_vcpu_id.saturating_add(1);
            return self.build_hvm(
                domid,
                image.firmware,
                mem_mib,
                vcpus,
                store_port,
                console_port,
            );
        }
        let kernel = self.kernel(&image.kernel)?;
        let kernel = match &kernel {
            kernel::Kernel::Elf(elf) => ffi::KernelImage::Mem(elf),
            kernel::Kernel::File(file) => ffi::KernelImage::File(utf8(file)?),
        };
        let ramdisk = image.ramdisk.as_deref().map(utf8).transpose()?;
        let mem_mib = u32::try_from(mem_mib)
            .map_err(|_| HypervisorError::InvalidConfig(format!("{mem_mib} MiB of memory")))?;
        let guest = ffi::GuestImage {
            domid: id,
            mem_mib,
            kernel,
            ramdisk,
            cmdline: &image.cmdline,
            store_port,
            console_port,
        };
        let t0 = std::time::Instant::now();
        let (store_gfn, console_gfn) = if domain_type == DomainType::Pvh {
            self.xc
                .pvh_build(&guest, d.max_vcpu_id.saturating_add(1))
                .map_err(|e| call("build the PVH guest (xc_dom_*)", e))?
        } else {
            // libxl ignores this one's result too.
            let _ = self
                .xc
                .domain_set_memmap_limit(id, u64::from(mem_mib) * 1024);
            self.xc
                .pv_build(&guest)
                .map_err(|e| call("build the PV guest (xc_dom_*)", e))?
        };
        let elapsed_ms = u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX);
        tracing::debug!(%domid, elapsed_ms, "libxenguest built the domain");
        Ok(Built {
            store_port,
            store_gfn,
            console_port,
            console_gfn,
        })
    }

    fn unpause(&self, domid: DomId) -> Result<(), HypervisorError> {
        hypercall();
        self.xc
            .domain_unpause(u32::from(domid.0))
            .map_err(|e| call("xc_domain_unpause", e))
    }

    fn pause(&self, domid: DomId) -> Result<(), HypervisorError> {
        hypercall();
        self.xc
            .domain_pause(u32::from(domid.0))
            .map_err(|e| call("xc_domain_pause", e))
    }

    fn shutdown(&self, domid: DomId, reason: ShutdownReason) -> Result<(), HypervisorError> {
        hypercall();
        self.xc
            .domain_shutdown(u32::from(domid.0), reason.code())
            .map_err(|e| call("xc_domain_shutdown", e))
    }

    fn listens_for_shutdown(&self, domid: DomId) -> Result<bool, HypervisorError> {
        hypercall();
        let d = self.raw(domid)?;
        if info(&d).domain_type != DomainType::Hvm {
            return Ok(true);
        }
        self.xc
            .hvm_pv_drivers(u32::from(domid.0))
            .map_err(|e| call("xc_hvm_param_get", e))
    }

    fn power_button(&self, domid: DomId) -> Result<(), HypervisorError> {
        hypercall();
        self.xc
            .power_button(u32::from(domid.0))
            .map_err(|e| call("xc_domain_send_trigger", e))
    }

    fn destroy(&self, domid: DomId) -> Result<(), HypervisorError> {
        hypercall();
        let _changed = MemoryChange(&self.memory_changes);
        // The domid may come back for another domain: forget its console.
        lock(&self.console_read).remove(&domid.0);
        self.raw(domid)?;
        self.xc
            .domain_destroy(u32::from(domid.0))
            .map_err(|e| call("xc_domain_destroy", e))
    }

    fn domain_info(&self, domid: DomId) -> Result<DomainInfo, HypervisorError> {
        hypercall();
        self.raw(domid).map(|d| info(&d))
    }

    fn list_domains(&self) -> Result<Vec<DomainInfo>, HypervisorError> {
        hypercall();
        Ok(all(&self.xc)
            .map_err(|e| call("xc_domain_getinfolist", e))?
            .iter()
            .map(info)
            .collect())
    }

    fn set_memory_target(&self, domid: DomId, mib: u64) -> Result<(), HypervisorError> {
        hypercall();
        // What `xl mem-set` enforces: the domain may hold no more than the
        // target (plus libxl's slack). The guest's balloon driver follows
        // memory/target, which the toolstack writes.
        let _changed = MemoryChange(&self.memory_changes);
        self.raw(domid)?;
        self.xc
            .domain_setmaxmem(u32::from(domid.0), mib * 1024 + MAXMEM_SLACK_KIB)
            .map_err(|e| call("xc_domain_setmaxmem", e))
    }

    fn subscribe(
        &self,
        domid: DomId,
    ) -> Result<mpsc::UnboundedReceiver<DomainEvent>, HypervisorError> {
        let d = self.raw(domid)?;
        let (tx, rx) = mpsc::unbounded_channel();
        if let Some(reason) = info(&d).shutdown {
            let _ = tx.send(DomainEvent::Shutdown(reason));
        }
        lock(&self.watches)
            .by_domid
            .entry(domid.0)
            .or_default()
            .push(tx);
        self.start_poller();
        // A shutdown between the read above and the registration is seen
        // by the next read: make it now.
        let _ = self.kick.try_send(());
        Ok(rx)
    }

    fn open_console(
        &self,
        domid: DomId,
        name: &str,
    ) -> Result<mpsc::UnboundedReceiver<Vec<u8>>, HypervisorError> {
        self.open_console_impl(domid, name)
    }
}

/// A kernel from the cache (decompressed the first time), its errors
/// sorted: the image's own (the VM's spec is at fault) or the host's.
fn prepare_kernel(
    cache: &kernel::KernelCache,
    path: &std::path::Path,
) -> Result<kernel::Kernel, HypervisorError> {
    cache.prepare(path).map_err(|e| match e.kind() {
        // The image itself: missing, or not a kernel this can read.
        std::io::ErrorKind::NotFound
        | std::io::ErrorKind::InvalidData
        | std::io::ErrorKind::InvalidInput => {
            HypervisorError::InvalidConfig(format!("kernel {}: {e}", path.display()))
        }
        // The host's side (the cache directory, the disk).
        _ => call("prepare the kernel", e),
    })
}

impl BootImages for kernel::KernelCache {
    fn prepare(&self, image: &BootImage) -> Result<(), HypervisorError> {
        crate::drivers::blocking::debug_assert_blocking_allowed("a kernel's preparation");
        prepare_kernel(self, &image.kernel).map(drop)
    }

    fn release(
        &self,
        kernels: &[PathBuf],
        since: std::time::SystemTime,
    ) -> Result<usize, HypervisorError> {
        crate::drivers::blocking::debug_assert_blocking_allowed("the kernel cache's tidying");
        self.retain(kernels, since)
            .map_err(|e| call("tidy the kernel cache", e))
    }
}

impl XenstoreFollower for XenHypervisor {
    /// Follows `@releaseDomain` on the toolstack's connection: shutdowns and
    /// deaths are noticed when xenstored sees them, not at the next poll.
    fn follow(&self, xs: &crate::drivers::xenstore::XsClient) {
        let (xs, kick) = (xs.clone(), self.kick.clone());
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("no runtime to follow @releaseDomain on: domains are polled");
            return;
        };
        runtime.spawn(async move {
            // Watched again if the watch ends (xenstored restarted); the
            // poller reads every POLL meanwhile.
            let mut retry = Duration::from_secs(1);
            loop {
                match xs.watch("@releaseDomain").await {
                    Ok(mut fired) => {
                        retry = Duration::from_secs(1);
                        while fired.next().await.is_some() {
                            tracing::debug!("@releaseDomain fired");
                            if let Err(std::sync::mpsc::TrySendError::Disconnected(())) =
                                kick.try_send(())
                            {
                                return;
                            }
                        }
                        tracing::warn!("the @releaseDomain watch ended: watching again");
                    }
                    Err(error) => {
                        let retry_s = retry.as_secs();
                        tracing::warn!(%error, retry_s, "cannot watch @releaseDomain: domains are polled until it works");
                    }
                }
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(Duration::from_secs(60));
            }
        });
    }
}

impl XenHypervisor {
    fn open_console_impl(
        &self,
        domid: DomId,
        name: &str,
    ) -> Result<mpsc::UnboundedReceiver<Vec<u8>>, HypervisorError> {
        let d = self.raw(domid)?;
        // An HVM guest's console 0 is its serial line (QEMU's log); the
        // others' is the PV console (xenconsoled's).
        let path = if info(&d).domain_type == DomainType::Hvm {
            serial_log_in(&self.console_dir, name)
        } else {
            self.console_dir.join(format!("guest-{name}.log"))
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let xc = self.xc.clone();
        let read = self.console_read.clone();
        let from = console::start(&path, &read, domid);
        std::thread::Builder::new()
            .name(format!("console-{}", domid.0))
            .spawn(move || {
                let alive = || matches!(find(&xc, domid), Ok(Some(_)));
                console::follow_log(&path, from, &tx, alive, domid, &read, CONSOLE_POLL);
            })
            .map_err(|e| call("spawn a console reader", e))?;
        Ok(rx)
    }
}
