//! libxenguest's domain builder (`xc_dom_*`): PV guests with the sequence
//! of its own `xc_linux_build` (which takes only file names; xenith hands
//! it the kernel it has decompressed, in memory), and guests in an HVM
//! container (PVH) with that of libxl's `libxl__build_hvm` without a
//! device model (docs/xen-driver-research.md §3.2).
//!
//! libxenguest has no accessor for most of what a build needs, so, as
//! libxl and init-xenstore-domain do, the fields of `struct xc_dom_image`
//! are written in place. Their offsets are Xen 4.17's (§2.7: the struct is
//! unchanged from 4.17.0 to 4.20, and the library's soname pins the
//! version). Every image is checked on allocation against values
//! `xc_dom_allocate` is known to set, so a different layout is refused
//! before anything is written.

use std::ffi::{c_char, c_int, c_uint, c_void, CString};
use std::io;
use std::ptr::NonNull;

use libloading::Library;

use super::{check, cstring, Xc, XcHandle};

mod hvm;
pub use hvm::HvmImage;

/// Field offsets in `struct xc_dom_image` (x86_64, Xen 4.17).
mod off {
    pub const MAX_KERNEL_SIZE: usize = 0x098;
    pub const MAX_MODULE_SIZE: usize = 0x0a0;
    pub const CONSOLE_PFN: usize = 0x180;
    pub const XENSTORE_PFN: usize = 0x188;
    /// `xen_pfn_t *pv_p2m` and `xen_pfn_t total_pages`, which the header's
    /// inline `xc_dom_p2m` reads.
    pub const PV_P2M: usize = 0x1e0;
    pub const TOTAL_PAGES: usize = 0x1f8;
    pub const FLAGS: usize = 0x230;
    pub const CONSOLE_EVTCHN: usize = 0x238;
    pub const XENSTORE_EVTCHN: usize = 0x23c;
    pub const CONSOLE_DOMID: usize = 0x240;
    pub const XENSTORE_DOMID: usize = 0x244;
    pub const XCH: usize = 0x250;
    pub const GUEST_DOMID: usize = 0x258;
    pub const CONTAINER_TYPE: usize = 0x6b0;
    pub const TARGET_PAGES: usize = 0x6b8;
    pub const MMIO_START: usize = 0x6c0;
    pub const MMIO_SIZE: usize = 0x6c8;
    pub const LOWMEM_END: usize = 0x6d0;
    pub const HIGHMEM_END: usize = 0x6d8;
    pub const VGA_HOLE_SIZE: usize = 0x6e0;
    pub const DEVICE_MODEL: usize = 0x6e8;
    /// `struct xc_hvm_firmware_module system_firmware_module` (the BIOS
    /// hvmloader loads): laid out as each ACPI module below.
    pub const SYSTEM_FIRMWARE_MODULE: usize = 0x6f0;
    /// `struct xc_hvm_firmware_module acpi_modules[4]`: 24 bytes each,
    /// `data` at 0, `length` at 8, `guest_addr_out` at 16.
    pub const ACPI_MODULES: usize = 0x708;
    pub const E820: usize = 0x780;
    pub const E820_ENTRIES: usize = 0x788;
    pub const MAX_VCPUS: usize = 0x798;
    /// sizeof(struct xc_dom_image).
    pub const SIZE: usize = 0x7a0;
}

/// What `xc_dom_allocate` sets: SIF_VIRT_P2M_4TOOLS, and 1 GiB limits.
const ALLOCATED_FLAGS: u64 = 1 << 4;
const DEFAULT_MAX_SIZE: usize = 1 << 30;
const XC_DOM_HVM_CONTAINER: u32 = 1;
/// xen/features.h: the kernel takes its RSDP anywhere `hvm_start_info` says.
const XENFEAT_LINUX_RSDP_UNRESTRICTED: c_uint = 15;
const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;
const E820_ACPI: u32 = 3;
const PAGE: u64 = 4096;
const GIB4: u64 = 1 << 32;
/// Without a device model libxl leaves 64 MiB below 4 GiB for MMIO (the
/// LAPIC, the special pages, ACPI's place).
const MMIO_SIZE: u64 = 0x0400_0000;
const MMIO_START: u64 = GIB4 - MMIO_SIZE;
/// The HVM container's special pages: 8 below 0xff000 (xg_dom_x86.c).
const SPECIAL_PAGES_START: u64 = (0xff000 - 8) << 12;
const SPECIAL_PAGES_LEN: u64 = 8 << 12;
/// Where an HVM container's xenstore and console rings are (GFNs): fixed.
pub const HVM_XENSTORE_GFN: u64 = 0xff000 - 8 + 4;
pub const HVM_CONSOLE_GFN: u64 = 0xff000 - 8 + 7;

