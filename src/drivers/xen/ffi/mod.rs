//! The C side of the xen backend: libxenctrl.so.4.17 and
//! libxenguest.so.4.17 loaded at run time (one xenith binary runs with and
//! without Xen; building needs no Xen library). The declarations below are
//! written by hand from Xen 4.17's public headers (docs/xen-driver-research.md
//! gives the sources and the layouts, checked against Debian 12's
//! libraries). All of xenith's unsafe code for Xen is in this module; what
//! it exports is safe.

use std::ffi::{c_int, c_uint, c_ulong, c_void, CString};
use std::io;

use libloading::Library;

/// `struct xen_arch_domainconfig` (x86).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ArchDomainConfig {
    pub emulation_flags: u32,
    pub misc_flags: u32,
}

/// `struct xen_domctl_createdomain` as of Xen 4.17 (64 bytes; 4.19 changed it,
/// and so did the library's soname).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct CreateDomain {
    pub ssidref: u32,
    pub handle: [u8; 16],
    pub flags: u32,
    pub iommu_opts: u32,
    pub max_vcpus: u32,
    pub max_evtchn_port: u32,
    pub max_grant_frames: i32,
    pub max_maptrack_frames: i32,
    pub grant_opts: u32,
    pub vmtrace_size: u32,
    pub cpupool_id: u32,
    pub arch: ArchDomainConfig,
}

/// `xc_domaininfo_t` = `struct xen_domctl_getdomaininfo` (112 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct DomainInfoRaw {
    pub domain: u16,
    pub pad1: u16,
    pub flags: u32,
    pub tot_pages: u64,
    pub max_pages: u64,
    pub outstanding_pages: u64,
    pub shr_pages: u64,
    pub paged_pages: u64,
    pub shared_info_frame: u64,
    pub cpu_time: u64,
    pub nr_online_vcpus: u32,
    pub max_vcpu_id: u32,
    pub ssidref: u32,
    pub handle: [u8; 16],
    pub cpupool: u32,
    pub gpaddr_bits: u8,
    pub pad2: [u8; 7],
    pub arch_config: ArchDomainConfig,
}

/// `xc_physinfo_t` = `struct xen_sysctl_physinfo` (112 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct PhysInfoRaw {
    pub threads_per_core: u32,
    pub cores_per_socket: u32,
    pub nr_cpus: u32,
    pub max_cpu_id: u32,
    pub nr_nodes: u32,
    pub max_node_id: u32,
    pub cpu_khz: u32,
    pub capabilities: u32,
    pub arch_capabilities: u32,
    pub pad: u32,
    pub total_pages: u64,
    pub free_pages: u64,
    pub scrub_pages: u64,
    pub outstanding_pages: u64,
    pub max_mfn: u64,
    pub hw_cap: [u32; 8],
}

/// XEN_DOMINF_* (domctl.h).
pub const DOMINF_DYING: u32 = 1 << 0;
pub const DOMINF_HVM_GUEST: u32 = 1 << 1;
pub const DOMINF_SHUTDOWN: u32 = 1 << 2;
pub const DOMINF_PAUSED: u32 = 1 << 3;
pub const DOMINF_SHUTDOWN_SHIFT: u32 = 16;
/// XEN_SYSCTL_PHYSCAP_* (sysctl.h).
pub const PHYSCAP_HAP: u32 = 1 << 3;
pub const PHYSCAP_GNTTAB_V2: u32 = 1 << 9;
/// XEN_DOMCTL_CDF_* (domctl.h).
pub const CDF_HVM: u32 = 1 << 0;
pub const CDF_HAP: u32 = 1 << 1;
/// XEN_X86_EMU_LAPIC.
pub const EMU_LAPIC: u32 = 1 << 0;
/// What libxl emulates for an HVM guest with a device model:
/// XEN_X86_EMU_ALL without XEN_X86_EMU_VPCI (arch-x86/xen.h).
pub const EMU_HVM: u32 = 0x3ff;
/// HVM_PARAM_* (hvm/params.h) and HVMPTM_no_delay_for_missed_ticks.
const HVM_PARAM_CALLBACK_IRQ: u32 = 0;
const HVM_PARAM_HPET_ENABLED: u32 = 11;
const HVM_PARAM_VPT_ALIGN: u32 = 16;
const HVM_PARAM_TIMER_MODE: u32 = 10;
const HVM_PARAM_ALTP2M: u32 = 35;
const HVMPTM_NO_DELAY_FOR_MISSED_TICKS: u64 = 1;
/// XC_OPENFLAG_DUMMY: a handle that opens no /dev/xen node.
const XC_OPENFLAG_DUMMY: c_uint = 1 << 0;
const XENVER_VERSION: c_int = 0;
const XENVER_EXTRAVERSION: c_int = 1;
/// XEN_DOMCTL_SENDTRIGGER_POWER (domctl.h): the ACPI power button.
const SENDTRIGGER_POWER: u32 = 3;

