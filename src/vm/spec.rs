//! A VM's spec: the DTO (unknown fields refused) and its validation.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::disk::{validate_disk, xvd_devid, Disk, DiskFile, VdiDisks};
use crate::drivers::{DomainType, Firmware};

/// A spec field is wrong: names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct VmSpecError {
    pub field: String,
    pub message: String,
}

pub(super) fn bad(field: impl Into<String>, message: impl Into<String>) -> VmSpecError {
    VmSpecError {
        field: field.into(),
        message: message.into(),
    }
}

/// What to do when the guest powers off, reboots or crashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnEvent {
    /// Destroy the domain; the VM ends Halted.
    Destroy,
    /// Destroy it and start it again.
    Restart,
    /// Leave the domain as it is, for inspection (the VM shows Crashed or Halted).
    Preserve,
}

impl std::fmt::Display for OnEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OnEvent::Destroy => "destroy",
            OnEvent::Restart => "restart",
            OnEvent::Preserve => "preserve",
        })
    }
}

/// A NIC as written in a spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NicFile {
    #[serde(default)]
    pub bridge: Option<String>,
    #[serde(default)]
    pub mac: Option<String>,
}

/// The spec as written (TOML file or `vm.create {spec}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSpecFile {
    pub name: String,
    #[serde(rename = "type")]
    pub domain_type: DomainType,
    pub memory_mib: u64,
    #[serde(default = "one")]
    pub vcpus: u32,
    #[serde(default)]
    pub kernel: Option<PathBuf>,
    #[serde(default)]
    pub ramdisk: Option<PathBuf>,
    #[serde(default)]
    pub cmdline: String,
    #[serde(default)]
    pub disks: Vec<DiskFile>,
    #[serde(default)]
    pub nics: Vec<NicFile>,
    #[serde(default)]
    pub on_poweroff: Option<OnEvent>,
    #[serde(default)]
    pub on_reboot: Option<OnEvent>,
    #[serde(default)]
    pub on_crash: Option<OnEvent>,
    /// An HVM guest's firmware: "bios" (SeaBIOS, the default) or "uefi"
    /// (OVMF).
    #[serde(default)]
    pub firmware: Option<Firmware>,
}

fn one() -> u32 {
    1
}

/// A validated NIC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nic {
    pub bridge: String,
    pub mac: String,
    /// Its index: the device id under device/vif/.
    pub devid: u32,
}

/// A validated spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub domain_type: DomainType,
    pub memory_mib: u64,
    pub vcpus: u32,
    pub kernel: Option<PathBuf>,
    pub ramdisk: Option<PathBuf>,
    pub cmdline: String,
    pub disks: Vec<Disk>,
    pub nics: Vec<Nic>,
    pub on_poweroff: OnEvent,
    pub on_reboot: OnEvent,
    pub on_crash: OnEvent,
    /// An HVM guest's firmware (`Bios` for the others; records made before
    /// it existed read as `Bios`).
    #[serde(default)]
    pub firmware: Firmware,
}

/// The bridge a NIC joins when its spec names none.
pub const DEFAULT_BRIDGE: &str = "xenbr0";

/// Why `mac` cannot be a NIC's address, if it cannot: it must be six
/// hex octets, unicast (the first octet's low bit clear: a multicast or
/// broadcast address is refused by netback and by every switch's learning),
/// and not all zeros.
fn mac_problem(mac: &str) -> Option<&'static str> {
    let octets: Vec<&str> = mac.split(':').collect();
    let well_formed = octets.len() == 6
        && octets
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    if !well_formed {
        return Some("is not a MAC address (six hex octets: 00:16:3e:12:34:56)");
    }
    let first = u8::from_str_radix(octets[0], 16).unwrap_or(0);
    if first & 1 != 0 {
        return Some("is a multicast address: a NIC needs a unicast one (first octet even)");
    }
    if octets.iter().all(|p| *p == "00") {
        return Some("is the all-zero address");
    }
    None
}

/// A MAC in Xen's OUI (00:16:3e), derived from the VM's uuid and the NIC's index.
pub fn xen_mac(uuid: &uuid::Uuid, index: u32) -> String {
    let b = uuid.as_bytes();
    let (x, y, z) = (b[13] ^ index.to_le_bytes()[0], b[14], b[15]);
    // Keep it unicast and locally unambiguous: the top bit of the 4th byte clear, as libxl does.
    format!("00:16:3e:{:02x}:{y:02x}:{z:02x}", x & 0x7f)
}