/// `struct e820entry` (xenctrl.h): packed, 20 bytes.
#[repr(C, packed)]
#[derive(Debug, Clone, Copy)]
pub struct E820Entry {
    addr: u64,
    size: u64,
    kind: u32,
}

type DomPtr = *mut c_void;

/// libxenguest's builder functions.
pub(super) struct DomFns {
    loginit: unsafe extern "C" fn(XcHandle) -> c_int,
    allocate: unsafe extern "C" fn(XcHandle, *const c_char, *const c_char) -> DomPtr,
    release: unsafe extern "C" fn(DomPtr),
    kernel_max_size: unsafe extern "C" fn(DomPtr, usize) -> c_int,
    kernel_file: unsafe extern "C" fn(DomPtr, *const c_char) -> c_int,
    kernel_mem: unsafe extern "C" fn(DomPtr, *const c_void, usize) -> c_int,
    guest_os: unsafe extern "C" fn(DomPtr) -> *const c_char,
    feature_get: unsafe extern "C" fn(DomPtr, c_uint) -> bool,
    module_file: unsafe extern "C" fn(DomPtr, *const c_char, *const c_char) -> c_int,
    boot_xen_init: unsafe extern "C" fn(DomPtr, XcHandle, u32) -> c_int,
    parse_image: unsafe extern "C" fn(DomPtr) -> c_int,
    mem_init: unsafe extern "C" fn(DomPtr, c_uint) -> c_int,
    boot_mem_init: unsafe extern "C" fn(DomPtr) -> c_int,
    build_image: unsafe extern "C" fn(DomPtr) -> c_int,
    boot_image: unsafe extern "C" fn(DomPtr) -> c_int,
    gnttab_init: unsafe extern "C" fn(DomPtr) -> c_int,
}

impl DomFns {
    pub(super) fn load(guest: &Library) -> io::Result<DomFns> {
        Ok(DomFns {
            loginit: sym!(guest, "xc_dom_loginit"),
            allocate: sym!(guest, "xc_dom_allocate"),
            release: sym!(guest, "xc_dom_release"),
            kernel_max_size: sym!(guest, "xc_dom_kernel_max_size"),
            kernel_file: sym!(guest, "xc_dom_kernel_file"),
            kernel_mem: sym!(guest, "xc_dom_kernel_mem"),
            guest_os: sym!(guest, "xc_dom_guest_os"),
            feature_get: sym!(guest, "xc_dom_feature_get"),
            module_file: sym!(guest, "xc_dom_module_file"),
            boot_xen_init: sym!(guest, "xc_dom_boot_xen_init"),
            parse_image: sym!(guest, "xc_dom_parse_image"),
            mem_init: sym!(guest, "xc_dom_mem_init"),
            boot_mem_init: sym!(guest, "xc_dom_boot_mem_init"),
            build_image: sym!(guest, "xc_dom_build_image"),
            boot_image: sym!(guest, "xc_dom_boot_image"),
            gnttab_init: sym!(guest, "xc_dom_gnttab_init"),
        })
    }
}

