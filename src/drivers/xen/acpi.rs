//! The ACPI tables a PVH guest boots with (what libxl builds with libacpi,
//! reduced to what a guest without a device model needs).
//!
//! A Linux PVH guest finds its local APICs in the MADT: without one it
//! registers no timer ("APIC: ACPI MADT or MP tables are not detected"),
//! its clock stands still and nothing that waits for a timeout (a clean
//! shutdown among them) ever finishes. The tables:
//! - RSDP (revision 2), which `hvm_start_info` points at;
//! - XSDT, listing the FADT and the MADT;
//! - FADT (revision 5), hardware-reduced: no PM blocks, no SCI, no legacy
//!   devices, so the guest powers off by halting its vCPUs, which Xen
//!   turns into a poweroff shutdown;
//! - MADT: one enabled local APIC per vCPU, APIC id 2·n (Xen's CPUID
//!   topology for HVM containers), no I/O APIC;
//! - DSDT: an empty definition block.

/// libxl's `ACPI_INFO_PHYSICAL_ADDRESS`, at the start of the MMIO hole:
/// the info page (hvmloader's `acpi_info`; zeroed here, as no AML reads
/// it), then the tables, then the RSDP, as `libxl__dom_load_acpi` lays
/// them out. Each is an ACPI range in the guest's e820.
pub const INFO_ADDR: u64 = 0xfc00_0000;
const TABLES_ADDR: u64 = INFO_ADDR + PAGE;
/// Where the RSDP goes instead for a Linux that finds it only by the
/// standard search (one without `XENFEAT_linux_rsdp_unrestricted`): the
/// top of the BIOS area.
pub const LOW_RSDP_ADDR: u64 = 0x10_0000 - 64;
const PAGE: u64 = 4096;
/// The page size, as a length.
const PAGE_LEN: usize = 4096;

const HEADER_LEN: usize = 36;
const OEM_ID: &[u8; 6] = b"XENITH";
const OEM_TABLE_ID: &[u8; 8] = b"PVH     ";
const CREATOR_ID: &[u8; 4] = b"XNTH";
const LAPIC_ADDR: u32 = 0xfee0_0000;

/// FADT flags and IA-PC boot flags (ACPI 6.x §5.2.9).
const FADT_PWR_BUTTON: u32 = 1 << 4;
const FADT_SLP_BUTTON: u32 = 1 << 5;
const FADT_HW_REDUCED_ACPI: u32 = 1 << 20;
const IAPC_VGA_NOT_PRESENT: u16 = 1 << 2;
const IAPC_CMOS_RTC_NOT_PRESENT: u16 = 1 << 5;
const FADT_LEN: usize = 268;

/// The ACPI modules of a PVH guest with `vcpus` vCPUs, libxl's three in
/// libxl's order, as `(guest address, bytes)`: the RSDP (right after the
/// tables, or at [`LOW_RSDP_ADDR`] when `low_rsdp`), the info page, and
/// the tables in whole pages.
pub fn pvh_modules(vcpus: u32, low_rsdp: bool) -> Vec<(u64, Vec<u8>)> {
    let (rsdp, mut tables) = pvh_tables(vcpus);
    tables.resize(tables.len().next_multiple_of(PAGE_LEN), 0);
    let rsdp_addr = if low_rsdp {
        LOW_RSDP_ADDR
    } else {
        TABLES_ADDR + tables.len() as u64
    };
    vec![
        (rsdp_addr, rsdp),
        (INFO_ADDR, vec![0; PAGE_LEN]),
        (TABLES_ADDR, tables),
    ]
}

/// The tables: the RSDP (64 bytes) and the rest (for `TABLES_ADDR`).
fn pvh_tables(vcpus: u32) -> (Vec<u8>, Vec<u8>) {
    let mut blob = Vec::new();
    let dsdt = place(&mut blob, table(b"DSDT", 2, &[]));
    let mut fadt = vec![0u8; FADT_LEN - HEADER_LEN];
    let at = |off: usize| off - HEADER_LEN;
    // DSDT (32-bit) at 40, and X_DSDT (64-bit) at 140.
    // The tables sit below 4 GiB (TABLES_ADDR), so the 32-bit field holds it.
    let dsdt32 = u32::try_from(dsdt).unwrap_or(u32::MAX);
    put(&mut fadt, at(40), &dsdt32.to_le_bytes());
    put(
        &mut fadt,
        at(109),
        &(IAPC_VGA_NOT_PRESENT | IAPC_CMOS_RTC_NOT_PRESENT).to_le_bytes(),
    );
    put(
        &mut fadt,
        at(112),
        &(FADT_HW_REDUCED_ACPI | FADT_PWR_BUTTON | FADT_SLP_BUTTON).to_le_bytes(),
    );
    put(&mut fadt, at(140), &dsdt.to_le_bytes());
    let fadt = place(&mut blob, table(b"FACP", 5, &fadt));
    let mut madt = Vec::new();
    madt.extend(LAPIC_ADDR.to_le_bytes());
    madt.extend(0u32.to_le_bytes()); // no dual 8259
                                     // A PVH guest has at most 127 vCPUs (checked before the build): each
                                     // UID and APIC id fits its byte.
    for cpu in 0..u8::try_from(vcpus).unwrap_or(u8::MAX).min(127) {
        // Type 0 (processor local APIC), length 8, UID, APIC id, enabled.
        madt.extend([0, 8, cpu, cpu * 2]);
        madt.extend(1u32.to_le_bytes());
    }
    let madt = place(&mut blob, table(b"APIC", 2, &madt));
    let mut xsdt = Vec::new();
    xsdt.extend(fadt.to_le_bytes());
    xsdt.extend(madt.to_le_bytes());
    let xsdt = place(&mut blob, table(b"XSDT", 1, &xsdt));

    let mut rsdp = Vec::with_capacity(64);
    rsdp.extend(b"RSD PTR ");
    rsdp.push(0); // checksum of the first 20 bytes
    rsdp.extend(OEM_ID);
    rsdp.push(2); // revision: ACPI 2.0+
    rsdp.extend(0u32.to_le_bytes()); // no RSDT
    rsdp.extend(36u32.to_le_bytes());
    rsdp.extend(xsdt.to_le_bytes());
    rsdp.push(0); // extended checksum, of all 36
    rsdp.extend([0; 3]);
    rsdp[8] = checksum(&rsdp[..20]);
    rsdp[32] = checksum(&rsdp[..36]);
    rsdp.resize(64, 0);
    (rsdp, blob)
}

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    buf[at..at + bytes.len()].copy_from_slice(bytes);
}

