//! The operations that change what an SR holds: create, destroy, resize,
//! snapshot, clone, copy in. Each writes its VDI's record with what is
//! under way before it touches the SR and without it after (a crash in
//! between is settled at the next start, src/actors/storage/sr/recover.rs),
//! and undoes what it began when it fails.

use std::sync::Arc;

use actix::{Context, Handler, ResponseActFuture};

use super::handlers::ready;
use super::messages::{CloneVdi, CopyIn, CreateVdi, DestroyVdi, ResizeVdi, Snapshot};
use super::state::SrActor;
use crate::actors::events::EventKind;
use crate::actors::storage::view::mib;
use crate::actors::storage::SrError;
use crate::drivers::storage::{SrDriver, SrType, VdiFormat};
use crate::storage::{check_name, check_size, location_for, Pending, StorageRecords, VdiRecord};

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Fails with SR_FULL unless the SR has `needed_mib` free.
fn room(driver: &dyn SrDriver, sr: uuid::Uuid, needed_mib: u64) -> Result<(), SrError> {
    let free_mib = driver.usage()?.free_bytes >> 20;
    if needed_mib > free_mib {
        return Err(SrError::Full {
            sr,
            needed_mib,
            free_mib,
        });
    }
    Ok(())
}

/// The volume's stamp now (a file's size and mtime), for `sr.scan`.
fn stamp(driver: &dyn SrDriver, r: &mut VdiRecord) {
    r.stamp = driver.volume(&r.location).ok().flatten().and_then(|v| {
        v.stamp
            .map(|(bytes, mtime_ns)| crate::storage::Stamp { bytes, mtime_ns })
    });
}

/// Saves `r` with what is under way, runs `op`; on success saves it done,
/// on failure removes the volume (if `made`) and the record.
fn pending_then(
    store: &StorageRecords,
    driver: &dyn SrDriver,
    mut r: VdiRecord,
    op: impl FnOnce() -> Result<(), SrError>,
) -> Result<VdiRecord, SrError> {
    store.save_vdi(&r)?;
    if let Err(e) = op() {
        let _ = driver.destroy(&r.location);
        if let Err(re) = store.remove_vdi(&r.sr, &r.uuid) {
            tracing::warn!(vdi = %r.uuid, error = %crate::error::chain(&re), "cannot remove the record of a VDI whose making failed (the next start removes it)");
        }
        return Err(e);
    }
    r.pending = None;
    stamp(driver, &mut r);
    store.save_vdi(&r)?;
    Ok(r)
}

impl SrActor {
    /// A new record for a VDI of this SR, pending `op`.
    fn new_record(
        &self,
        uuid: uuid::Uuid,
        name: String,
        format: VdiFormat,
        size_mib: u64,
        op: Pending,
    ) -> VdiRecord {
        VdiRecord {
            uuid,
            sr: self.record.uuid,
            name,
            format,
            size_mib,
            read_only: false,
            snapshot_of: None,
            parent: None,
            location: location_for(&uuid, self.record.kind, format),
            created: now(),
            adopted: false,
            attached: Vec::new(),
            active: Vec::new(),
            pending: Some(op),
            stamp: None,
        }
    }

    fn format(
        &self,
        asked: Option<VdiFormat>,
        fallback: Option<VdiFormat>,
    ) -> Result<VdiFormat, SrError> {
        let formats = self.driver.formats();
        match asked {
            Some(f) if formats.contains(&f) => Ok(f),
            Some(f) => Err(SrError::param(
                "format",
                format!(
                    "a {} SR holds {} VDIs, not {}",
                    self.record.kind.as_str(),
                    formats
                        .iter()
                        .map(|f| f.as_str())
                        .collect::<Vec<_>>()
                        .join(" or "),
                    f.as_str()
                ),
            )),
            None => Ok(fallback
                .filter(|f| formats.contains(f))
                .unwrap_or(formats[0])),
        }
    }

    /// Records a new VDI (its operation done, or failed and undone).
    fn settle_new(
        &mut self,
        uuid: uuid::Uuid,
        r: Result<VdiRecord, SrError>,
    ) -> Result<uuid::Uuid, SrError> {
        match r {
            Ok(rec) => {
                self.vdis.insert(uuid, rec);
                self.tell(uuid, EventKind::Add);
                Ok(uuid)
            }
            Err(e) => {
                self.vdis.remove(&uuid);
                self.locks.remove(&uuid);
                Err(e)
            }
        }
    }