/// The kernel a build loads.
#[derive(Debug, Clone, Copy)]
pub enum KernelImage<'a> {
    /// An ELF in memory, which must stay there until the build returns.
    Mem(&'a [u8]),
    /// A file libxenguest maps (and decompresses, if it must) itself.
    File(&'a str),
}

/// What a build needs (a PVH one is also given its vCPUs).
#[derive(Debug)]
pub struct GuestImage<'a> {
    pub domid: u32,
    /// The guest's RAM (PVH: also its maximum, no populate-on-demand).
    pub mem_mib: u32,
    pub kernel: KernelImage<'a>,
    pub ramdisk: Option<&'a str>,
    pub cmdline: &'a str,
    pub store_port: u32,
    pub console_port: u32,
}

/// Where the guest's RAM below and above an MMIO hole that starts at
/// `mmio_start` ends (no high RAM: 0).
fn ram_ends(mem_bytes: u64, mmio_start: u64) -> (u64, u64) {
    let lowmem_end = mem_bytes.min(mmio_start);
    let highmem_end = if mem_bytes > mmio_start {
        GIB4 + (mem_bytes - mmio_start)
    } else {
        0
    };
    (lowmem_end, highmem_end)
}

/// The RAM above 4 GiB, if there is any.
fn high_ram(highmem_end: u64) -> Option<E820Entry> {
    (highmem_end > 0).then(|| E820Entry {
        addr: GIB4,
        size: highmem_end - GIB4,
        kind: E820_RAM,
    })
}

/// The guest's memory map, as libxl's `domain_construct_memmap` makes it
/// for PVH: low RAM, the special pages, one ACPI entry per table module
/// (`(address, length)`), high RAM.
fn memory_map(mem_bytes: u64, acpi: &[(u64, u64)]) -> Vec<E820Entry> {
    let (lowmem_end, highmem_end) = ram_ends(mem_bytes, MMIO_START);
    let mut map = vec![
        E820Entry {
            addr: 0,
            size: lowmem_end,
            kind: E820_RAM,
        },
        E820Entry {
            addr: SPECIAL_PAGES_START,
            size: SPECIAL_PAGES_LEN,
            kind: E820_RESERVED,
        },
    ];
    for &(addr, len) in acpi {
        // The whole pages the tables are copied into (the RSDP's page
        // overlaps low RAM, as in libxl's map).
        let start = addr & !(PAGE - 1);
        map.push(E820Entry {
            addr: start,
            size: (addr + len).next_multiple_of(PAGE) - start,
            kind: E820_ACPI,
        });
    }
    map.extend(high_ram(highmem_end));
    map
}

/// One `struct xc_dom_image`, from `xc_dom_allocate` to `xc_dom_release`.
struct DomImage<'a> {
    xc: &'a Xc,
    ptr: NonNull<c_void>,
    /// Kept alive until the release: the image points at them.
    e820: Vec<E820Entry>,
    acpi: Vec<Vec<u8>>,
    firmware: Vec<u8>,
}

