//! A VM's disks: as written (a path, or a VDI of an SR) and validated (the
//! xenbus device number known; a VDI's uuid, file or block device and
//! format resolved by the storage actors before validation).

use std::collections::HashMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::spec::{bad, check_path, VmSpecError};
use crate::drivers::storage::VdiFormat;
use crate::drivers::HypervisorKind;

/// Disk access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskMode {
    Rw,
    Ro,
}

/// A disk as written in a spec: `{path, device, mode}` or `{vdi, device,
/// mode}` (a VDI by uuid, by name, or as SR/NAME).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vdi: Option<String>,
    pub device: String,
    #[serde(default = "default_mode")]
    pub mode: DiskMode,
}

fn default_mode() -> DiskMode {
    DiskMode::Rw
}

impl DiskFile {
    /// A disk on a file or block device.
    pub fn path(path: impl Into<PathBuf>, device: &str, mode: DiskMode) -> Self {
        DiskFile {
            path: Some(path.into()),
            vdi: None,
            device: device.to_owned(),
            mode,
        }
    }

    /// A disk on a VDI.
    pub fn vdi(vdi: &str, device: &str, mode: DiskMode) -> Self {
        DiskFile {
            path: None,
            vdi: Some(vdi.to_owned()),
            device: device.to_owned(),
            mode,
        }
    }
}

/// Where a VDI a disk names lives, as its SR said when it was attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VdiDisk {
    pub uuid: uuid::Uuid,
    /// Its file, or its LV's block device.
    pub path: PathBuf,
    pub format: VdiFormat,
}

/// The VDIs a spec's disks name, resolved: by the name each disk gives.
pub type VdiDisks = HashMap<String, VdiDisk>;

/// The longest VDI reference a disk may give (a uuid, a name, SR/NAME).
const MAX_VDI_REF: usize = 256;

/// A validated disk: its xenbus device number is known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    /// The file or block device; for a VDI, its volume in its SR.
    pub path: PathBuf,
    /// "xvda", ...
    pub device: String,
    pub mode: DiskMode,
    /// The virtual-device number (51712 for xvda).
    pub devid: u32,
    /// The VDI the disk is, if it is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vdi: Option<uuid::Uuid>,
    /// How its blocks are stored (a path disk: raw, as it is).
    #[serde(default = "raw", skip_serializing_if = "is_raw")]
    pub format: VdiFormat,
}

/// What serves a disk to the guest's blkfront.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VbdBackend {
    /// The kernel's blkback, on a block device (a file through a loop
    /// device): raw images, LVs, and every disk on the simulated host
    /// (whose blkback reads any format).
    Blkback,
    /// QEMU's qdisk (xen-block) in a QEMU attached to the domain: qcow2
    /// images on Xen, which blkback cannot read.
    Qdisk,
}

impl Disk {
    /// Its unit on an HVM guest's IDE controller (xvda..xvdd: 0..3), if it
    /// has one: from its virtual-device number (202 << 8 | index << 4).
    pub fn ide_unit(&self) -> Option<u32> {
        let index = (self.devid >> 4) & 0xf;
        (self.devid >> 8 == 202 && index < 4).then_some(index)
    }

    /// The backend this disk needs on `host`.
    pub fn backend(&self, host: HypervisorKind) -> VbdBackend {
        match (host, self.format) {
            (HypervisorKind::Xen, VdiFormat::Qcow2) => VbdBackend::Qdisk,
            _ => VbdBackend::Blkback,
        }
    }
}

fn raw() -> VdiFormat {
    VdiFormat::Raw
}

fn is_raw(f: &VdiFormat) -> bool {
    *f == VdiFormat::Raw
}

/// The VDI references of some disks (those the storage must resolve).
pub fn vdi_refs<'a>(disks: impl IntoIterator<Item = &'a DiskFile>) -> Vec<String> {
    let mut refs: Vec<String> = disks.into_iter().filter_map(|d| d.vdi.clone()).collect();
    refs.sort();
    refs.dedup();
    refs
}