    /// Refuses to change a VDI a running VM writes.
    fn not_active(&self, r: &VdiRecord, why: &str) -> Result<(), SrError> {
        match r.active.first() {
            None => Ok(()),
            Some(vm) => Err(SrError::InUse {
                vdi: r.uuid,
                vm: *vm,
                device: r
                    .attached
                    .iter()
                    .find(|a| a.vm == *vm)
                    .map_or_else(String::new, |a| a.device.clone()),
                why: why.to_owned(),
            }),
        }
    }
}

impl Handler<CreateVdi> for SrActor {
    type Result = ResponseActFuture<Self, Result<uuid::Uuid, SrError>>;

    fn handle(&mut self, msg: CreateVdi, _ctx: &mut Context<Self>) -> Self::Result {
        let uuid = uuid::Uuid::new_v4();
        self.locked(
            vec![uuid],
            move |act| {
                act.fault()?;
                let name = check_name("name", &msg.name)?;
                let size_mib = check_size("size_mib", msg.size_mib)?;
                let format = act.format(msg.format, None)?;
                let r = act.new_record(uuid, name, format, size_mib, Pending::Create);
                act.vdis.insert(uuid, r.clone());
                let (store, driver, sr) =
                    (act.records.clone(), act.driver.clone(), act.record.uuid);
                Ok(move || {
                    room(&*driver, sr, size_mib)?;
                    let loc = r.location.clone();
                    pending_then(&store, &*driver, r, || {
                        Ok(driver.create(&loc, format, size_mib << 20)?)
                    })
                })
            },
            move |act, r| act.settle_new(uuid, r),
        )
    }
}

impl Handler<DestroyVdi> for SrActor {
    type Result = ResponseActFuture<Self, Result<(), SrError>>;

    fn handle(&mut self, DestroyVdi(uuid): DestroyVdi, _ctx: &mut Context<Self>) -> Self::Result {
        self.locked(
            vec![uuid],
            move |act| {
                let r = act.settled(&uuid)?.clone();
                if let Some(a) = r.attached.first() {
                    return Err(SrError::InUse {
                        vdi: uuid,
                        vm: a.vm,
                        device: a.device.clone(),
                        why:
                            "the VM's spec names it: unplug it (vbd.unplug) or remove the VM first"
                                .into(),
                    });
                }
                act.not_active(&r, "a running VM uses it")?;
                let children = act.children(&uuid);
                if !children.is_empty() {
                    return Err(SrError::HasChildren {
                        vdi: uuid,
                        children,
                    });
                }
                if act.leased.get(&uuid).is_some_and(|n| *n > 0) {
                    return Err(SrError::Busy {
                        vdi: uuid,
                        op: "being read",
                    });
                }
                let (store, driver) = (act.records.clone(), act.driver.clone());
                Ok(move || {
                    let mut doomed = r.clone();
                    doomed.pending = Some(Pending::Destroy);
                    store.save_vdi(&doomed)?;
                    if let Err(e) = driver.destroy(&r.location) {
                        // Not destroyed: the record says so again.
                        let _ = store.save_vdi(&r);
                        return Err(e.into());
                    }
                    store.remove_vdi(&r.sr, &r.uuid)?;
                    Ok(())
                })
            },
            move |act, r| {
                r?;
                act.tell(uuid, EventKind::Del);
                act.vdis.remove(&uuid);
                act.missing.remove(&uuid);
                act.locks.remove(&uuid);
                Ok(())
            },
        )
    }
}

impl Handler<ResizeVdi> for SrActor {
    type Result = ResponseActFuture<Self, Result<(), SrError>>;