impl<'a> DomImage<'a> {
    /// Allocates an image and checks that it has the layout this build
    /// writes into.
    fn allocate(xc: &'a Xc, cmdline: Option<&CString>) -> io::Result<DomImage<'a>> {
        // Logs the builder to /var/log/xen/domain-builder-ng.log, as libxl
        // does; without that file it logs nothing, which is no error.
        // SAFETY: the handle is live.
        let _ = unsafe { (xc.fns.dom.loginit)(xc.handle) };
        // SAFETY: the command line is NUL-terminated and copied by the
        // library (xc_dom_strdup); features NULL.
        let raw = unsafe {
            (xc.fns.dom.allocate)(
                xc.handle,
                cmdline.map_or(std::ptr::null(), |c| c.as_ptr()),
                std::ptr::null(),
            )
        };
        let ptr = NonNull::new(raw).ok_or_else(|| super::last_error("xc_dom_allocate"))?;
        let image = DomImage {
            xc,
            ptr,
            e820: Vec::new(),
            acpi: Vec::new(),
            firmware: Vec::new(),
        };
        image.check_layout()?;
        Ok(image)
    }

    /// `xc_dom_allocate` zeroes the struct, then sets the flags, both size
    /// limits and the interface: each must read back where 4.17 keeps it.
    fn check_layout(&self) -> io::Result<()> {
        let ok = self.read::<u64>(off::FLAGS) == ALLOCATED_FLAGS
            && self.read::<usize>(off::MAX_KERNEL_SIZE) == DEFAULT_MAX_SIZE
            && self.read::<usize>(off::MAX_MODULE_SIZE) == DEFAULT_MAX_SIZE
            && self.read::<usize>(off::XCH) == self.xc.handle as usize
            && self.read::<u32>(off::CONTAINER_TYPE) == 0;
        if ok {
            Ok(())
        } else {
            Err(layout_error("the fields xc_dom_allocate sets"))
        }
    }

    /// Where a field of type `T` at `offset` is. The offsets are this
    /// module's constants, all inside the struct.
    fn field<T>(&self, offset: usize) -> *mut T {
        assert!(offset + std::mem::size_of::<T>() <= off::SIZE);
        // SAFETY: the image is a live allocation of off::SIZE bytes and the
        // field lies inside it (asserted above).
        unsafe { self.ptr.as_ptr().cast::<u8>().add(offset).cast::<T>() }
    }

    fn read<T: Copy>(&self, offset: usize) -> T {
        // SAFETY: a field of the live image (its layout checked on
        // allocation); read_unaligned makes no assumption about alignment.
        unsafe { self.field::<T>(offset).read_unaligned() }
    }

    fn write<T: Copy>(&mut self, offset: usize, value: T) {
        // SAFETY: as in `read`; the fields written are plain data whose
        // types are those of Xen 4.17's header, owned by us until release.
        unsafe { self.field::<T>(offset).write_unaligned(value) }
    }

    /// Gives the image its kernel and ramdisk. The kernel's memory, if it
    /// is in memory, is borrowed for as long as the image lives.
    fn load(&mut self, kernel: KernelImage<'a>, ramdisk: Option<&str>) -> io::Result<()> {
        match kernel {
            KernelImage::Mem(elf) => {
                // SAFETY: a live image; the library keeps the pointer (no
                // copy) and only reads through it, and `elf` outlives the
                // image ('a).
                check("xc_dom_kernel_mem", unsafe {
                    (self.xc.fns.dom.kernel_mem)(self.ptr.as_ptr(), elf.as_ptr().cast(), elf.len())
                })?;
            }
            KernelImage::File(path) => {
                let path = cstring("the kernel path", path)?;
                // SAFETY: a live image; the path is NUL-terminated and the
                // file is mapped by the call (the string may go after it).
                check("xc_dom_kernel_file", unsafe {
                    (self.xc.fns.dom.kernel_file)(self.ptr.as_ptr(), path.as_ptr())
                })?;
            }
        }
        if let Some(ramdisk) = ramdisk.filter(|r| !r.is_empty()) {
            let ramdisk = cstring("the ramdisk path", ramdisk)?;
            // SAFETY: as above; one module of the two the struct holds; no
            // module command line.
            check("xc_dom_module_file", unsafe {
                (self.xc.fns.dom.module_file)(self.ptr.as_ptr(), ramdisk.as_ptr(), std::ptr::null())
            })?;
        }
        Ok(())
    }

    /// The machine frame of a PV guest's `pfn` (the header's inline
    /// `xc_dom_p2m`), after `xc_dom_boot_mem_init`.
    fn pv_mfn(&self, pfn: u64) -> io::Result<u64> {
        let total = self.read::<u64>(off::TOTAL_PAGES);
        let p2m = self.read::<usize>(off::PV_P2M) as *const u64;
        let index = usize::try_from(pfn).map_err(|_| layout_error("the guest's p2m"))?;
        if pfn >= total || p2m.is_null() {
            return Err(layout_error("the guest's p2m"));
        }
        // SAFETY: libxenguest's p2m array of `total_pages` entries, alive
        // until the release; `index` is below `total_pages`.
        Ok(unsafe { p2m.add(index).read() })
    }

    /// The guest OS the kernel's ELF notes name (after `xc_dom_parse_image`).
    fn guest_os(&self) -> String {
        // SAFETY: a live, parsed image: the library returns its parms'
        // NUL-terminated `guest_os` array, read before the image goes.
        let os = unsafe { (self.xc.fns.dom.guest_os)(self.ptr.as_ptr()) };
        if os.is_null() {
            return String::new();
        }
        // SAFETY: non-null and NUL-terminated, as above.
        unsafe { std::ffi::CStr::from_ptr(os) }
            .to_string_lossy()
            .into_owned()
    }

    /// `xc_dom_boot_xen_init` (its domid read back), `xc_dom_parse_image`,
    /// `xc_dom_mem_init` and `xc_dom_boot_mem_init`.
    fn init(&mut self, domid: u32, mem_mib: c_uint) -> io::Result<()> {
        // SAFETY: a live image and interface.
        check("xc_dom_boot_xen_init", unsafe {
            (self.xc.fns.dom.boot_xen_init)(self.ptr.as_ptr(), self.xc.handle, domid)
        })?;
        if self.read::<u32>(off::GUEST_DOMID) != domid {
            return Err(layout_error("the guest's domid"));
        }
        self.step("xc_dom_parse_image", self.xc.fns.dom.parse_image)?;
        // SAFETY: a live image; the call only records the size.
        check("xc_dom_mem_init", unsafe {
            (self.xc.fns.dom.mem_init)(self.ptr.as_ptr(), mem_mib)
        })?;
        self.step("xc_dom_boot_mem_init", self.xc.fns.dom.boot_mem_init)
    }

    /// `xc_dom_build_image`, `xc_dom_boot_image` and `xc_dom_gnttab_init`.
    fn build(&self) -> io::Result<()> {
        self.step("xc_dom_build_image", self.xc.fns.dom.build_image)?;
        self.step("xc_dom_boot_image", self.xc.fns.dom.boot_image)?;
        self.step("xc_dom_gnttab_init", self.xc.fns.dom.gnttab_init)
    }

    /// Runs one builder step that takes only the image.
    fn step(&self, call: &'static str, f: unsafe extern "C" fn(DomPtr) -> c_int) -> io::Result<()> {
        // SAFETY: the image is live and was filled in as the step expects
        // (the order of `pvh_build` is libxl's).
        check(call, unsafe { f(self.ptr.as_ptr()) }).map(drop)
    }
}

/// The HVM container fields libxl sets for PVH (no device model) and HVM.
struct Container {
    mmio_start: u64,
    mmio_size: u64,
    lowmem_end: u64,
    highmem_end: u64,
    vga_hole_pages: u64,
    device_model: bool,
    vcpus: u32,
    console_port: u32,
    store_port: u32,
}

impl DomImage<'_> {
    /// Writes an HVM container's layout, vCPUs and rings (dom0 serves
    /// both the console and xenstore).
    fn hvm_container(&mut self, c: &Container) {
        self.write::<u64>(off::MMIO_SIZE, c.mmio_size);
        self.write::<u64>(off::MMIO_START, c.mmio_start);
        self.write::<u64>(off::LOWMEM_END, c.lowmem_end);
        self.write::<u64>(off::HIGHMEM_END, c.highmem_end);
        self.write::<u64>(off::VGA_HOLE_SIZE, c.vga_hole_pages);
        self.write::<u8>(off::DEVICE_MODEL, u8::from(c.device_model));
        self.write::<u32>(off::MAX_VCPUS, c.vcpus);
        self.write::<u32>(off::CONSOLE_EVTCHN, c.console_port);
        self.write::<u32>(off::CONSOLE_DOMID, 0);
        self.write::<u32>(off::XENSTORE_EVTCHN, c.store_port);
        self.write::<u32>(off::XENSTORE_DOMID, 0);
    }