type XcHandle = *mut c_void;

/// The functions xenith calls, resolved once.
struct Fns {
    interface_open: unsafe extern "C" fn(*mut c_void, *mut c_void, c_uint) -> XcHandle,
    interface_close: unsafe extern "C" fn(XcHandle) -> c_int,
    physinfo: unsafe extern "C" fn(XcHandle, *mut PhysInfoRaw) -> c_int,
    version: unsafe extern "C" fn(XcHandle, c_int, *mut c_void) -> c_int,
    domain_create: unsafe extern "C" fn(XcHandle, *mut u32, *mut CreateDomain) -> c_int,
    domain_max_vcpus: unsafe extern "C" fn(XcHandle, u32, c_uint) -> c_int,
    domain_setmaxmem: unsafe extern "C" fn(XcHandle, u32, u64) -> c_int,
    domain_set_memmap_limit: unsafe extern "C" fn(XcHandle, u32, c_ulong) -> c_int,
    domain_set_tsc_info: unsafe extern "C" fn(XcHandle, u32, u32, u64, u32, u32) -> c_int,
    evtchn_alloc_unbound: unsafe extern "C" fn(XcHandle, u32, u32) -> c_int,
    domain_unpause: unsafe extern "C" fn(XcHandle, u32) -> c_int,
    domain_pause: unsafe extern "C" fn(XcHandle, u32) -> c_int,
    domain_shutdown: unsafe extern "C" fn(XcHandle, u32, c_int) -> c_int,
    domain_destroy: unsafe extern "C" fn(XcHandle, u32) -> c_int,
    domain_getinfolist: unsafe extern "C" fn(XcHandle, u32, c_uint, *mut DomainInfoRaw) -> c_int,
    hvm_param_set: unsafe extern "C" fn(XcHandle, u32, u32, u64) -> c_int,
    set_paging_mempool_size: unsafe extern "C" fn(XcHandle, u32, u64) -> c_int,
    domain_set_memory_map: unsafe extern "C" fn(XcHandle, u32, *const dom::E820Entry, u32) -> c_int,
    hvm_param_get: unsafe extern "C" fn(XcHandle, u32, u32, *mut u64) -> c_int,
    domain_send_trigger: unsafe extern "C" fn(XcHandle, u32, u32, u32) -> c_int,
    map_foreign_range: unsafe extern "C" fn(XcHandle, u32, c_int, c_int, c_ulong) -> *mut c_void,
    /// libxenguest's domain builder (xenguest.h), for PVH and HVM.
    dom: dom::DomFns,
    /// libxenguest; 10 arguments from 4.17.2 on (the last, `msr`, NULL).
    #[allow(clippy::type_complexity)]
    cpuid_apply_policy: unsafe extern "C" fn(
        XcHandle,
        u32,
        bool,
        *const u32,
        c_uint,
        bool,
        bool,
        bool,
        *const c_void,
        *const c_void,
    ) -> c_int,
}

/// An open libxenctrl interface. Without XC_OPENFLAG_NON_REENTRANT a handle
/// may be used from several threads at once.
pub struct Xc {
    handle: XcHandle,
    fns: Fns,
    // Kept loaded for as long as the function pointers are used.
    _ctrl: Library,
    _guest: Library,
}

// SAFETY: libxenctrl handles opened without XC_OPENFLAG_NON_REENTRANT are
// thread-safe (xc_private.c serialises what needs it); the function
// pointers and libraries are immutable after loading.
unsafe impl Send for Xc {}
// SAFETY: as above: every call takes the handle by value and libxc does its
// own locking.
unsafe impl Sync for Xc {}

impl std::fmt::Debug for Xc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Xc").finish_non_exhaustive()
    }
}

fn last_error(call: &'static str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{call}: {e}"))
}

fn check(call: &'static str, rc: c_int) -> io::Result<c_int> {
    if rc < 0 {
        Err(last_error(call))
    } else {
        Ok(rc)
    }
}

macro_rules! sym {
    ($lib:expr, $name:literal) => {{
        // SAFETY: the symbol's type is the prototype from Xen 4.17's
        // xenctrl.h / xenguest.h, written out in `Fns`; the library is kept
        // loaded in `Xc` for as long as the pointer is used.
        let s = unsafe { $lib.get(concat!($name, "\0").as_bytes()) }
            .map_err(|e| io::Error::new(io::ErrorKind::NotFound, format!("{}: {e}", $name)))?;
        *s
    }};
}

