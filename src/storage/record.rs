//! Storage records in the state directory: `<state-dir>/storage/srs/<sr>.toml`
//! for each SR and `<state-dir>/storage/vdis/<sr>/<vdi>.toml` for each of
//! its VDIs, each written atomically ([`crate::drivers::statefile`]).
//!
//! An operation that changes what an SR holds writes its VDI's record
//! before it starts (with [`Pending`] saying what is under way) and after
//! it ends (without it): a record still pending at start is an operation a
//! crash cut short, which the SR actor finishes or undoes.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::spec::{check_name, SrConfig, SrType, VdiFormat};
use crate::drivers::statefile::{StateDir, StateFileError};

/// What xenith keeps of an SR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SrRecord {
    pub uuid: uuid::Uuid,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: SrType,
    pub config: SrConfig,
}

/// A VM's use of a VDI (its spec names it).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Attachment {
    pub vm: uuid::Uuid,
    pub device: String,
    pub writable: bool,
}

/// An operation under way on a VDI (its record was written before it
/// began).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Pending {
    /// The volume is being made: undone after a crash.
    Create,
    /// The volume is being removed: finished after a crash.
    Destroy,
    /// This VDI is a snapshot of `of` being taken: finished or undone
    /// after a crash, by what the SR holds.
    Snapshot { of: uuid::Uuid },
    /// This VDI is a clone of `of` being made: undone after a crash.
    Clone { of: uuid::Uuid },
    /// This VDI is a copy being written (`vdi.copy`, `vdi.import`): undone
    /// after a crash (a partial copy is never left).
    Copy { from: String },
}

/// What xenith keeps of a VDI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VdiRecord {
    pub uuid: uuid::Uuid,
    pub sr: uuid::Uuid,
    pub name: String,
    pub format: VdiFormat,
    /// Its virtual size.
    pub size_mib: u64,
    /// Snapshots are read-only.
    #[serde(default)]
    pub read_only: bool,
    /// The VDI this is a snapshot of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_of: Option<uuid::Uuid>,
    /// The VDI whose blocks it is backed by (a qcow2 backing file, a thin
    /// snapshot's origin), as the SR last said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<uuid::Uuid>,
    /// Where it is in its SR: a file name, or a logical volume's name.
    pub location: String,
    /// When it was made (Unix seconds).
    #[serde(default)]
    pub created: u64,
    /// Found by `sr.scan` in the SR (xenith did not make it).
    #[serde(default)]
    pub adopted: bool,
    /// The VMs whose specs name it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attached: Vec<Attachment>,
    /// The running VMs whose backends use it now (kept across restarts:
    /// their domains outlive the daemon).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub active: Vec<uuid::Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Pending>,
    /// What its volume looked like when xenith last changed it (bytes on
    /// disk and modification time, for file SRs): `sr.scan` reports a
    /// volume changed behind xenith's back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stamp: Option<Stamp>,
}

/// A file volume's size and modification time (ns since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    pub bytes: u64,
    pub mtime_ns: u64,
}

impl VdiRecord {
    /// Whether a VM writes it.
    pub fn writer(&self) -> Option<&Attachment> {
        self.attached.iter().find(|a| a.writable)
    }
}