    /// Gives Xen and the image the container's memory map, builds and
    /// boots it; returns its xenstore and console GFNs (fixed).
    fn build_container(mut self, domid: u32, e820: Vec<E820Entry>) -> io::Result<(u64, u64)> {
        let entries = u32::try_from(e820.len()).unwrap_or(u32::MAX);
        // SAFETY: `e820` holds `entries` packed e820 entries; Xen copies them.
        check("xc_domain_set_memory_map", unsafe {
            (self.xc.fns.domain_set_memory_map)(self.xc.handle, domid, e820.as_ptr(), entries)
        })?;
        self.e820 = e820;
        let e820_ptr = self.e820.as_ptr() as usize;
        self.write::<usize>(off::E820, e820_ptr);
        self.write::<u32>(off::E820_ENTRIES, entries);
        self.build()?;
        let store = self.read::<u64>(off::XENSTORE_PFN);
        let console = self.read::<u64>(off::CONSOLE_PFN);
        if (store, console) != (HVM_XENSTORE_GFN, HVM_CONSOLE_GFN) {
            return Err(layout_error("the xenstore and console pages"));
        }
        Ok((store, console))
    }
}

impl Drop for DomImage<'_> {
    fn drop(&mut self) {
        // SAFETY: allocated by xc_dom_allocate and released once; `e820`
        // is dropped after this.
        unsafe { (self.xc.fns.dom.release)(self.ptr.as_ptr()) }
    }
}