    fn handle(&mut self, msg: ResizeVdi, _ctx: &mut Context<Self>) -> Self::Result {
        let uuid = msg.vdi;
        self.locked(
            vec![uuid],
            move |act| {
                act.fault()?;
                let r = act.settled(&uuid)?.clone();
                if r.read_only {
                    return Err(SrError::ReadOnly { vdi: uuid, what: "a snapshot keeps its size (resize a clone of it)" });
                }
                let size_mib = check_size("size_mib", msg.size_mib)?;
                if size_mib <= r.size_mib {
                    return Err(SrError::param(
                        "size_mib",
                        format!("{size_mib} MiB is not more than the VDI's {} MiB: a VDI only grows (shrinking would lose data)", r.size_mib),
                    ));
                }
                act.not_active(&r, "a running VM uses it: its disk would not see the new size; shut it down first")?;
                let (store, driver, sr) = (act.records.clone(), act.driver.clone(), act.record.uuid);
                Ok(move || {
                    room(&*driver, sr, size_mib - r.size_mib)?;
                    driver.resize(&r.location, r.format, size_mib << 20)?;
                    let mut r = r;
                    r.size_mib = size_mib;
                    stamp(&*driver, &mut r);
                    store.save_vdi(&r)?;
                    Ok(r)
                })
            },
            move |act, r| {
                act.vdis.insert(uuid, r?);
                act.tell(uuid, EventKind::Mod);
                Ok(())
            },
        )
    }
}

/// A snapshot's record, and the live VDI's after it (their parents as the
/// SR's kind makes them).
fn snapshot_records(kind: SrType, live: &VdiRecord, snap: &mut VdiRecord) -> VdiRecord {
    let mut live = live.clone();
    snap.read_only = true;
    snap.snapshot_of = Some(live.uuid);
    snap.size_mib = live.size_mib;
    match (kind, live.format) {
        // The data moved into the snapshot; the live VDI is its overlay.
        (SrType::File, VdiFormat::Qcow2) => {
            snap.parent = live.parent;
            live.parent = Some(snap.uuid);
        }
        // A full copy.
        (SrType::File, VdiFormat::Raw) => snap.parent = None,
        // A thin snapshot's origin is the live LV.
        (SrType::Lvm, _) => snap.parent = Some(live.uuid),
    }
    live
}

/// Takes a snapshot of `live` (blocking): the snapshot's record and the
/// live VDI's, both saved.
fn take_snapshot(
    store: &StorageRecords,
    driver: &Arc<dyn SrDriver>,
    live: &VdiRecord,
    snap: VdiRecord,
) -> Result<(VdiRecord, VdiRecord), SrError> {
    let mut snap = snap;
    let mut new_live = snapshot_records(driver.kind(), live, &mut snap);
    let (l, s, f) = (live.location.clone(), snap.location.clone(), live.format);
    let snap = pending_then(store, &**driver, snap, || Ok(driver.snapshot(&l, &s, f)?))?;
    stamp(&**driver, &mut new_live);
    store.save_vdi(&new_live)?;
    Ok((snap, new_live))
}

impl Handler<Snapshot> for SrActor {
    type Result = ResponseActFuture<Self, Result<uuid::Uuid, SrError>>;

    fn handle(&mut self, msg: Snapshot, _ctx: &mut Context<Self>) -> Self::Result {
        let (live_id, snap_id) = (msg.vdi, uuid::Uuid::new_v4());
        self.locked(
            vec![live_id, snap_id],
            move |act| {
                act.fault()?;
                let live = act.settled(&live_id)?.clone();
                if live.read_only {
                    return Err(SrError::ReadOnly { vdi: live_id, what: "it is a point in time already (clone it)" });
                }
                if act.record.kind == SrType::File {
                    act.not_active(&live, "a running VM writes it: shut it down first (file VDIs are snapshotted offline)")?;
                }
                let name = match msg.name {
                    Some(n) => check_name("name", &n)?,
                    None => crate::storage::fit_name(&format!("{} snapshot", live.name)),
                };
                let snap = act.new_record(snap_id, name, live.format, live.size_mib, Pending::Snapshot { of: live_id });
                act.vdis.insert(snap_id, snap.clone());
                let (store, driver) = (act.records.clone(), act.driver.clone());
                Ok(move || take_snapshot(&store, &driver, &live, snap))
            },
            move |act, r| match r {
                Ok((snap, live)) => {
                    act.vdis.insert(live_id, live);
                    act.tell(live_id, EventKind::Mod);
                    act.settle_new(snap_id, Ok(snap))
                }
                Err(e) => act.settle_new(snap_id, Err(e)),
            },
        )
    }
}

impl Handler<CloneVdi> for SrActor {
    type Result = ResponseActFuture<Self, Result<uuid::Uuid, SrError>>;

