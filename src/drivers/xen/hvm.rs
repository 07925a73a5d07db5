//! HVM guests' build (docs/hvm.md): hvmloader as the kernel, with SeaBIOS
//! or OVMF as its firmware module, as libxl's libxl__build_hvm and
//! libxl__domain_firmware load them.

use super::{call, ffi, XenHypervisor};
use crate::drivers::hypervisor::{Built, DomId, Firmware, HypervisorError};

/// What an HVM guest boots first, and the BIOS it loads: the paths
/// Debian's libxl has compiled in (xen-utils-4.17, seabios).
pub const HVMLOADER: &str = "/usr/lib/xen-4.17/boot/hvmloader";
pub const SEABIOS: &str = "/usr/share/seabios/bios-256k.bin";
/// OVMF, UEFI firmware for HVM guests: the path Debian's libxl has compiled
/// in (ovmf). Debian 12's build (2022.11, OvmfPkgX64) has no Xen platform
/// support: hvmloader loads and invokes it, but it does not boot a guest
/// on Xen (docs/hvm.md); an OvmfXen build in its place does.
pub const OVMF: &str = "/usr/share/ovmf/OVMF.fd";

impl XenHypervisor {
    /// An HVM guest: hvmloader with SeaBIOS or OVMF (its own kernel, if
    /// any, is booted by QEMU).
    pub(super) fn build_hvm(
        &self,
        domid: DomId,
        firmware: Firmware,
        mem_mib: u64,
        vcpus: u32,
        store_port: u32,
        console_port: u32,
    ) -> Result<Built, HypervisorError> {
        let firmware = firmware_image(firmware)?;
        if !std::path::Path::new(HVMLOADER).exists() {
            return Err(HypervisorError::Unavailable(
                "xen",
                format!("{HVMLOADER} is missing (install xen-utils-4.17)"),
            ));
        }
        let mem_mib = u32::try_from(mem_mib)
            .map_err(|_| HypervisorError::InvalidConfig(format!("{mem_mib} MiB of memory")))?;
        let t0 = std::time::Instant::now();
        let (store_gfn, console_gfn) = self
            .xc
            .hvm_build(&ffi::HvmImage {
                domid: u32::from(domid.0),
                mem_mib,
                vcpus,
                hvmloader: HVMLOADER,
                firmware: &firmware,
                store_port,
                console_port,
            })
            .map_err(|e| call("build the HVM guest (xc_dom_*)", e))?;
        let elapsed_ms = u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX);
        tracing::debug!(%domid, elapsed_ms, "libxenguest built the HVM domain");
        Ok(Built {
            store_port,
            store_gfn,
            console_port,
            console_gfn,
        })
    }
}

/// The firmware's bytes, as hvmloader takes them: SeaBIOS whole; OVMF
/// whole, in whole MiB (hvmloader maps it just below 4 GiB in 1 MiB
/// steps: a CODE-only image of another size cannot start).
fn firmware_image(firmware: Firmware) -> Result<Vec<u8>, HypervisorError> {
    let (path, package) = match firmware {
        Firmware::Bios => (SEABIOS, "seabios"),
        Firmware::Uefi => (OVMF, "ovmf"),
    };
    let bytes = std::fs::read(path).map_err(|e| {
        HypervisorError::Unavailable("xen", format!("{path}: {e} (install {package})"))
    })?;
    firmware_fits(firmware, path, bytes.len())?;
    Ok(bytes)
}

fn firmware_fits(firmware: Firmware, path: &str, len: usize) -> Result<(), HypervisorError> {
    const MIB: usize = 1 << 20;
    let whole_mib = len > 0 && len % MIB == 0;
    if firmware == Firmware::Uefi && !whole_mib {
        return Err(HypervisorError::Unavailable(
            "xen",
            format!(
                "{path} is {len} bytes: hvmloader needs a whole OVMF image in whole MiB \
                 (OVMF.fd, not OVMF_CODE.fd)"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ovmf_must_come_in_whole_mib_and_seabios_as_it_is() {
        assert!(firmware_fits(Firmware::Uefi, OVMF, 2 << 20).is_ok());
        for bad in [0, 1_966_080, (2 << 20) + 4096] {
            let e = firmware_fits(Firmware::Uefi, "/x/OVMF_CODE.fd", bad).unwrap_err();
            assert!(e.to_string().contains("whole MiB"), "{e}");
        }
        assert!(firmware_fits(Firmware::Bios, SEABIOS, 262_144).is_ok());
    }
}
