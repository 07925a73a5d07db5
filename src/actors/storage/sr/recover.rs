//! An SR's records read back at its actor's start: operations a crash cut
//! short are finished or undone (by what the SR holds), and each record is
//! checked against its volume (its parent as the SR says, its volume gone).
//! Blocking: runs on the blocking pool.

use std::collections::{BTreeSet, HashMap};

use crate::drivers::storage::{SrDriver, SrType, VdiFormat, Volume};
use crate::storage::{Pending, SrRecord, StorageRecordError, StorageRecords, VdiRecord};

/// What an SR actor starts with.
#[derive(Debug)]
pub(super) struct Loaded {
    pub vdis: Vec<VdiRecord>,
    pub missing: BTreeSet<uuid::Uuid>,
    pub fault: Option<String>,
}

/// Reads the SR's records and settles them against the SR.
pub(super) fn load(
    driver: &dyn SrDriver,
    store: &StorageRecords,
    sr: &SrRecord,
) -> Result<Loaded, StorageRecordError> {
    let vdis = store.load_vdis(&sr.uuid)?;
    let volumes = match driver.volumes() {
        Ok(v) => v,
        Err(e) => {
            return Ok(Loaded {
                vdis,
                missing: BTreeSet::new(),
                fault: Some(e.to_string()),
            })
        }
    };
    let pending = vdis.iter().any(|v| v.pending.is_some());
    let vdis = if pending {
        settle(driver, store, vdis, &volumes)
    } else {
        vdis
    };
    let volumes = if pending {
        driver.volumes().unwrap_or(volumes)
    } else {
        volumes
    };
    let (vdis, missing) = match_volumes(store, vdis, &volumes);
    Ok(Loaded {
        vdis,
        missing,
        fault: None,
    })
}

fn by_location(volumes: &[Volume]) -> HashMap<&str, &Volume> {
    volumes.iter().map(|v| (v.location.as_str(), v)).collect()
}

/// Whether a backing file name names `location` (a name in the SR's
/// directory, or a path ending in it).
pub(super) fn backs(backing: &str, location: &str) -> bool {
    backing == location || backing.ends_with(&format!("/{location}"))
}

/// Finishes or undoes each pending operation.
fn settle(
    driver: &dyn SrDriver,
    store: &StorageRecords,
    vdis: Vec<VdiRecord>,
    volumes: &[Volume],
) -> Vec<VdiRecord> {
    let vols = by_location(volumes);
    let locations: HashMap<uuid::Uuid, String> =
        vdis.iter().map(|v| (v.uuid, v.location.clone())).collect();
    let mut out = Vec::with_capacity(vdis.len());
    for mut v in vdis {
        let Some(pending) = v.pending.clone() else {
            out.push(v);
            continue;
        };
        let done = match &pending {
            Pending::Create | Pending::Clone { .. } | Pending::Copy { .. } | Pending::Destroy => {
                // What was being made is removed; what was being removed goes.
                undo(driver, store, &v, &pending)
            }
            Pending::Snapshot { of } => {
                let live = locations.get(of).cloned();
                let snap_there = vols.contains_key(v.location.as_str());
                match live {
                    Some(live) if snap_there => {
                        finish_snapshot(driver, &v, &live, vols.get(live.as_str()).copied())
                            .unwrap_or_else(|| undo(driver, store, &v, &pending))
                    }
                    _ => undo(driver, store, &v, &pending),
                }
            }
        };
        match done {
            Settled::Gone => {
                tracing::info!(vdi = %v.uuid, ?pending, "undid an operation a crash cut short")
            }
            Settled::Kept => {
                v.pending = None;
                match store.save_vdi(&v) {
                    Ok(()) => {
                        tracing::info!(vdi = %v.uuid, ?pending, "finished an operation a crash cut short")
                    }
                    Err(e) => {
                        tracing::warn!(vdi = %v.uuid, error = %crate::error::chain(&e), "cannot record a finished operation")
                    }
                }
                out.push(v);
            }
            Settled::Stuck(error) => {
                tracing::warn!(vdi = %v.uuid, ?pending, %error, "cannot settle an operation a crash cut short: kept pending (the next start tries again)");
                out.push(v);
            }
        }
    }
    out
}

enum Settled {
    /// The VDI is gone (its record too).
    Gone,
    /// The VDI stays, its operation done.
    Kept,
    Stuck(String),
}

/// Removes the VDI's volume (a snapshot that never got one, a partial
/// copy: the VDI it came from was not touched) and its record.
fn undo(
    driver: &dyn SrDriver,
    store: &StorageRecords,
    v: &VdiRecord,
    _pending: &Pending,
) -> Settled {
    if let Err(e) = driver.destroy(&v.location) {
        return Settled::Stuck(e.to_string());
    }
    match store.remove_vdi(&v.sr, &v.uuid) {
        Ok(()) => Settled::Gone,
        Err(e) => Settled::Stuck(crate::error::chain(&e)),
    }
}

/// The snapshot's volume is there. A qcow2 snapshot got it by a rename
/// (the live data moved), so it is whole: the live overlay is made again
/// if it is missing or half made. A raw snapshot is a copy that may be
/// partial: None, to be undone. A thin LV snapshot is made by one
/// lvcreate: whole.
fn finish_snapshot(
    driver: &dyn SrDriver,
    snap: &VdiRecord,
    live: &str,
    live_vol: Option<&Volume>,
) -> Option<Settled> {
    match (driver.kind(), snap.format) {
        (SrType::File, VdiFormat::Qcow2) => {
            let whole = live_vol
                .and_then(|v| v.backing.as_deref())
                .is_some_and(|b| backs(b, &snap.location));
            if whole {
                return Some(Settled::Kept);
            }
            if live_vol.is_some() {
                if let Err(e) = driver.destroy(live) {
                    return Some(Settled::Stuck(e.to_string()));
                }
            }
            Some(
                match driver.finish_snapshot(live, &snap.location, snap.format) {
                    Ok(()) => Settled::Kept,
                    Err(e) => Settled::Stuck(e.to_string()),
                },
            )
        }
        (SrType::Lvm, _) => Some(Settled::Kept),
        (SrType::File, VdiFormat::Raw) => None,
    }
}