// After `sym!`, which it uses.
mod dom;

pub use dom::{GuestImage, HvmImage, KernelImage, HVM_CONSOLE_GFN, HVM_XENSTORE_GFN};

fn cstring(what: &str, s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} holds a NUL byte"),
        )
    })
}

impl Xc {
    /// Loads the libraries and opens an interface (/dev/xen/privcmd).
    pub fn open() -> io::Result<Xc> {
        Self::open_with(0)
    }

    /// Loads the libraries and opens a dummy interface, which reaches no
    /// hypervisor: enough to check libxenguest's struct layout on a host
    /// without Xen (the library must be installed).
    pub fn open_dummy() -> io::Result<Xc> {
        Self::open_with(XC_OPENFLAG_DUMMY)
    }

    fn open_with(flags: c_uint) -> io::Result<Xc> {
        // SAFETY: loading Debian's Xen 4.17 libraries runs their
        // initialisers, which only set up internal state.
        let ctrl = unsafe { Library::new("libxenctrl.so.4.17") }.map_err(|e| {
            io::Error::new(io::ErrorKind::NotFound, format!("libxenctrl.so.4.17: {e}"))
        })?;
        // SAFETY: as above.
        let guest = unsafe { Library::new("libxenguest.so.4.17") }.map_err(|e| {
            io::Error::new(io::ErrorKind::NotFound, format!("libxenguest.so.4.17: {e}"))
        })?;
        let fns = Fns {
            interface_open: sym!(ctrl, "xc_interface_open"),
            interface_close: sym!(ctrl, "xc_interface_close"),
            physinfo: sym!(ctrl, "xc_physinfo"),
            version: sym!(ctrl, "xc_version"),
            domain_create: sym!(ctrl, "xc_domain_create"),
            domain_max_vcpus: sym!(ctrl, "xc_domain_max_vcpus"),
            domain_setmaxmem: sym!(ctrl, "xc_domain_setmaxmem"),
            domain_set_memmap_limit: sym!(ctrl, "xc_domain_set_memmap_limit"),
            domain_set_tsc_info: sym!(ctrl, "xc_domain_set_tsc_info"),
            evtchn_alloc_unbound: sym!(ctrl, "xc_evtchn_alloc_unbound"),
            domain_unpause: sym!(ctrl, "xc_domain_unpause"),
            domain_pause: sym!(ctrl, "xc_domain_pause"),
            domain_shutdown: sym!(ctrl, "xc_domain_shutdown"),
            domain_destroy: sym!(ctrl, "xc_domain_destroy"),
            domain_getinfolist: sym!(ctrl, "xc_domain_getinfolist"),
            hvm_param_set: sym!(ctrl, "xc_hvm_param_set"),
            set_paging_mempool_size: sym!(ctrl, "xc_set_paging_mempool_size"),
            domain_set_memory_map: sym!(ctrl, "xc_domain_set_memory_map"),
            hvm_param_get: sym!(ctrl, "xc_hvm_param_get"),
            domain_send_trigger: sym!(ctrl, "xc_domain_send_trigger"),
            map_foreign_range: sym!(ctrl, "xc_map_foreign_range"),
            dom: dom::DomFns::load(&guest)?,
            cpuid_apply_policy: sym!(guest, "xc_cpuid_apply_policy"),
        };
        // SAFETY: NULL loggers make libxc log to stderr; the flags are 0
        // (reentrant) or XC_OPENFLAG_DUMMY.
        let handle =
            unsafe { (fns.interface_open)(std::ptr::null_mut(), std::ptr::null_mut(), flags) };
        if handle.is_null() {
            return Err(last_error("xc_interface_open"));
        }
        Ok(Xc {
            handle,
            fns,
            _ctrl: ctrl,
            _guest: guest,
        })
    }

    pub fn physinfo(&self) -> io::Result<PhysInfoRaw> {
        let mut info = PhysInfoRaw::default();
        // SAFETY: `info` is a live, correctly laid out xc_physinfo_t.
        check("xc_physinfo", unsafe {
            (self.fns.physinfo)(self.handle, &mut info)
        })?;
        Ok(info)
    }