/// Checks a disk against those the VM already has; `at` names it in
/// errors; a VDI disk takes its volume from `vdis`.
pub(super) fn validate_disk(
    d: DiskFile,
    at: &str,
    existing: &[Disk],
    vdis: &VdiDisks,
) -> Result<Disk, VmSpecError> {
    let field = |f: &str| format!("{at}.{f}");
    let devid = xvd_devid(&d.device).ok_or_else(|| {
        bad(
            field("device"),
            format!("{:?} is not xvda..xvdzzz", d.device),
        )
    })?;
    if existing.iter().any(|x| x.devid == devid) {
        return Err(bad(field("device"), format!("{} is used twice", d.device)));
    }
    let (path, vdi, format) = match (d.path, d.vdi) {
        (Some(path), None) => {
            check_path(&field("path"), &path)?;
            (path, None, VdiFormat::Raw)
        }
        (None, Some(key)) => {
            if key.is_empty() || key.len() > MAX_VDI_REF || key.contains('\0') {
                return Err(bad(
                    field("vdi"),
                    format!("a VDI is named by its uuid, its name or SR/NAME (1 to {MAX_VDI_REF} bytes)"),
                ));
            }
            let v = vdis
                .get(&key)
                .ok_or_else(|| bad(field("vdi"), format!("no VDI {key:?}")))?;
            check_path(&field("vdi"), &v.path)?;
            (v.path.clone(), Some(v.uuid), v.format)
        }
        (Some(_), Some(_)) => {
            return Err(bad(
                field("vdi"),
                "a disk is either a path or a VDI, not both",
            ))
        }
        (None, None) => return Err(bad(field("path"), "a disk needs a path or a vdi")),
    };
    Ok(Disk {
        path,
        device: d.device,
        mode: d.mode,
        devid,
        vdi,
        format,
    })
}

/// The virtual-device number of "xvdX": 202 is the xvd major; the first 16
/// disks use the compact form (202 << 8 | index << 4), the others the
/// extended one (1 << 28 | index << 8), as Linux's blkfront and libxl do.
pub fn xvd_devid(device: &str) -> Option<u32> {
    let letters = device.strip_prefix("xvd")?;
    if letters.is_empty() || !letters.bytes().all(|b| b.is_ascii_lowercase()) || letters.len() > 3 {
        return None;
    }
    // Bijective base 26: a=0 .. z=25, aa=26 .. zz=701, aaa=702 ...
    let index = letters
        .bytes()
        .fold(0u32, |acc, b| acc * 26 + u32::from(b - b'a') + 1)
        - 1;
    Some(if index < 16 {
        (202 << 8) | (index << 4)
    } else {
        (1 << 28) | (index << 8)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_four_disks_have_ide_units() {
        let unit = |device: &str| {
            Disk {
                path: "/d".into(),
                device: device.into(),
                mode: DiskMode::Rw,
                devid: xvd_devid(device).unwrap(),
                vdi: None,
                format: VdiFormat::Raw,
            }
            .ide_unit()
        };
        assert_eq!(unit("xvda"), Some(0));
        assert_eq!(unit("xvdd"), Some(3));
        assert_eq!(unit("xvde"), None);
        assert_eq!(unit("xvdaa"), None);
    }

    #[test]
    fn a_disk_is_a_path_or_a_resolved_vdi() {
        let u = uuid::Uuid::from_u128(7);
        let mut vdis = VdiDisks::new();
        vdis.insert(
            "sr1/root".into(),
            VdiDisk {
                uuid: u,
                path: "/srv/sr1/x.qcow2".into(),
                format: VdiFormat::Qcow2,
            },
        );
        let d = validate_disk(
            DiskFile::vdi("sr1/root", "xvda", DiskMode::Rw),
            "disks[0]",
            &[],
            &vdis,
        )
        .unwrap();
        assert_eq!(
            (d.vdi, d.format, d.devid),
            (Some(u), VdiFormat::Qcow2, 51712)
        );
        assert_eq!(d.path, PathBuf::from("/srv/sr1/x.qcow2"));
        let err = |f: DiskFile| {
            validate_disk(f, "disks[0]", &[], &vdis)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err(DiskFile::vdi("nope", "xvda", DiskMode::Rw)),
            "disks[0].vdi: no VDI \"nope\""
        );
        assert!(err(DiskFile::vdi("", "xvda", DiskMode::Rw))
            .starts_with("disks[0].vdi: a VDI is named"));
        let both = DiskFile {
            path: Some("/x".into()),
            ..DiskFile::vdi("sr1/root", "xvda", DiskMode::Rw)
        };
        assert!(err(both).contains("not both"));
        let neither = DiskFile {
            vdi: None,
            ..DiskFile::vdi("sr1/root", "xvda", DiskMode::Rw)
        };
        assert_eq!(err(neither), "disks[0].path: a disk needs a path or a vdi");
        // Records written before VDIs existed read back as raw path disks.
        let old: Disk =
            serde_json::from_str(r#"{"path":"/x","device":"xvda","mode":"rw","devid":51712}"#)
                .unwrap();
        assert_eq!((old.vdi, old.format), (None, VdiFormat::Raw));
        assert_eq!(
            vdi_refs(&[
                DiskFile::vdi("b", "xvda", DiskMode::Rw),
                DiskFile::vdi("a", "xvdb", DiskMode::Ro),
                DiskFile::vdi("b", "xvdc", DiskMode::Ro)
            ]),
            ["a", "b"]
        );
    }
}