fn layout_error(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!(
            "libxenguest.so.4.17's struct xc_dom_image does not have Xen 4.17's layout ({what} \
             are not where they should be): refusing to build"
        ),
    )
}

impl Xc {
    /// Checks libxenguest's `struct xc_dom_image` layout without building
    /// anything (works on a dummy interface).
    pub fn check_dom_layout(&self) -> io::Result<()> {
        let image = DomImage::allocate(self, None)?;
        let probe = 3 << 20;
        // SAFETY: a live image; the call only stores the limit.
        check("xc_dom_kernel_max_size", unsafe {
            (self.fns.dom.kernel_max_size)(image.ptr.as_ptr(), probe)
        })?;
        if image.read::<usize>(off::MAX_KERNEL_SIZE) != probe {
            return Err(layout_error("the kernel size limit"));
        }
        Ok(())
    }

    /// Builds a PV guest in `domid`: `xc_linux_build`'s sequence, with the
    /// kernel in memory when xenith has decompressed it. Returns the
    /// xenstore and console MFNs.
    pub fn pv_build(&self, b: &GuestImage<'_>) -> io::Result<(u64, u64)> {
        let cmdline = cstring("the command line", b.cmdline)?;
        let mut image = DomImage::allocate(self, Some(&cmdline))?;
        image.load(b.kernel, b.ramdisk)?;
        image.write::<u32>(off::CONSOLE_EVTCHN, b.console_port);
        image.write::<u32>(off::XENSTORE_EVTCHN, b.store_port);
        image.init(b.domid, b.mem_mib)?;
        image.build()?;
        let store = image.pv_mfn(image.read::<u64>(off::XENSTORE_PFN))?;
        let console = image.pv_mfn(image.read::<u64>(off::CONSOLE_PFN))?;
        Ok((store, console))
    }