/// Checks a NIC that gets device id `devid` against those the VM already
/// has; `at` names it in errors.
fn validate_nic(
    n: NicFile,
    at: &str,
    uuid: &uuid::Uuid,
    devid: u32,
    existing: &[Nic],
) -> Result<Nic, VmSpecError> {
    let mac = match n.mac {
        Some(m) => match mac_problem(&m) {
            None => m.to_ascii_lowercase(),
            Some(why) => return Err(bad(format!("{at}.mac"), format!("{m:?} {why}"))),
        },
        None => xen_mac(uuid, devid),
    };
    if let Some(other) = existing.iter().find(|x| x.mac == mac) {
        return Err(bad(
            format!("{at}.mac"),
            format!(
                "{mac} is NIC {}'s already (a VM's MACs are unique)",
                other.devid
            ),
        ));
    }
    let bridge = n.bridge.unwrap_or_else(|| DEFAULT_BRIDGE.to_owned());
    if !valid_ifname(&bridge) {
        return Err(bad(
            format!("{at}.bridge"),
            format!("{bridge:?} is not an interface name (1 to 15 bytes, no '/', ':', white space or NUL, not . or ..)"),
        ));
    }
    Ok(Nic { bridge, mac, devid })
}

/// The longest path a spec may name (kernel, ramdisk, disk): it goes into
/// xenstore nodes, whose values the protocol bounds.
pub const MAX_PATH: usize = 1024;
/// The longest kernel command line (Linux's COMMAND_LINE_SIZE on x86).
pub const MAX_CMDLINE: usize = 2048;

/// An absolute path of at most [`MAX_PATH`] bytes, without NUL.
pub(super) fn check_path(field: &str, p: &std::path::Path) -> Result<(), VmSpecError> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = p.as_os_str().as_bytes();
    if bytes.contains(&0) {
        return Err(bad(field, "holds a NUL byte"));
    }
    if bytes.len() > MAX_PATH {
        return Err(bad(
            field,
            format!("{} bytes: a path has at most {MAX_PATH}", bytes.len()),
        ));
    }
    if !p.is_absolute() {
        return Err(bad(
            field,
            format!("{} is not an absolute path", p.display()),
        ));
    }
    Ok(())
}

/// What Linux takes as an interface name (dev_valid_name): 1 to 15 bytes,
/// not `.` or `..`, without '/', ':', white space or NUL.
fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace())
}

/// A VM's name: 1 to 64 of `[A-Za-z0-9-_.]`, not shaped like a uuid.
fn check_name(name: &str) -> Result<(), VmSpecError> {
    if name.is_empty() || name.len() > 64 {
        return Err(bad("name", "must be 1 to 64 characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(bad(
            "name",
            format!("{name:?} may hold only letters, digits, '-', '_' and '.'"),
        ));
    }
    if uuid::Uuid::parse_str(name).is_ok() {
        return Err(bad(
            "name",
            "a name may not look like a uuid (VMs are named by either)",
        ));
    }
    Ok(())
}

/// Firmware is an HVM guest's (`firmware`: the one written, if any);
/// QEMU's direct kernel boot goes through SeaBIOS (its linuxboot option
/// ROM), so a kernel needs the BIOS.
fn check_firmware(
    domain_type: DomainType,
    firmware: Option<Firmware>,
    kernel: bool,
) -> Result<(), VmSpecError> {
    match (domain_type, firmware) {
        (DomainType::Pv | DomainType::Pvh, Some(_)) => Err(bad(
            "firmware",
            "only an HVM guest has firmware: a pv or pvh guest boots its kernel directly",
        )),
        (DomainType::Hvm, Some(Firmware::Uefi)) if kernel => Err(bad(
            "firmware",
            "an HVM guest with a kernel is booted by QEMU through SeaBIOS: drop the kernel \
             (boot from a disk) or use firmware = \"bios\"",
        )),
        _ => Ok(()),
    }
}

