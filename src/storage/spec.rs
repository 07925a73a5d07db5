//! What `sr.create` and `vdi.create` take, and the checks every name, path
//! and size passes before anything is made.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A storage argument that does not validate: the field and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct StorageSpecError {
    pub field: String,
    pub message: String,
}

fn bad(field: &str, message: impl Into<String>) -> StorageSpecError {
    StorageSpecError {
        field: field.to_owned(),
        message: message.into(),
    }
}

pub use crate::drivers::storage::{SrType, VdiFormat};

/// `sr.create`'s `config`, as sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SrConfigFile {
    /// file: the directory (made if missing).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// lvm: a block device to make a new volume group on.
    #[serde(default)]
    pub device: Option<PathBuf>,
    /// lvm: an existing volume group (or the name of the new one).
    #[serde(default)]
    pub vg: Option<String>,
}

/// A validated SR configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SrConfig {
    File {
        path: PathBuf,
    },
    Lvm {
        vg: String,
        /// The thin pool VDIs are made in.
        thin_pool: String,
        /// The device xenith made the volume group on (sr.destroy removes
        /// the group then); none for a group that existed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device: Option<PathBuf>,
    },
}

/// The thin pool xenith makes in a volume group.
pub const THIN_POOL: &str = "xenith-pool";

/// A validated `sr.create`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrCreate {
    pub name: String,
    pub kind: SrType,
    pub config: SrConfig,
}

impl SrCreate {
    /// Checks `sr.create`'s arguments (what needs the host, such as whether
    /// a path lies inside another SR, is the catalog's to check).
    pub fn validate(
        name: &str,
        kind: SrType,
        config: SrConfigFile,
    ) -> Result<SrCreate, StorageSpecError> {
        let name = check_name("name", name)?;
        let config = match kind {
            SrType::File => {
                if config.device.is_some() || config.vg.is_some() {
                    return Err(bad(
                        "config",
                        "a file SR takes {path} only (device and vg are for lvm)",
                    ));
                }
                let path = config
                    .path
                    .ok_or_else(|| bad("config.path", "a file SR needs the directory to use"))?;
                SrConfig::File {
                    path: check_abs("config.path", &path)?,
                }
            }
            SrType::Lvm => {
                if config.path.is_some() {
                    return Err(bad(
                        "config.path",
                        "an lvm SR takes {device} or {vg} (path is for file SRs)",
                    ));
                }
                let device = match config.device {
                    Some(d) => {
                        let d = check_abs("config.device", &d)?;
                        if !d.starts_with("/dev/") {
                            return Err(bad(
                                "config.device",
                                format!("{} is not a block device under /dev", d.display()),
                            ));
                        }
                        Some(d)
                    }
                    None => None,
                };
                let vg = match (config.vg, &device) {
                    (Some(vg), _) => check_lvm_name("config.vg", &vg)?,
                    // A new group is named for the SR.
                    (None, Some(_)) => format!("xenith-{}", lvm_safe(&name)),
                    (None, None) => {
                        return Err(bad(
                            "config",
                            "an lvm SR needs {device} (a block device for a new volume group) or {vg} (an existing one)",
                        ))
                    }
                };
                SrConfig::Lvm {
                    vg,
                    thin_pool: THIN_POOL.to_owned(),
                    device,
                }
            }
        };
        Ok(SrCreate { name, kind, config })
    }
}

/// The longest SR or VDI name, in bytes.
pub const MAX_NAME: usize = 128;

/// A name xenith makes (a snapshot's, a clone's, an adopted volume's) cut
/// to what [`check_name`] takes: at most [`MAX_NAME`] bytes, on a
/// character's boundary, without white space at its ends.
pub fn fit_name(name: &str) -> String {
    let name = name.trim();
    let mut end = name.len().min(MAX_NAME);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].trim_end().to_owned()
}

/// A name for an SR or a VDI: trimmed, 1 to 128 bytes, no '/', no "..",
/// no control characters.
pub fn check_name(field: &str, name: &str) -> Result<String, StorageSpecError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(bad(field, "must not be empty"));
    }
    if name.len() > MAX_NAME {
        return Err(bad(
            field,
            format!("{} bytes long (at most {MAX_NAME})", name.len()),
        ));
    }
    if name.contains('/') {
        return Err(bad(field, format!("{name:?} contains '/'")));
    }
    if name.contains("..") {
        return Err(bad(field, format!("{name:?} contains \"..\"")));
    }
    if name.chars().any(char::is_control) {
        return Err(bad(field, format!("{name:?} contains a control character")));
    }
    Ok(name.to_owned())
}

/// An LVM volume group name: what lvm2 accepts (letters, digits and
/// `+_.-`, not starting with '-', at most 127 bytes, not "." or "..").
fn check_lvm_name(field: &str, name: &str) -> Result<String, StorageSpecError> {
    let ok = !name.is_empty()
        && name.len() <= 127
        && !name.starts_with('-')
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+_.-".contains(c));
    if ok {
        Ok(name.to_owned())
    } else {
        Err(bad(
            field,
            format!("{name:?} is not a volume group name lvm2 accepts (letters, digits, + _ . -)"),
        ))
    }
}

