//! VM records in the state directory: one TOML file per VM
//! (`<state-dir>/vms/<uuid>.toml`), written atomically (write a temporary
//! file, fsync it, rename it over the old one, fsync the directory), so a
//! crash leaves either the old record or the new one. A record that does
//! not parse is reported and skipped, never fatal.
//!
//! Every call blocks (fsync): the daemon uses the async forms
//! ([`RecordStore::persist`], [`RecordStore::forget`], [`RecordStore::load`]),
//! which run on the blocking pool.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::spec::VmSpec;
use crate::drivers::statefile::{StateDir, StateFileError};

/// What xenith keeps of a VM across restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmRecord {
    pub uuid: uuid::Uuid,
    pub spec: VmSpec,
}

/// A record could not be written, read or removed.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Io(#[from] StateFileError),
    #[error("cannot encode the record of {0}")]
    Encode(uuid::Uuid, #[source] toml::ser::Error),
    #[error(transparent)]
    Pool(#[from] crate::drivers::blocking::PoolError),
}

/// The records of one state directory.
#[derive(Debug, Clone)]
pub struct RecordStore {
    dir: StateDir,
}

impl RecordStore {
    /// The records under `<state_dir>/vms` (created, 0700).
    pub fn open(state_dir: &Path) -> Result<Self, RecordError> {
        Ok(Self {
            dir: StateDir::open(&state_dir.join("vms"))?,
        })
    }

    /// Writes a record atomically, on the blocking pool.
    pub async fn persist(&self, record: VmRecord) -> Result<(), RecordError> {
        let store = self.clone();
        crate::drivers::blocking::run(move || store.save(&record)).await?
    }

    /// Removes a record, on the blocking pool.
    pub async fn forget(&self, uuid: uuid::Uuid) -> Result<(), RecordError> {
        let store = self.clone();
        crate::drivers::blocking::run(move || store.remove(&uuid)).await?
    }

    /// Every readable record, read on the blocking pool.
    pub async fn load(&self) -> Result<Vec<VmRecord>, RecordError> {
        let store = self.clone();
        crate::drivers::blocking::run(move || store.load_all()).await?
    }

    /// Writes a record atomically (blocking).
    pub fn save(&self, record: &VmRecord) -> Result<(), RecordError> {
        let text = toml::to_string(record).map_err(|e| RecordError::Encode(record.uuid, e))?;
        Ok(self
            .dir
            .write(&format!("{}.toml", record.uuid), text.as_bytes())?)
    }

    /// Removes a record (blocking).
    pub fn remove(&self, uuid: &uuid::Uuid) -> Result<(), RecordError> {
        Ok(self.dir.remove(&format!("{uuid}.toml"))?)
    }

    /// Every readable record whose spec validates (a record a person edited
    /// is held to what `vm.create` accepts); each other one is logged and
    /// skipped. Sorted by name, then oldest record file first (which keeps a
    /// name two records share), then uuid. Temporary files a write left
    /// behind (a crash, a full disk) more than a minute ago are removed.
    /// Blocking.
    pub fn load_all(&self) -> Result<Vec<VmRecord>, RecordError> {
        let mut out = Vec::new();
        for file in self.dir.read_all("toml")? {
            let path = file.path.display();
            match toml::from_str::<VmRecord>(&file.text) {
                Ok(r) if file.stem != r.uuid.to_string() => {
                    tracing::warn!(record = %path, uuid = %r.uuid, "VM record named for another uuid: skipped")
                }
                Ok(r) => match r.spec.check() {
                    Ok(()) => out.push((file.written, r)),
                    Err(error) => {
                        tracing::warn!(record = %path, %error, "VM record that does not validate: skipped")
                    }
                },
                Err(e) => {
                    let error = e.message().to_owned();
                    tracing::warn!(record = %path, %error, "corrupt VM record: skipped")
                }
            }
        }
        out.sort_by(|(ta, a), (tb, b)| {
            (a.spec.name.as_str(), *ta, a.uuid).cmp(&(b.spec.name.as_str(), *tb, b.uuid))
        });
        Ok(out.into_iter().map(|(_, r)| r).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::spec::VmSpecFile;

    #[test]
    fn save_load_remove_and_skip_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::open(dir.path()).unwrap();
        let uuid = uuid::Uuid::new_v4();
        let spec = VmSpecFile::from_toml(
            "name=\"a\"\ntype=\"pvh\"\nmemory_mib=64\nkernel=\"/k\"\n[[nics]]\n",
        )
        .unwrap()
        .validate(&uuid)
        .unwrap();
        let record = VmRecord { uuid, spec };
        store.save(&record).unwrap();
        store.save(&record).unwrap();
        std::fs::write(dir.path().join("vms/garbage.toml"), "this is [not toml").unwrap();
        std::fs::write(dir.path().join("vms/.half-written.tmp"), "x").unwrap();
        assert_eq!(store.load_all().unwrap(), vec![record.clone()]);
        store.remove(&uuid).unwrap();
        store.remove(&uuid).unwrap();
        assert!(store.load_all().unwrap().is_empty());
    }

    #[test]
    fn hand_edited_records_are_validated_and_old_writes_left_behind_go() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::open(dir.path()).unwrap();
        let uuid = uuid::Uuid::new_v4();
        let spec =
            VmSpecFile::from_toml("name=\"a\"\ntype=\"pvh\"\nmemory_mib=64\nkernel=\"/k\"\n")
                .unwrap()
                .validate(&uuid)
                .unwrap();
        let mut evil = VmRecord { uuid, spec };
        evil.spec.name = "../../evil/name".into();
        let text = toml::to_string(&evil).unwrap();
        std::fs::write(dir.path().join(format!("vms/{uuid}.toml")), text).unwrap();
        assert!(
            store.load_all().unwrap().is_empty(),
            "a name vm.create refuses"
        );
        // A write a crash cut short: removed once it is a minute old.
        let tmp = dir.path().join("vms/.x.tmp");
        std::fs::write(&tmp, "half").unwrap();
        store.load_all().unwrap();
        assert!(tmp.exists(), "a write that may be under way stays");
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(120);
        std::fs::File::options()
            .write(true)
            .open(&tmp)
            .unwrap()
            .set_modified(old)
            .unwrap();
        store.load_all().unwrap();
        assert!(!tmp.exists());
    }
}
