//! HVM guests with a device model (libxl's `libxl__build_hvm` with
//! `device_model = true`): hvmloader as the kernel, the BIOS as its
//! "firmware" module, libxl's MMIO hole and memory map, and the vCPUs
//! written into the hvm_info table hvmloader reads (docs/hvm.md).

use std::ffi::c_int;
use std::io;

use super::{
    high_ram, layout_error, off, ram_ends, Container, DomImage, E820Entry, KernelImage, E820_RAM,
    GIB4, XC_DOM_HVM_CONTAINER,
};
use crate::drivers::xen::ffi::Xc;

/// With a device model libxl leaves 256 MiB below 4 GiB for MMIO
/// (HVM_BELOW_4G_MMIO_LENGTH, hvm/e820.h): QEMU's PCI devices go there.
const HVM_MMIO_SIZE: u64 = 0x1000_0000;
const HVM_MMIO_START: u64 = GIB4 - HVM_MMIO_SIZE;
/// libxl's LIBXL_VGA_HOLE_SIZE, in pages (0xa0000-0xbffff, QEMU's VGA).
const VGA_HOLE_PAGES: u64 = 0x20;
/// Where an HVM guest's RAM starts in the map libxl gives Xen (hvmloader
/// makes the guest's own e820 below 1 MiB).
const HVM_LOW_MEM_START: u64 = 0x10_0000;
/// The hvm_info table (hvm_info_table.h): in guest page 0x9f at 0x800.
const HVM_INFO_PFN_U32: u32 = 0x9f;
const HVM_INFO_OFFSET: usize = 0x800;
const PROT_RW: c_int = libc::PROT_READ | libc::PROT_WRITE;

/// What an HVM build needs: hvmloader is the kernel, the BIOS its module.
#[derive(Debug)]
pub struct HvmImage<'a> {
    pub domid: u32,
    pub mem_mib: u32,
    pub vcpus: u32,
    /// hvmloader's ELF (xen-utils' /usr/lib/xen-4.17/boot/hvmloader).
    pub hvmloader: &'a str,
    /// The system firmware's bytes (SeaBIOS's bios-256k.bin).
    pub firmware: &'a [u8],
    pub store_port: u32,
    pub console_port: u32,
}

/// The map libxl gives Xen for an HVM guest: RAM from 1 MiB to the hole,
/// RAM above 4 GiB (hvmloader describes the rest to the guest).
fn hvm_memory_map(mem_bytes: u64) -> Vec<E820Entry> {
    let (lowmem_end, highmem_end) = ram_ends(mem_bytes, HVM_MMIO_START);
    let mut map = vec![E820Entry {
        addr: HVM_LOW_MEM_START,
        size: lowmem_end - HVM_LOW_MEM_START,
        kind: E820_RAM,
    }];
    map.extend(high_ram(highmem_end));
    map
}

/// Writes `vcpus` into an hvm_info table (`table`: its bytes, `length`
/// long): the count, the online bitmap, the checksum that makes the
/// bytes sum to 0 (libxl's `hvm_build_set_params`).
fn set_hvm_info_vcpus(table: &mut [u8], vcpus: u32) -> io::Result<()> {
    let length = table
        .get(8..12)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_le_bytes)
        .and_then(|l| usize::try_from(l).ok())
        .filter(|l| (48..=table.len()).contains(l))
        .ok_or_else(|| layout_error("the hvm_info table's length"))?;
    if &table[..8] != b"HVM INFO" || vcpus == 0 || vcpus > 128 {
        return Err(layout_error("the hvm_info table"));
    }
    table[13] = 1; // apic_mode
    table[16..20].copy_from_slice(&vcpus.to_le_bytes());
    let online = &mut table[32..48];
    online.fill(0);
    for cpu in 0..vcpus as usize {
        online[cpu / 8] |= 1 << (cpu % 8);
    }
    table[12] = 0;
    let sum = table[..length].iter().fold(0u8, |a, b| a.wrapping_add(*b));
    table[12] = 0u8.wrapping_sub(sum);
    Ok(())
}