    fn handle(&mut self, msg: CloneVdi, _ctx: &mut Context<Self>) -> Self::Result {
        let (base_id, new_id, snap_id) = (msg.vdi, uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        self.locked(
            vec![base_id, new_id, snap_id],
            move |act| {
                act.fault()?;
                let base = act.settled(&base_id)?.clone();
                let kind = act.record.kind;
                // A qcow2 clone is an overlay on a read-only base: a live
                // VDI gets a snapshot first (kept, and shown, as the base).
                let needs_base =
                    kind == SrType::File && base.format == VdiFormat::Qcow2 && !base.read_only;
                if kind == SrType::File && !base.read_only {
                    act.not_active(
                        &base,
                        "a running VM writes it: shut it down first, or clone a snapshot of it",
                    )?;
                }
                let name = match msg.name {
                    Some(n) => check_name("name", &n)?,
                    None => crate::storage::fit_name(&format!("{} clone", base.name)),
                };
                let mut clone = act.new_record(
                    new_id,
                    name,
                    base.format,
                    base.size_mib,
                    Pending::Clone { of: base_id },
                );
                let snap = needs_base.then(|| {
                    let name = crate::storage::fit_name(&format!("{} (clone base)", base.name));
                    act.new_record(
                        snap_id,
                        name,
                        base.format,
                        base.size_mib,
                        Pending::Snapshot { of: base_id },
                    )
                });
                if let Some(s) = &snap {
                    act.vdis.insert(snap_id, s.clone());
                }
                act.vdis.insert(new_id, clone.clone());
                let (store, driver) = (act.records.clone(), act.driver.clone());
                Ok(move || {
                    let (from, made) = match snap {
                        Some(snap) => {
                            let (snap, live) = take_snapshot(&store, &driver, &base, snap)?;
                            (snap.clone(), Some((snap, live)))
                        }
                        None => (base.clone(), None),
                    };
                    clone.parent = match (kind, base.format) {
                        (SrType::File, VdiFormat::Raw) => None,
                        _ => Some(from.uuid),
                    };
                    let (b, n, f) = (from.location.clone(), clone.location.clone(), from.format);
                    let clone =
                        pending_then(&store, &*driver, clone, || Ok(driver.clone_of(&b, &n, f)?));
                    Ok((clone, made))
                })
            },
            move |act, r| {
                let (clone, made) = match r {
                    Ok(x) => x,
                    Err(e) => {
                        act.vdis.remove(&snap_id);
                        act.locks.remove(&snap_id);
                        return act.settle_new(new_id, Err(e));
                    }
                };
                if let Some((snap, live)) = made {
                    act.vdis.insert(base_id, live);
                    act.tell(base_id, EventKind::Mod);
                    let _ = act.settle_new(snap_id, Ok(snap));
                } else {
                    act.vdis.remove(&snap_id);
                }
                act.settle_new(new_id, clone)
            },
        )
    }
}

impl Handler<CopyIn> for SrActor {
    type Result = ResponseActFuture<Self, Result<uuid::Uuid, SrError>>;

    fn handle(&mut self, msg: CopyIn, _ctx: &mut Context<Self>) -> Self::Result {
        let uuid = uuid::Uuid::new_v4();
        if let Err(e) = self.fault() {
            return ready(Err(e));
        }
        self.locked(
            vec![uuid],
            move |act| {
                let name = check_name("name", &msg.name)?;
                let source = msg.source;
                let format = act.format(msg.format, Some(source.format))?;
                let size_mib = mib(source.virtual_bytes).max(1);
                let r = act.new_record(
                    uuid,
                    name,
                    format,
                    size_mib,
                    Pending::Copy {
                        from: source.describe.clone(),
                    },
                );
                act.vdis.insert(uuid, r.clone());
                let (store, driver, sr, job) = (
                    act.records.clone(),
                    act.driver.clone(),
                    act.record.uuid,
                    msg.job,
                );
                Ok(move || {
                    // A raw copy takes its whole size; a qcow2 one what the source holds.
                    let needed = match format {
                        VdiFormat::Raw => size_mib,
                        VdiFormat::Qcow2 => mib(source.physical_bytes.min(source.virtual_bytes)),
                    };
                    room(&*driver, sr, needed)?;
                    let loc = r.location.clone();
                    pending_then(&store, &*driver, r, || {
                        Ok(driver.copy_in(
                            &source.path,
                            source.format,
                            &loc,
                            format,
                            size_mib << 20,
                            &job,
                        )?)
                    })
                })
            },
            move |act, r| act.settle_new(uuid, r),
        )
    }
}