/// Each record's parent as the SR says, and the records whose volume is
/// gone.
fn match_volumes(
    store: &StorageRecords,
    mut vdis: Vec<VdiRecord>,
    volumes: &[Volume],
) -> (Vec<VdiRecord>, BTreeSet<uuid::Uuid>) {
    let vols = by_location(volumes);
    let by_loc: HashMap<String, uuid::Uuid> =
        vdis.iter().map(|v| (v.location.clone(), v.uuid)).collect();
    let mut missing = BTreeSet::new();
    for v in &mut vdis {
        let Some(vol) = vols.get(v.location.as_str()) else {
            if v.pending.is_none() {
                missing.insert(v.uuid);
            }
            continue;
        };
        let parent = vol.backing.as_deref().and_then(|b| {
            by_loc
                .iter()
                .find(|(loc, _)| backs(b, loc))
                .map(|(_, u)| *u)
        });
        if parent != v.parent {
            v.parent = parent;
            if let Err(e) = store.save_vdi(v) {
                tracing::warn!(vdi = %v.uuid, error = %crate::error::chain(&e), "cannot record a VDI's parent");
            }
        }
    }
    (vdis, missing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::storage::{FileSr, StorageTools};
    use crate::storage::{SrConfig, VdiFormat};

    fn setup() -> (tempfile::TempDir, FileSr, StorageRecords, SrRecord) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sr");
        let driver = FileSr::new(path.clone(), StorageTools::default());
        driver.prepare().unwrap();
        let store = StorageRecords::open(&dir.path().join("state")).unwrap();
        let sr = SrRecord {
            uuid: uuid::Uuid::new_v4(),
            name: "sr".into(),
            kind: SrType::File,
            config: SrConfig::File { path },
        };
        store.save_sr(&sr).unwrap();
        (dir, driver, store, sr)
    }

    fn record(sr: &SrRecord, pending: Option<Pending>) -> VdiRecord {
        let uuid = uuid::Uuid::new_v4();
        VdiRecord {
            uuid,
            sr: sr.uuid,
            name: "v".into(),
            format: VdiFormat::Qcow2,
            size_mib: 8,
            read_only: false,
            snapshot_of: None,
            parent: None,
            location: format!("{uuid}.qcow2"),
            created: 0,
            adopted: false,
            attached: vec![],
            active: vec![],
            pending,
            stamp: None,
        }
    }

    #[test]
    fn cut_short_operations_are_finished_or_undone() {
        let (_d, driver, store, sr) = setup();
        // A creation cut short after its volume was made: undone.
        let made = record(&sr, Some(Pending::Create));
        driver
            .create(&made.location, VdiFormat::Qcow2, 8 << 20)
            .unwrap();
        store.save_vdi(&made).unwrap();
        // A snapshot cut short between the rename and the overlay: finished.
        let live = record(&sr, None);
        driver
            .create(&live.location, VdiFormat::Qcow2, 8 << 20)
            .unwrap();
        store.save_vdi(&live).unwrap();
        let mut snap = record(&sr, Some(Pending::Snapshot { of: live.uuid }));
        snap.read_only = true;
        std::fs::rename(driver.path(&live.location), driver.path(&snap.location)).unwrap();
        store.save_vdi(&snap).unwrap();
        // A snapshot cut short before the rename: undone.
        let early = record(&sr, Some(Pending::Snapshot { of: live.uuid }));
        store.save_vdi(&early).unwrap();
        // A destruction cut short: finished.
        let doomed = record(&sr, Some(Pending::Destroy));
        driver
            .create(&doomed.location, VdiFormat::Qcow2, 8 << 20)
            .unwrap();
        store.save_vdi(&doomed).unwrap();
        // A record whose volume is gone: kept, flagged.
        let gone = record(&sr, None);
        store.save_vdi(&gone).unwrap();

        let loaded = load(&driver, &store, &sr).unwrap();
        assert!(loaded.fault.is_none());
        let by: HashMap<_, _> = loaded.vdis.iter().map(|v| (v.uuid, v.clone())).collect();
        assert!(!by.contains_key(&made.uuid) && !driver.path(&made.location).exists());
        assert!(!by.contains_key(&early.uuid));
        assert!(!by.contains_key(&doomed.uuid) && !driver.path(&doomed.location).exists());
        assert_eq!(by[&snap.uuid].pending, None);
        assert_eq!(
            by[&live.uuid].parent,
            Some(snap.uuid),
            "the live overlay is backed by the snapshot"
        );
        assert_eq!(loaded.missing, BTreeSet::from([gone.uuid]));
        // What was settled is on disk: a second start finds nothing to do.
        let again = load(&driver, &store, &sr).unwrap();
        assert_eq!(again.vdis.len(), 3);
        assert!(again.vdis.iter().all(|v| v.pending.is_none()));
    }

    #[test]
    fn an_unreachable_sr_keeps_its_records() {
        let (d, _driver, store, sr) = setup();
        let v = record(&sr, Some(Pending::Create));
        store.save_vdi(&v).unwrap();
        let lost = FileSr::new(d.path().join("nowhere"), StorageTools::default());
        let loaded = load(&lost, &store, &sr).unwrap();
        assert!(loaded.fault.is_some());
        assert_eq!(loaded.vdis, vec![v]);
    }
}