    /// Builds a PVH guest in `domid` (created with CDF_HVM|CDF_HAP and an
    /// emulated LAPIC, its paging pool set): libxl's `libxl__build_hvm`
    /// with no device model, with xenith's ACPI tables. Returns the xenstore and
    /// console GFNs, which are fixed for this container.
    pub fn pvh_build(&self, b: &GuestImage<'_>, vcpus: u32) -> io::Result<(u64, u64)> {
        let cmdline = cstring("the command line", b.cmdline)?;
        if !(1..=127).contains(&vcpus) {
            // The MADT's one-byte APIC ids (2·n) end there.
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{vcpus} vCPUs (1 to 127)"),
            ));
        }
        let mem_bytes = u64::from(b.mem_mib) << 20;
        let mut image = DomImage::allocate(self, Some(&cmdline))?;
        image.write::<u32>(off::CONTAINER_TYPE, XC_DOM_HVM_CONTAINER);
        image.write::<u64>(off::TARGET_PAGES, u64::from(b.mem_mib) << 8);
        image.load(b.kernel, b.ramdisk)?;
        let (lowmem_end, highmem_end) = ram_ends(mem_bytes, MMIO_START);
        image.hvm_container(&Container {
            mmio_start: MMIO_START,
            mmio_size: MMIO_SIZE,
            lowmem_end,
            highmem_end,
            vga_hole_pages: 0,
            device_model: false,
            vcpus,
            console_port: b.console_port,
            store_port: b.store_port,
        });
        image.init(b.domid, b.mem_mib)?;
        // The ACPI tables, as leading modules: xc_dom_build_image copies
        // them to their guest addresses and hvm_start_info points at the
        // first (the RSDP). libxl's test for where the RSDP goes.
        let low_rsdp = image.guest_os() == "linux"
            // SAFETY: a live image, parsed.
            && !unsafe { (self.fns.dom.feature_get)(image.ptr.as_ptr(), XENFEAT_LINUX_RSDP_UNRESTRICTED) };
        let acpi = crate::drivers::xen::acpi::pvh_modules(vcpus, low_rsdp);
        let ranges: Vec<(u64, u64)> = acpi.iter().map(|(a, t)| (*a, t.len() as u64)).collect();
        let e820 = memory_map(mem_bytes, &ranges);
        for (i, (addr, data)) in acpi.into_iter().enumerate() {
            let at = off::ACPI_MODULES + 24 * i;
            let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
            image.acpi.push(data);
            let ptr = image.acpi[i].as_ptr() as usize;
            image.write::<usize>(at, ptr);
            image.write::<u32>(at + 8, len);
            image.write::<u64>(at + 16, addr);
        }
        image.build_container(b.domid, e820)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e820_entries_are_packed_like_xenctrl_h() {
        assert_eq!(std::mem::size_of::<E820Entry>(), 20);
        assert_eq!(std::mem::align_of::<E820Entry>(), 1);
    }

    #[test]
    fn the_memory_map_is_libxls_for_pvh() {
        assert_eq!(ram_ends(512 << 20, MMIO_START), (512 << 20, 0));
        // libxl's ACPI modules: the RSDP after the tables, the info page, the tables.
        let map = memory_map(
            512 << 20,
            &[(0xfc00_2000, 64), (0xfc00_0000, 4096), (0xfc00_1000, 4096)],
        );
        assert_eq!(map.len(), 5);
        let acpi: Vec<(u64, u64, u32)> = map[2..]
            .iter()
            .map(|e| ({ e.addr }, { e.size }, { e.kind }))
            .collect();
        assert_eq!(
            acpi,
            [
                (0xfc00_2000, 0x1000, E820_ACPI),
                (0xfc00_0000, 0x1000, E820_ACPI),
                (0xfc00_1000, 0x1000, E820_ACPI)
            ]
        );
        // An RSDP in the BIOS area: its whole page.
        let low = memory_map(512 << 20, &[(0xfffc0, 64)])[2];
        assert_eq!(({ low.addr }, { low.size }), (0xff000, 0x1000));
        let special = map[1];
        assert_eq!(
            ({ special.addr }, { special.size }, { special.kind }),
            (0xfeff8000, 0x8000, E820_RESERVED)
        );
        // Above the MMIO hole the rest goes over 4 GiB.
        let map = memory_map(5 << 30, &[]);
        let (low, high) = ram_ends(5 << 30, MMIO_START);
        assert_eq!(low, 0xfc00_0000);
        assert_eq!(high, (1 << 32) + (5 << 30) - 0xfc00_0000);
        assert_eq!({ map[2].addr }, 1 << 32);
        assert_eq!(HVM_XENSTORE_GFN, 0xfeffc);
        assert_eq!(HVM_CONSOLE_GFN, 0xfefff);
    }

    /// Needs Debian's libxenguest.so.4.17 (package libxenmisc4.17, which
    /// scripts/test installs with xen-utils-4.17), not Xen.
    #[test]
    fn libxenguest_has_the_layout_this_build_writes() {
        let xc = Xc::open_dummy().unwrap_or_else(|e| {
            panic!(
                "cannot load Xen 4.17's libraries ({e}): install libxenmisc4.17, as scripts/test \
                 does"
            )
        });
        xc.check_dom_layout().unwrap();
    }
}