/// The fields a spec file and a validated spec share.
fn check_common(
    memory_mib: u64,
    vcpus: u32,
    domain_type: DomainType,
    kernel: Option<&std::path::Path>,
    ramdisk: Option<&std::path::Path>,
    cmdline: &str,
) -> Result<(), VmSpecError> {
    if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&memory_mib) {
        return Err(bad(
            "memory_mib",
            format!(
                "{} is outside {MIN_MEMORY_MIB}..={MAX_MEMORY_MIB}",
                memory_mib
            ),
        ));
    }
    if !(1..=128).contains(&vcpus) {
        return Err(bad("vcpus", format!("{} is outside 1..=128", vcpus)));
    }
    if matches!(domain_type, DomainType::Pv | DomainType::Pvh) && kernel.is_none() {
        return Err(bad("kernel", "a pv or pvh VM needs a kernel"));
    }
    for (field, p) in [("kernel", kernel), ("ramdisk", ramdisk)] {
        if let Some(p) = p {
            check_path(field, p)?;
        }
    }
    if cmdline.len() > MAX_CMDLINE {
        return Err(bad(
            "cmdline",
            format!(
                "{} bytes: a command line has at most {MAX_CMDLINE}",
                cmdline.len()
            ),
        ));
    }
    if cmdline.contains('\0') {
        return Err(bad("cmdline", "holds a NUL byte"));
    }
    Ok(())
}

impl VmSpec {
    /// Checks a spec read back from a record (which a person may have
    /// edited): what [`VmSpecFile::validate`] would refuse is refused.
    pub fn check(&self) -> Result<(), VmSpecError> {
        check_name(&self.name)?;
        check_common(
            self.memory_mib,
            self.vcpus,
            self.domain_type,
            self.kernel.as_deref(),
            self.ramdisk.as_deref(),
            &self.cmdline,
        )?;
        // A validated spec holds the default for a guest that named none.
        let written = (self.firmware != Firmware::default()).then_some(self.firmware);
        check_firmware(self.domain_type, written, self.kernel.is_some())?;
        for (i, d) in self.disks.iter().enumerate() {
            let at = format!("disks[{i}]");
            check_path(&format!("{at}.path"), &d.path)?;
            if xvd_devid(&d.device) != Some(d.devid)
                || self.disks[..i].iter().any(|x| x.devid == d.devid)
            {
                return Err(bad(
                    format!("{at}.device"),
                    format!("{:?} does not fit", d.device),
                ));
            }
        }
        if self.nics.len() > MAX_NICS as usize {
            return Err(bad("nics", format!("a VM has at most {MAX_NICS} NICs")));
        }
        for (i, n) in self.nics.iter().enumerate() {
            let at = format!("nics[{i}]");
            if let Some(why) = mac_problem(&n.mac) {
                return Err(bad(format!("{at}.mac"), format!("{:?} {why}", n.mac)));
            }
            if !valid_ifname(&n.bridge) {
                return Err(bad(
                    format!("{at}.bridge"),
                    format!("{:?} is not an interface name", n.bridge),
                ));
            }
            let earlier = &self.nics[..i];
            if n.devid >= MAX_NICS || earlier.iter().any(|x| x.devid == n.devid || x.mac == n.mac) {
                return Err(bad(at, "a device id or MAC used twice"));
            }
        }
        Ok(())
    }
}

/// The most NICs a VM may have (device ids 0..).
pub const MAX_NICS: u32 = 64;
/// The least and the most memory a VM may have (and the least a balloon
/// target may ask of it), in MiB.
pub const MIN_MEMORY_MIB: u64 = 16;
pub const MAX_MEMORY_MIB: u64 = 1 << 22;

impl VmSpec {
    /// The spec with one more disk (`vbd.plug`), and that disk.
    /// A VDI disk takes its volume from `vdis`.
    pub fn with_disk(&self, d: DiskFile, vdis: &VdiDisks) -> Result<(VmSpec, Disk), VmSpecError> {
        let disk = validate_disk(d, "disk", &self.disks, vdis)?;
        let mut spec = self.clone();
        spec.disks.push(disk.clone());
        Ok((spec, disk))
    }

    /// The spec with one more NIC (`vif.plug`) on the first free device id.
    pub fn with_nic(&self, uuid: &uuid::Uuid, n: NicFile) -> Result<(VmSpec, Nic), VmSpecError> {
        let devid = (0..MAX_NICS)
            .find(|i| !self.nics.iter().any(|x| x.devid == *i))
            .ok_or_else(|| bad("nic", format!("a VM has at most {MAX_NICS} NICs")))?;
        let nic = validate_nic(n, "nic", uuid, devid, &self.nics)?;
        let mut spec = self.clone();
        spec.nics.push(nic.clone());
        Ok((spec, nic))
    }