impl Xc {
    /// Builds an HVM guest in `domid` (created with CDF_HVM|CDF_HAP and
    /// libxl's emulation flags, its HVM parameters and paging pool set):
    /// `libxl__build_hvm` with a device model. hvmloader is the kernel and
    /// the BIOS its "firmware" module; the guest's vCPUs are written into
    /// its hvm_info table after the build. Returns the xenstore and
    /// console GFNs.
    pub fn hvm_build(&self, b: &HvmImage<'_>) -> io::Result<(u64, u64)> {
        let firmware_len = u32::try_from(b.firmware.len())
            .ok()
            .filter(|l| *l > 0)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "an empty or huge BIOS"))?;
        let mem_bytes = u64::from(b.mem_mib) << 20;
        let mut image = DomImage::allocate(self, None)?;
        image.write::<u32>(off::CONTAINER_TYPE, XC_DOM_HVM_CONTAINER);
        image.write::<u64>(off::TARGET_PAGES, u64::from(b.mem_mib) << 8);
        image.load(KernelImage::File(b.hvmloader), None)?;
        image.firmware = b.firmware.to_vec();
        let data = image.firmware.as_ptr() as usize;
        image.write::<usize>(off::SYSTEM_FIRMWARE_MODULE, data);
        image.write::<u32>(off::SYSTEM_FIRMWARE_MODULE + 8, firmware_len);
        image.write::<u64>(off::SYSTEM_FIRMWARE_MODULE + 16, 0);
        let (lowmem_end, highmem_end) = ram_ends(mem_bytes, HVM_MMIO_START);
        image.hvm_container(&Container {
            mmio_start: HVM_MMIO_START,
            mmio_size: HVM_MMIO_SIZE,
            lowmem_end,
            highmem_end,
            vga_hole_pages: VGA_HOLE_PAGES,
            device_model: true,
            vcpus: b.vcpus,
            console_port: b.console_port,
            store_port: b.store_port,
        });
        image.init(b.domid, b.mem_mib)?;
        let pages = image.build_container(b.domid, hvm_memory_map(mem_bytes))?;
        self.set_hvm_vcpus(b.domid, b.vcpus)?;
        Ok(pages)
    }

    /// libxenguest writes one vCPU into the hvm_info table; hvmloader
    /// reads the count from there: the guest's own count is written in.
    fn set_hvm_vcpus(&self, domid: u32, vcpus: u32) -> io::Result<()> {
        const PAGE_BYTES: usize = 4096;
        let page = PAGE_BYTES;
        // SAFETY: maps one page of the guest's (HVM_INFO_PFN, populated
        // by the build) read-write; unmapped below.
        let ptr = unsafe {
            (self.fns.map_foreign_range)(
                self.handle,
                domid,
                4096,
                PROT_RW,
                std::ffi::c_ulong::from(HVM_INFO_PFN_U32),
            )
        };
        if ptr.is_null() {
            return Err(crate::drivers::xen::ffi::last_error(
                "xc_map_foreign_range(hvm_info)",
            ));
        }
        // SAFETY: a mapping of `page` bytes, ours until munmap; the table
        // lies in its second half.
        let table = unsafe {
            std::slice::from_raw_parts_mut(
                ptr.cast::<u8>().add(HVM_INFO_OFFSET),
                page - HVM_INFO_OFFSET,
            )
        };
        let done = set_hvm_info_vcpus(table, vcpus);
        // SAFETY: the mapping made above, not used after this.
        unsafe { libc::munmap(ptr, page) };
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_hvm_guest_gets_libxls_mmio_hole_and_map() {
        assert_eq!(HVM_MMIO_START, 0xf000_0000);
        let map = hvm_memory_map(128 << 20);
        assert_eq!(map.len(), 1);
        assert_eq!(
            ({ map[0].addr }, { map[0].size }),
            (0x10_0000, (128 << 20) - 0x10_0000)
        );
        let map = hvm_memory_map(4 << 30);
        assert_eq!(map.len(), 2);
        assert_eq!({ map[0].size }, 0xf000_0000 - 0x10_0000);
        assert_eq!(({ map[1].addr }, { map[1].size }), (1 << 32, 0x1000_0000));
    }

    #[test]
    fn the_hvm_info_table_gets_the_vcpus_and_a_checksum_that_sums_to_zero() {
        let mut t = vec![0u8; 0x800];
        t[..8].copy_from_slice(b"HVM INFO");
        t[8..12].copy_from_slice(&48u32.to_le_bytes());
        t[16..20].copy_from_slice(&1u32.to_le_bytes());
        t[32..48].fill(0xff);
        set_hvm_info_vcpus(&mut t, 3).unwrap();
        assert_eq!(u32::from_le_bytes(t[16..20].try_into().unwrap()), 3);
        assert_eq!(t[32], 0b111);
        assert!(t[33..48].iter().all(|b| *b == 0));
        assert_eq!(t[..48].iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        // Not a table: refused, nothing written.
        let mut bad = vec![0u8; 0x800];
        assert!(set_hvm_info_vcpus(&mut bad, 2).is_err());
        assert!(bad.iter().all(|b| *b == 0));
    }
}