/// A storage record could not be written, read or removed.
#[derive(Debug, thiserror::Error)]
pub enum StorageRecordError {
    #[error(transparent)]
    Io(#[from] StateFileError),
    #[error("cannot encode the record of {0}")]
    Encode(uuid::Uuid, #[source] toml::ser::Error),
}

/// The storage records of one state directory.
#[derive(Debug, Clone)]
pub struct StorageRecords {
    srs: StateDir,
    vdis: PathBuf,
}

impl StorageRecords {
    /// The records under `<state_dir>/storage` (created, 0700).
    pub fn open(state_dir: &Path) -> Result<Self, StorageRecordError> {
        let root = state_dir.join("storage");
        let srs = StateDir::open(&root.join("srs"))?;
        let vdis = root.join("vdis");
        StateDir::open(&vdis)?;
        Ok(Self { srs, vdis })
    }

    fn vdi_dir(&self, sr: &uuid::Uuid) -> Result<StateDir, StorageRecordError> {
        Ok(StateDir::open(&self.vdis.join(sr.to_string()))?)
    }

    /// Writes an SR's record (blocking).
    pub fn save_sr(&self, r: &SrRecord) -> Result<(), StorageRecordError> {
        let text = toml::to_string(r).map_err(|e| StorageRecordError::Encode(r.uuid, e))?;
        Ok(self
            .srs
            .write(&format!("{}.toml", r.uuid), text.as_bytes())?)
    }

    /// Removes an SR's record and its VDIs' (blocking).
    pub fn remove_sr(&self, sr: &uuid::Uuid) -> Result<(), StorageRecordError> {
        let dir = self.vdi_dir(sr)?;
        for f in dir.read_all("toml")? {
            dir.remove(&format!("{}.toml", f.stem))?;
        }
        let path = dir.path().to_owned();
        if let Err(source) = std::fs::remove_dir(&path) {
            if source.kind() != std::io::ErrorKind::NotFound {
                return Err(StateFileError {
                    what: "remove",
                    path,
                    source,
                }
                .into());
            }
        }
        Ok(self.srs.remove(&format!("{sr}.toml"))?)
    }

    /// Every SR record that reads and validates (others are logged and
    /// skipped), by name (blocking).
    pub fn load_srs(&self) -> Result<Vec<SrRecord>, StorageRecordError> {
        let mut out = Vec::new();
        for f in self.srs.read_all("toml")? {
            match toml::from_str::<SrRecord>(&f.text) {
                Ok(r) if f.stem != r.uuid.to_string() => {
                    tracing::warn!(record = %f.path.display(), "SR record named for another uuid: skipped")
                }
                Ok(r) => match check_name("name", &r.name) {
                    Ok(_) => out.push(r),
                    Err(error) => {
                        tracing::warn!(record = %f.path.display(), %error, "SR record that does not validate: skipped")
                    }
                },
                Err(e) => {
                    let error = e.message().to_owned();
                    tracing::warn!(record = %f.path.display(), %error, "corrupt SR record: skipped")
                }
            }
        }
        out.sort_by(|a, b| (&a.name, a.uuid).cmp(&(&b.name, b.uuid)));
        Ok(out)
    }

    /// Writes a VDI's record (blocking).
    pub fn save_vdi(&self, r: &VdiRecord) -> Result<(), StorageRecordError> {
        let text = toml::to_string(r).map_err(|e| StorageRecordError::Encode(r.uuid, e))?;
        Ok(self
            .vdi_dir(&r.sr)?
            .write(&format!("{}.toml", r.uuid), text.as_bytes())?)
    }

    /// Removes a VDI's record (blocking).
    pub fn remove_vdi(&self, sr: &uuid::Uuid, vdi: &uuid::Uuid) -> Result<(), StorageRecordError> {
        Ok(self.vdi_dir(sr)?.remove(&format!("{vdi}.toml"))?)
    }

    /// Every VDI record of `sr` that reads and validates (others are logged
    /// and skipped) (blocking).
    pub fn load_vdis(&self, sr: &uuid::Uuid) -> Result<Vec<VdiRecord>, StorageRecordError> {
        let mut out = Vec::new();
        for f in self.vdi_dir(sr)?.read_all("toml")? {
            match toml::from_str::<VdiRecord>(&f.text) {
                Ok(r) if f.stem != r.uuid.to_string() || r.sr != *sr => {
                    tracing::warn!(record = %f.path.display(), "VDI record of another uuid or SR: skipped")
                }
                Ok(r) if check_name("name", &r.name).is_err() || !plain_location(&r.location) => {
                    tracing::warn!(record = %f.path.display(), "VDI record that does not validate: skipped")
                }
                Ok(r) => out.push(r),
                Err(e) => {
                    let error = e.message().to_owned();
                    tracing::warn!(record = %f.path.display(), %error, "corrupt VDI record: skipped")
                }
            }
        }
        Ok(out)
    }
}

/// A location is one file or volume name: never a path.
pub fn plain_location(location: &str) -> bool {
    !location.is_empty()
        && !location.starts_with('.')
        && !location.contains('/')
        && !location.contains('\0')
        && location.len() <= 255
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vdi(sr: uuid::Uuid, name: &str) -> VdiRecord {
        let uuid = uuid::Uuid::new_v4();
        VdiRecord {
            uuid,
            sr,
            name: name.into(),
            format: VdiFormat::Qcow2,
            size_mib: 10,
            read_only: false,
            snapshot_of: None,
            parent: None,
            location: format!("{uuid}.qcow2"),
            created: 1,
            adopted: false,
            attached: vec![Attachment {
                vm: uuid::Uuid::new_v4(),
                device: "xvda".into(),
                writable: true,
            }],
            active: vec![],
            pending: Some(Pending::Snapshot {
                of: uuid::Uuid::new_v4(),
            }),
            stamp: Some(Stamp {
                bytes: 1,
                mtime_ns: 2,
            }),
        }
    }

    #[test]
    fn records_round_trip_and_bad_ones_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let store = StorageRecords::open(dir.path()).unwrap();
        let sr = SrRecord {
            uuid: uuid::Uuid::new_v4(),
            name: "local".into(),
            kind: SrType::File,
            config: SrConfig::File {
                path: "/srv/x".into(),
            },
        };
        store.save_sr(&sr).unwrap();
        let lvm = SrRecord {
            uuid: uuid::Uuid::new_v4(),
            name: "thin".into(),
            kind: SrType::Lvm,
            config: SrConfig::Lvm {
                vg: "vg0".into(),
                thin_pool: "p".into(),
                device: None,
            },
        };
        store.save_sr(&lvm).unwrap();
        assert_eq!(store.load_srs().unwrap(), vec![sr.clone(), lvm.clone()]);
        let a = vdi(sr.uuid, "a");
        store.save_vdi(&a).unwrap();
        let mut evil = vdi(sr.uuid, "b");
        evil.location = "../../etc/passwd".into();
        store.save_vdi(&evil).unwrap();
        let other = vdi(lvm.uuid, "c");
        let dir_of_sr = dir.path().join(format!("storage/vdis/{}", sr.uuid));
        std::fs::write(
            dir_of_sr.join(format!("{}.toml", other.uuid)),
            toml::to_string(&other).unwrap(),
        )
        .unwrap();
        std::fs::write(dir_of_sr.join("junk.toml"), "not [toml").unwrap();
        assert_eq!(store.load_vdis(&sr.uuid).unwrap(), vec![a.clone()]);
        store.remove_vdi(&sr.uuid, &a.uuid).unwrap();
        store.remove_sr(&sr.uuid).unwrap();
        assert!(!dir_of_sr.exists());
        assert_eq!(store.load_srs().unwrap(), vec![lvm]);
    }
}