    /// The spec without disk `device`, if it has it.
    pub fn without_disk(&self, device: &str) -> Option<VmSpec> {
        let i = self.disks.iter().position(|d| d.device == device)?;
        let mut spec = self.clone();
        spec.disks.remove(i);
        Some(spec)
    }

    /// The spec without NIC `devid`, if it has it.
    pub fn without_nic(&self, devid: u32) -> Option<VmSpec> {
        let i = self.nics.iter().position(|n| n.devid == devid)?;
        let mut spec = self.clone();
        spec.nics.remove(i);
        Some(spec)
    }
}

impl VmSpecFile {
    /// Parses a TOML spec (a config/vms/*.toml file).
    pub fn from_toml(text: &str) -> Result<Self, VmSpecError> {
        let de = toml::Deserializer::new(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let at = e.path().to_string();
            bad(
                if at == "." { "spec".to_owned() } else { at },
                e.into_inner().message().trim().replace('\n', " "),
            )
        })
    }

    /// Checks every field; `uuid` seeds generated MACs. A spec whose disks
    /// name VDIs takes [`validate_with`](Self::validate_with).
    pub fn validate(self, uuid: &uuid::Uuid) -> Result<VmSpec, VmSpecError> {
        self.validate_with(uuid, &VdiDisks::new())
    }

    /// Checks every field; its VDI disks take their volumes from `vdis`.
    pub fn validate_with(self, uuid: &uuid::Uuid, vdis: &VdiDisks) -> Result<VmSpec, VmSpecError> {
        let name = self.name.trim().to_owned();
        check_name(&name)?;
        check_common(
            self.memory_mib,
            self.vcpus,
            self.domain_type,
            self.kernel.as_deref(),
            self.ramdisk.as_deref(),
            &self.cmdline,
        )?;
        check_firmware(self.domain_type, self.firmware, self.kernel.is_some())?;
        let mut disks: Vec<Disk> = Vec::with_capacity(self.disks.len());
        for (i, d) in self.disks.into_iter().enumerate() {
            let disk = validate_disk(d, &format!("disks[{i}]"), &disks, vdis)?;
            disks.push(disk);
        }
        if self.nics.len() > MAX_NICS as usize {
            return Err(bad(
                "nics",
                format!("{} NICs: a VM has at most {MAX_NICS}", self.nics.len()),
            ));
        }
        let mut nics = Vec::with_capacity(self.nics.len());
        for (i, n) in self.nics.into_iter().enumerate() {
            let at = format!("nics[{i}]");
            let index = u32::try_from(i).map_err(|_| bad(&at, "too many NICs"))?;
            let nic = validate_nic(n, &at, uuid, index, &nics)?;
            nics.push(nic);
        }
        Ok(VmSpec {
            name,
            domain_type: self.domain_type,
            memory_mib: self.memory_mib,
            vcpus: self.vcpus,
            kernel: self.kernel,
            ramdisk: self.ramdisk,
            cmdline: self.cmdline,
            disks,
            nics,
            on_poweroff: self.on_poweroff.unwrap_or(OnEvent::Destroy),
            on_reboot: self.on_reboot.unwrap_or(OnEvent::Restart),
            on_crash: self.on_crash.unwrap_or(OnEvent::Destroy),
            firmware: self.firmware.unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xvd_numbers_match_blkfront() {
        assert_eq!(xvd_devid("xvda"), Some(51712));
        assert_eq!(xvd_devid("xvdb"), Some(51728));
        assert_eq!(xvd_devid("xvdp"), Some(51952));
        assert_eq!(xvd_devid("xvdq"), Some((1 << 28) | (16 << 8)));
        assert_eq!(xvd_devid("xvdaa"), Some((1 << 28) | (26 << 8)));
        for bad in ["xvd", "sda", "xvdA", "xvd1", "xvdabcd"] {
            assert_eq!(xvd_devid(bad), None, "{bad}");
        }
    }

    #[test]
    fn specs_validate_with_field_names() {
        let uuid = uuid::Uuid::nil();
        let ok = VmSpecFile::from_toml(
            "name = \"web\"\ntype = \"pv\"\nmemory_mib = 256\nkernel = \"/boot/vmlinuz\"\n\
             [[disks]]\npath = \"/var/lib/xen/web.img\"\ndevice = \"xvda\"\n[[nics]]\n",
        )
        .unwrap()
        .validate(&uuid)
        .unwrap();
        assert_eq!(ok.disks[0].devid, 51712);
        assert_eq!(ok.nics[0].bridge, DEFAULT_BRIDGE);
        assert!(ok.nics[0].mac.starts_with("00:16:3e:"));
        assert_eq!(
            (ok.on_poweroff, ok.on_reboot, ok.on_crash),
            (OnEvent::Destroy, OnEvent::Restart, OnEvent::Destroy)
        );
        let err = |text: &str| {
            VmSpecFile::from_toml(text)
                .and_then(|s| s.validate(&uuid))
                .unwrap_err()
                .to_string()
        };
        assert!(err("name=\"a\"\ntype=\"pv\"\nmemory_mib=64\nbogus=1\n")
            .starts_with("bogus: unknown field"));
        assert!(
            err("name=\"a\"\ntype=\"xen\"\nmemory_mib=64\n").starts_with("type: unknown variant")
        );
        assert_eq!(
            err("name=\"a\"\ntype=\"pv\"\nmemory_mib=64\n"),
            "kernel: a pv or pvh VM needs a kernel"
        );
        assert!(err("name=\"a b\"\ntype=\"hvm\"\nmemory_mib=64\n").starts_with("name:"));
        assert!(err("name=\"a\"\ntype=\"hvm\"\nmemory_mib=1\n").starts_with("memory_mib:"));
        assert_eq!(
            err("name=\"a\"\ntype=\"hvm\"\nmemory_mib=64\n[[disks]]\npath=\"/x\"\ndevice=\"xvda\"\n[[disks]]\npath=\"/y\"\ndevice=\"xvda\"\n"),
            "disks[1].device: xvda is used twice"
        );
        assert!(
            err("name=\"a\"\ntype=\"hvm\"\nmemory_mib=64\n[[nics]]\nmac=\"zz\"\n")
                .starts_with("nics[0].mac:")
        );
        assert!(err("name=\"a\"\ntype=\"hvm\"\nmemory_mib=64\n[[disks]]\npath=\"/x\"\ndevice=\"xvda\"\nmode=\"rx\"\n").starts_with("disks[0].mode:"));
    }
}

#[cfg(test)]
mod examples {
    use super::*;

    #[test]
    fn macs_are_unicast_and_unique_within_a_vm() {
        let uuid = uuid::Uuid::new_v4();
        let spec = |nics: &str| {
            VmSpecFile::from_toml(&format!(
                "name=\"m\"\ntype=\"pv\"\nmemory_mib=64\nkernel=\"/k\"\n{nics}"
            ))
            .unwrap()
            .validate(&uuid)
        };
        let ok = spec("[[nics]]\nmac=\"00:16:3E:00:00:01\"\n[[nics]]\n").unwrap();
        assert_eq!(ok.nics[0].mac, "00:16:3e:00:00:01");
        for (nics, field, words) in [
            (
                "[[nics]]\nmac=\"01:00:5e:00:00:01\"",
                "nics[0].mac",
                "multicast",
            ),
            (
                "[[nics]]\nmac=\"ff:ff:ff:ff:ff:ff\"",
                "nics[0].mac",
                "multicast",
            ),
            (
                "[[nics]]\nmac=\"00:00:00:00:00:00\"",
                "nics[0].mac",
                "all-zero",
            ),
            (
                "[[nics]]\nmac=\"00:16:3e:00:01\"",
                "nics[0].mac",
                "six hex octets",
            ),
            (
                "[[nics]]\nmac=\"00:16:3e:00:00:01\"\n[[nics]]\nmac=\"00:16:3E:00:00:01\"",
                "nics[1].mac",
                "NIC 0's already",
            ),
        ] {
            let e = spec(nics).unwrap_err();
            assert_eq!(e.field, field, "{nics}");
            assert!(e.message.contains(words), "{nics}: {e}");
        }
        // A hot-plugged NIC is held to the same rules.
        let taken = NicFile {
            bridge: None,
            mac: Some("00:16:3e:00:00:01".into()),
        };
        assert!(ok
            .with_nic(&uuid, taken)
            .unwrap_err()
            .message
            .contains("already"));
        let e = spec(&"[[nics]]\n".repeat(65)).unwrap_err();
        assert_eq!(e.field, "nics");
    }

    #[test]
    fn paths_command_lines_and_bridges_are_held_to_what_the_host_takes() {
        let uuid = uuid::Uuid::new_v4();
        let spec = |extra: &str| {
            VmSpecFile::from_toml(&format!("name=\"m\"\ntype=\"pv\"\nmemory_mib=64\n{extra}"))
                .and_then(|s| s.validate(&uuid))
        };
        let long = format!("/{}", "a".repeat(MAX_PATH));
        for (extra, field) in [
            ("kernel=\"/k\\u0000x\"".to_owned(), "kernel"),
            (format!("kernel=\"{long}\""), "kernel"),
            (
                format!("kernel=\"/k\"\ncmdline=\"{}\"", "x".repeat(MAX_CMDLINE + 1)),
                "cmdline",
            ),
            ("kernel=\"/k\"\ncmdline=\"a\\u0000b\"".to_owned(), "cmdline"),
            (
                "kernel=\"/k\"\n[[disks]]\npath=\"/d\\u0000\"\ndevice=\"xvda\"".to_owned(),
                "disks[0].path",
            ),
            (
                "kernel=\"/k\"\n[[nics]]\nbridge=\"br:0\"".to_owned(),
                "nics[0].bridge",
            ),
            (
                "kernel=\"/k\"\n[[nics]]\nbridge=\"..\"".to_owned(),
                "nics[0].bridge",
            ),
            (
                "kernel=\"/k\"\n[[nics]]\nbridge=\"a-bridge-name-16\"".to_owned(),
                "nics[0].bridge",
            ),
        ] {
            assert_eq!(spec(&extra).unwrap_err().field, field, "{extra}");
        }
        assert!(spec("kernel=\"/k\"\n[[nics]]\nbridge=\"xenbr-0.15_abcd\"").is_ok());
    }

    #[test]
    fn firmware_is_an_hvm_guests_and_uefi_boots_from_a_disk() {
        let uuid = uuid::Uuid::nil();
        let spec = |text: &str| {
            VmSpecFile::from_toml(&format!("name=\"a\"\nmemory_mib=64\n{text}"))
                .and_then(|s| s.validate(&uuid))
        };
        assert_eq!(spec("type=\"hvm\"").unwrap().firmware, Firmware::Bios);
        assert_eq!(
            spec("type=\"hvm\"\nfirmware=\"uefi\"").unwrap().firmware,
            Firmware::Uefi
        );
        for bad in [
            "type=\"pv\"\nkernel=\"/k\"\nfirmware=\"uefi\"",
            "type=\"pvh\"\nkernel=\"/k\"\nfirmware=\"bios\"",
            "type=\"hvm\"\nkernel=\"/k\"\nfirmware=\"uefi\"",
        ] {
            assert_eq!(spec(bad).unwrap_err().field, "firmware", "{bad}");
        }
        assert!(spec("type=\"hvm\"\nfirmware=\"coreboot\"")
            .unwrap_err()
            .message
            .contains("unknown variant"));
        // A record from before the field reads as SeaBIOS, and its check
        // refuses what validation would.
        let mut old = serde_json::to_value(spec("type=\"hvm\"").unwrap()).unwrap();
        old.as_object_mut().unwrap().remove("firmware");
        let mut read: VmSpec = serde_json::from_value(old).unwrap();
        assert_eq!(read.firmware, Firmware::Bios);
        read.kernel = Some("/k".into());
        read.firmware = Firmware::Uefi;
        assert_eq!(read.check().unwrap_err().field, "firmware");
    }

    #[test]
    fn the_shipped_examples_validate() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/vms");
        let mut seen = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let spec = VmSpecFile::from_toml(&text)
                .and_then(|s| s.validate(&uuid::Uuid::new_v4()))
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            seen.push((spec.domain_type, spec.disks.len(), spec.nics.len()));
        }
        assert!(seen.contains(&(DomainType::Pv, 1, 1)));
        assert!(seen.contains(&(DomainType::Pvh, 1, 1)));
        assert!(seen.contains(&(DomainType::Hvm, 1, 1)));
        assert!(seen.contains(&(DomainType::Pv, 2, 2)));
    }
}