/// The byte that makes `bytes` sum to 0.
fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b)))
}

/// A table: the standard header, then `body`, checksummed.
fn table(signature: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    let len = HEADER_LEN + body.len();
    let mut t = Vec::with_capacity(len);
    t.extend(signature);
    // A table is a few hundred bytes.
    t.extend(u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
    t.push(revision);
    t.push(0);
    t.extend(OEM_ID);
    t.extend(OEM_TABLE_ID);
    t.extend(1u32.to_le_bytes());
    t.extend(CREATOR_ID);
    t.extend(1u32.to_le_bytes());
    t.extend(body);
    t[9] = checksum(&t);
    t
}

/// Appends a table to the blob, 16-byte aligned; returns its guest address.
fn place(blob: &mut Vec<u8>, table: Vec<u8>) -> u64 {
    blob.resize(blob.len().next_multiple_of(16), 0);
    let addr = TABLES_ADDR + blob.len() as u64;
    blob.extend(table);
    addr
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sums_to_zero(bytes: &[u8]) -> bool {
        bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b)) == 0
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    /// The table at guest address `addr`, checked: its signature, its
    /// length within the blob, its checksum.
    fn table_at<'a>(blob: &'a [u8], addr: u64, sig: &[u8; 4]) -> &'a [u8] {
        let off = usize::try_from(addr - TABLES_ADDR).unwrap();
        assert_eq!(&blob[off..off + 4], sig);
        let len = u32_at(blob, off + 4) as usize;
        let t = &blob[off..off + len];
        assert!(sums_to_zero(t), "{} checksum", String::from_utf8_lossy(sig));
        t
    }

    #[test]
    fn the_tables_link_up_and_check_out() {
        let (rsdp, blob) = pvh_tables(3);
        assert_eq!(rsdp.len(), 64);
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert!(sums_to_zero(&rsdp[..20]) && sums_to_zero(&rsdp[..36]));
        assert_eq!(rsdp[15], 2);
        let xsdt = table_at(&blob, u64_at(&rsdp, 24), b"XSDT");
        assert_eq!(xsdt.len(), HEADER_LEN + 16);
        let fadt = table_at(&blob, u64_at(xsdt, 36), b"FACP");
        assert_eq!((fadt.len(), fadt[8]), (FADT_LEN, 5));
        assert_ne!(u32_at(fadt, 112) & FADT_HW_REDUCED_ACPI, 0);
        let dsdt = u64_at(fadt, 140);
        assert_eq!(u64::from(u32_at(fadt, 40)), dsdt);
        assert_eq!(table_at(&blob, dsdt, b"DSDT").len(), HEADER_LEN);
        let madt = table_at(&blob, u64_at(xsdt, 44), b"APIC");
        assert_eq!(u32_at(madt, 36), LAPIC_ADDR);
        let lapics: Vec<(u8, u8, u32)> = madt[44..]
            .chunks(8)
            .map(|e| {
                assert_eq!(&e[..2], &[0, 8]);
                (e[2], e[3], u32_at(e, 4))
            })
            .collect();
        assert_eq!(lapics, [(0, 0, 1), (1, 2, 1), (2, 4, 1)]);
        assert!(blob.len() < 4096);
    }

    #[test]
    fn the_modules_are_laid_out_as_libxl_does() {
        let modules = pvh_modules(1, false);
        let at: Vec<(u64, usize)> = modules.iter().map(|(a, d)| (*a, d.len())).collect();
        // RSDP after the one page of tables, the info page, the tables.
        assert_eq!(
            at,
            [(0xfc00_2000, 64), (0xfc00_0000, 4096), (0xfc00_1000, 4096)]
        );
        assert!(modules[1].1.iter().all(|b| *b == 0));
        let (rsdp, tables) = pvh_tables(1);
        assert_eq!(modules[0].1, rsdp);
        assert_eq!(&modules[2].1[..tables.len()], &tables[..]);
        assert_eq!(pvh_modules(1, true)[0].0, 0xf_ffc0);
    }
}