    /// "4.17.7" and the like.
    pub fn version(&self) -> io::Result<String> {
        // SAFETY: XENVER_version takes no buffer.
        let v = check("xc_version", unsafe {
            (self.fns.version)(self.handle, XENVER_VERSION, std::ptr::null_mut())
        })?;
        let mut extra = [0u8; 16];
        // SAFETY: XENVER_extraversion writes at most 16 bytes (xen_extraversion_t).
        check("xc_version", unsafe {
            (self.fns.version)(self.handle, XENVER_EXTRAVERSION, extra.as_mut_ptr().cast())
        })?;
        let end = extra.iter().position(|b| *b == 0).unwrap_or(extra.len());
        Ok(format!(
            "{}.{}{}",
            v >> 16,
            v & 0xffff,
            String::from_utf8_lossy(&extra[..end])
        ))
    }

    /// Creates a paused domain; Xen picks the domid.
    pub fn domain_create(&self, config: &mut CreateDomain) -> io::Result<u32> {
        let mut domid = 0u32;
        // SAFETY: both pointers are to live values of the declared types.
        check("xc_domain_create", unsafe {
            (self.fns.domain_create)(self.handle, &mut domid, config)
        })?;
        Ok(domid)
    }

    pub fn domain_max_vcpus(&self, domid: u32, max: u32) -> io::Result<()> {
        // SAFETY: plain values.
        check("xc_domain_max_vcpus", unsafe {
            (self.fns.domain_max_vcpus)(self.handle, domid, max)
        })
        .map(drop)
    }

    pub fn domain_setmaxmem(&self, domid: u32, max_kib: u64) -> io::Result<()> {
        // SAFETY: plain values.
        check("xc_domain_setmaxmem", unsafe {
            (self.fns.domain_setmaxmem)(self.handle, domid, max_kib)
        })
        .map(drop)
    }

    pub fn domain_set_memmap_limit(&self, domid: u32, limit_kib: u64) -> io::Result<()> {
        // SAFETY: plain values.
        check("xc_domain_set_memmap_limit", unsafe {
            (self.fns.domain_set_memmap_limit)(self.handle, domid, limit_kib as c_ulong)
        })
        .map(drop)
    }

    pub fn domain_set_tsc_default(&self, domid: u32) -> io::Result<()> {
        // SAFETY: plain values (tsc_mode 0 = default).
        check("xc_domain_set_tsc_info", unsafe {
            (self.fns.domain_set_tsc_info)(self.handle, domid, 0, 0, 0, 0)
        })
        .map(drop)
    }