/// `name` with what LVM refuses in a name replaced by '_'.
fn lvm_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "+_.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect()
}

/// An absolute path without `..`, `.` or empty components, as given.
fn check_abs(field: &str, path: &Path) -> Result<PathBuf, StorageSpecError> {
    let text = path.to_string_lossy();
    if text.contains('\0') {
        return Err(bad(field, "contains a NUL byte"));
    }
    if text.len() > 1024 {
        return Err(bad(field, "longer than 1024 bytes"));
    }
    if !path.is_absolute() {
        return Err(bad(
            field,
            format!("{} is not an absolute path", path.display()),
        ));
    }
    // Path::components drops "." itself: read the text.
    if text.split('/').any(|part| part == "." || part == "..") {
        return Err(bad(
            field,
            format!("{} contains '.' or '..'", path.display()),
        ));
    }
    Ok(path.components().collect())
}

/// Whether one of two directories lies inside the other (or they are one).
pub fn paths_overlap(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// The largest VDI: 64 TiB.
pub const MAX_SIZE_MIB: u64 = 64 << 20;

/// A VDI size in MiB: 1 to 64 TiB.
pub fn check_size(field: &str, size_mib: u64) -> Result<u64, StorageSpecError> {
    if size_mib == 0 {
        return Err(bad(field, "must be at least 1 (MiB)"));
    }
    if size_mib > MAX_SIZE_MIB {
        return Err(bad(
            field,
            format!("{size_mib} MiB is more than the largest VDI ({MAX_SIZE_MIB} MiB)"),
        ));
    }
    Ok(size_mib)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_xenith_makes_fit_in_bytes() {
        let long = "é".repeat(100) + " snapshot";
        let fit = fit_name(&long);
        assert!(fit.len() <= MAX_NAME && fit.chars().all(|c| c == 'é'));
        assert_eq!(check_name("name", &fit).unwrap(), fit);
        assert_eq!(fit_name(" a b "), "a b");
    }

    #[test]
    fn names_refuse_slashes_dots_and_controls() {
        assert_eq!(check_name("name", "  disk 1 ").unwrap(), "disk 1");
        for bad in [
            "",
            "  ",
            "a/b",
            "..",
            "a..b",
            "x\u{0}",
            "x\ny",
            &"n".repeat(129),
        ] {
            assert!(check_name("name", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn file_and_lvm_configs_validate() {
        let file = |path: &str| SrConfigFile {
            path: Some(path.into()),
            ..Default::default()
        };
        let sr = SrCreate::validate("local", SrType::File, file("/srv/sr1/")).unwrap();
        assert_eq!(
            sr.config,
            SrConfig::File {
                path: "/srv/sr1".into()
            }
        );
        for p in ["srv", "/srv/../etc", "/srv/./x"] {
            assert!(
                SrCreate::validate("a", SrType::File, file(p)).is_err(),
                "{p}"
            );
        }
        assert!(SrCreate::validate("a", SrType::File, SrConfigFile::default()).is_err());
        let lvm = SrCreate::validate(
            "fast disks",
            SrType::Lvm,
            SrConfigFile {
                device: Some("/dev/sdb".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            lvm.config,
            SrConfig::Lvm {
                vg: "xenith-fast_disks".into(),
                thin_pool: THIN_POOL.into(),
                device: Some("/dev/sdb".into())
            }
        );
        let vg = |vg: &str| SrConfigFile {
            vg: Some(vg.into()),
            ..Default::default()
        };
        assert!(SrCreate::validate("a", SrType::Lvm, vg("vg0")).is_ok());
        for v in ["-x", "a b", "..", "a/b"] {
            assert!(SrCreate::validate("a", SrType::Lvm, vg(v)).is_err(), "{v}");
        }
        assert!(SrCreate::validate("a", SrType::Lvm, SrConfigFile::default()).is_err());
        assert!(SrCreate::validate("a", SrType::Lvm, file("/x")).is_err());
        let not_dev = SrConfigFile {
            device: Some("/tmp/x".into()),
            ..Default::default()
        };
        assert!(SrCreate::validate("a", SrType::Lvm, not_dev).is_err());
    }

    #[test]
    fn overlaps_and_sizes() {
        assert!(paths_overlap(Path::new("/srv/a"), Path::new("/srv/a/b")));
        assert!(paths_overlap(Path::new("/srv/a/b"), Path::new("/srv/a")));
        assert!(!paths_overlap(Path::new("/srv/a"), Path::new("/srv/ab")));
        assert!(check_size("size_mib", 0).is_err());
        assert!(check_size("size_mib", MAX_SIZE_MIB + 1).is_err());
        assert_eq!(check_size("size_mib", 10).unwrap(), 10);
    }
}