    /// The domain's default CPUID policy (libxl's `libxl__cpuid_legacy`, PV).
    pub fn cpuid_apply_default(&self, domid: u32) -> io::Result<()> {
        // SAFETY: no featureset, no xend or msr overrides (NULL, 0); pae on.
        let rc = unsafe {
            (self.fns.cpuid_apply_policy)(
                self.handle,
                domid,
                false,
                std::ptr::null(),
                0,
                true,
                false,
                false,
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        if rc < 0 {
            return Err(io::Error::new(
                io::Error::from_raw_os_error(-rc).kind(),
                format!(
                    "xc_cpuid_apply_policy: {}",
                    io::Error::from_raw_os_error(-rc)
                ),
            ));
        }
        Ok(())
    }

    /// What libxl's `libxl__arch_domain_create` sets on an HVM-container
    /// (PVH) domain before it is built: the timer mode, no altp2m, and the
    /// paging pool (`pool_bytes`, a multiple of 4 KiB).
    pub fn hvm_container_setup(&self, domid: u32, pool_bytes: u64) -> io::Result<()> {
        // SAFETY: plain values.
        check("xc_hvm_param_set(TIMER_MODE)", unsafe {
            (self.fns.hvm_param_set)(
                self.handle,
                domid,
                HVM_PARAM_TIMER_MODE,
                HVMPTM_NO_DELAY_FOR_MISSED_TICKS,
            )
        })?;
        // SAFETY: plain values.
        check("xc_hvm_param_set(ALTP2M)", unsafe {
            (self.fns.hvm_param_set)(self.handle, domid, HVM_PARAM_ALTP2M, 0)
        })?;
        // SAFETY: plain values; Xen refuses a size that is not page-aligned.
        check("xc_set_paging_mempool_size", unsafe {
            (self.fns.set_paging_mempool_size)(self.handle, domid, pool_bytes)
        })
        .map(drop)
    }

    /// What libxl's `hvm_set_conf_params` sets on an HVM domain with a
    /// device model before the container's own settings: HPET on, virtual
    /// platform timers aligned. Then as for PVH ([`Xc::hvm_container_setup`]).
    pub fn hvm_setup(&self, domid: u32, pool_bytes: u64) -> io::Result<()> {
        for (name, param) in [
            ("xc_hvm_param_set(HPET_ENABLED)", HVM_PARAM_HPET_ENABLED),
            ("xc_hvm_param_set(VPT_ALIGN)", HVM_PARAM_VPT_ALIGN),
        ] {
            // SAFETY: plain values.
            check(name, unsafe {
                (self.fns.hvm_param_set)(self.handle, domid, param, 1)
            })?;
        }
        self.hvm_container_setup(domid, pool_bytes)
    }

    /// Whether an HVM guest's PV drivers are up (it has set its event
    /// channel callback, `HVM_PARAM_CALLBACK_IRQ`): only then does it
    /// read `control/shutdown` (libxl's test).
    pub fn hvm_pv_drivers(&self, domid: u32) -> io::Result<bool> {
        let mut value = 0u64;
        // SAFETY: `value` is a live u64 the call writes.
        check("xc_hvm_param_get(CALLBACK_IRQ)", unsafe {
            (self.fns.hvm_param_get)(self.handle, domid, HVM_PARAM_CALLBACK_IRQ, &mut value)
        })?;
        Ok(value != 0)
    }

    /// Presses an HVM guest's ACPI power button (Xen's PM1a emulation
    /// raises the SCI), as `xl trigger DOMAIN power`.
    pub fn power_button(&self, domid: u32) -> io::Result<()> {
        // SAFETY: plain values; vCPU 0.
        check("xc_domain_send_trigger(POWER)", unsafe {
            (self.fns.domain_send_trigger)(self.handle, domid, SENDTRIGGER_POWER, 0)
        })
        .map(drop)
    }

    /// An unbound event channel in `domid` for `remote` to bind.
    pub fn evtchn_alloc_unbound(&self, domid: u32, remote: u32) -> io::Result<u32> {
        // SAFETY: plain values.
        let port = check("xc_evtchn_alloc_unbound", unsafe {
            (self.fns.evtchn_alloc_unbound)(self.handle, domid, remote)
        })?;
        Ok(port as u32)
    }

    pub fn domain_unpause(&self, domid: u32) -> io::Result<()> {
        // SAFETY: plain values.
        check("xc_domain_unpause", unsafe {
            (self.fns.domain_unpause)(self.handle, domid)
        })
        .map(drop)
    }

    pub fn domain_pause(&self, domid: u32) -> io::Result<()> {
        // SAFETY: plain values.
        check("xc_domain_pause", unsafe {
            (self.fns.domain_pause)(self.handle, domid)
        })
        .map(drop)
    }

    pub fn domain_shutdown(&self, domid: u32, reason: u32) -> io::Result<()> {
        // SAFETY: plain values.
        check("xc_domain_shutdown", unsafe {
            (self.fns.domain_shutdown)(self.handle, domid, reason as c_int)
        })
        .map(drop)
    }

    pub fn domain_destroy(&self, domid: u32) -> io::Result<()> {
        // SAFETY: plain values.
        check("xc_domain_destroy", unsafe {
            (self.fns.domain_destroy)(self.handle, domid)
        })
        .map(drop)
    }

    /// Domains with ids from `first`, at most `max` of them.
    pub fn domain_getinfolist(&self, first: u32, max: usize) -> io::Result<Vec<DomainInfoRaw>> {
        let max = c_uint::try_from(max).unwrap_or(c_uint::MAX);
        let mut buf = vec![DomainInfoRaw::default(); usize::try_from(max).unwrap_or(0)];
        // SAFETY: `buf` holds `max` correctly laid out entries.
        let n = check("xc_domain_getinfolist", unsafe {
            (self.fns.domain_getinfolist)(self.handle, first, max, buf.as_mut_ptr())
        })?;
        buf.truncate(n as usize);
        Ok(buf)
    }
}

impl Drop for Xc {
    fn drop(&mut self) {
        // SAFETY: the handle came from xc_interface_open and is closed once.
        unsafe {
            (self.fns.interface_close)(self.handle);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_xen_4_17() {
        assert_eq!(std::mem::size_of::<ArchDomainConfig>(), 8);
        assert_eq!(std::mem::size_of::<CreateDomain>(), 64);
        assert_eq!(std::mem::offset_of!(CreateDomain, arch), 56);
        assert_eq!(std::mem::size_of::<DomainInfoRaw>(), 112);
        assert_eq!(std::mem::offset_of!(DomainInfoRaw, handle), 76);
        assert_eq!(std::mem::offset_of!(DomainInfoRaw, arch_config), 104);
        assert_eq!(std::mem::size_of::<PhysInfoRaw>(), 112);
        assert_eq!(std::mem::offset_of!(PhysInfoRaw, total_pages), 40);
    }
}
