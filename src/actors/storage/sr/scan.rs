//! `sr.scan`: the SR read again; volumes xenith did not make adopted as
//! VDIs, records whose volume is gone flagged, volumes changed behind
//! xenith's back reported. And the end of an SR (`sr.destroy`,
//! `sr.forget`).

use std::collections::{BTreeSet, HashMap};

use actix::{ActorFutureExt, Context, Handler, ResponseActFuture, WrapFuture};

use super::messages::{Dismantle, Scan};
use super::recover::backs;
use super::state::SrActor;
use crate::actors::events::EventKind;
use crate::actors::storage::view::{mib, ScanResult, VdiRef};
use crate::actors::storage::SrError;
use crate::drivers::storage::Volume;
use crate::storage::{Stamp, VdiRecord};

fn vdi_ref(r: &VdiRecord) -> VdiRef {
    VdiRef {
        uuid: r.uuid,
        name: r.name.clone(),
    }
}

/// A VDI's name from its volume's: the file name without its extension.
fn adopted_name(location: &str) -> String {
    let stem = std::path::Path::new(location)
        .file_stem()
        .map_or_else(|| location.to_owned(), |s| s.to_string_lossy().into_owned());
    let clean: String = stem
        .replace("..", "_")
        .chars()
        .filter(|c| !c.is_control() && *c != '/')
        .collect();
    let clean = crate::storage::fit_name(&clean);
    if clean.trim().is_empty() {
        "adopted".into()
    } else {
        clean
    }
}

impl SrActor {
    /// Compares the records with what the SR holds; returns the records to
    /// save and what was found.
    fn compare(&mut self, volumes: Vec<Volume>) -> (Vec<VdiRecord>, ScanResult) {
        let mut result = ScanResult::default();
        let mut save = Vec::new();
        let known: HashMap<String, uuid::Uuid> = self
            .vdis
            .values()
            .map(|v| (v.location.clone(), v.uuid))
            .collect();
        let mut by_loc = known.clone();
        for vol in &volumes {
            if known.contains_key(&vol.location) || !crate::storage::plain_location(&vol.location) {
                continue;
            }
            let uuid = uuid::Uuid::new_v4();
            let r = VdiRecord {
                uuid,
                sr: self.record.uuid,
                name: adopted_name(&vol.location),
                format: vol.format,
                size_mib: mib(vol.virtual_bytes).max(1),
                read_only: vol.read_only,
                snapshot_of: None,
                parent: None,
                location: vol.location.clone(),
                created: 0,
                adopted: true,
                attached: Vec::new(),
                active: Vec::new(),
                pending: None,
                stamp: vol.stamp.map(|(bytes, mtime_ns)| Stamp { bytes, mtime_ns }),
            };
            tracing::info!(sr = %self.record.name, vdi = %uuid, location = %vol.location, "adopted a volume found in the SR");
            result.added.push(vdi_ref(&r));
            by_loc.insert(vol.location.clone(), uuid);
            self.vdis.insert(uuid, r);
        }
        let vols: HashMap<&str, &Volume> =
            volumes.iter().map(|v| (v.location.as_str(), v)).collect();
        let leased = self.leased.clone();
        for r in self.vdis.values_mut() {
            if r.pending.is_some() {
                continue;
            }
            let Some(vol) = vols.get(r.location.as_str()) else {
                if self.missing.insert(r.uuid) {
                    tracing::warn!(sr = %self.record.name, vdi = %r.uuid, location = %r.location, "a VDI's volume is gone from the SR (its record is kept)");
                }
                result.missing.push(vdi_ref(r));
                continue;
            };
            self.missing.remove(&r.uuid);
            let mut changed = result.added.iter().any(|a| a.uuid == r.uuid);
            let parent = vol.backing.as_deref().and_then(|b| {
                by_loc
                    .iter()
                    .find(|(loc, _)| backs(b, loc))
                    .map(|(_, u)| *u)
            });
            if parent != r.parent {
                r.parent = parent;
                changed = true;
            }
            let now = vol.stamp.map(|(bytes, mtime_ns)| Stamp { bytes, mtime_ns });
            let in_use = !r.active.is_empty() || leased.contains_key(&r.uuid);
            if !in_use && !result.added.iter().any(|a| a.uuid == r.uuid) {
                let moved = r.stamp.is_some() && now.is_some() && r.stamp != now;
                let resized = mib(vol.virtual_bytes).max(1) != r.size_mib;
                if moved || resized {
                    tracing::warn!(sr = %self.record.name, vdi = %r.uuid, location = %r.location, "a VDI's volume changed behind xenith's back");
                    result.changed.push(vdi_ref(r));
                    r.size_mib = mib(vol.virtual_bytes).max(1);
                    r.stamp = now;
                    changed = true;
                } else if r.stamp.is_none() && now.is_some() {
                    r.stamp = now;
                    changed = true;
                }
            }
            if changed {
                save.push(r.clone());
            }
        }
        (save, result)
    }
}

impl Handler<Scan> for SrActor {
    type Result = ResponseActFuture<Self, Result<ScanResult, SrError>>;

    fn handle(&mut self, _msg: Scan, _ctx: &mut Context<Self>) -> Self::Result {
        let driver = self.driver.clone();
        Box::pin(
            crate::drivers::blocking::run(move || driver.volumes())
                .into_actor(self)
                .then(|volumes, act, _ctx| {
                    let found = volumes
                        .map_err(SrError::from)
                        .and_then(|v| v.map_err(SrError::from));
                    let store = act.records.clone();
                    let compared = found.map(|volumes| {
                        if act.fault.take().is_some() {
                            tracing::info!(sr = %act.record.name, "the SR can be read again");
                        }
                        act.compare(volumes)
                    });
                    async move {
                        let (save, result) = compared?;
                        let saved = save.clone();
                        crate::drivers::blocking::run(move || {
                            for r in &save {
                                store.save_vdi(r)?;
                            }
                            Ok::<_, SrError>(())
                        })
                        .await??;
                        Ok((saved, result))
                    }
                    .into_actor(act)
                })
                .map(
                    |r: Result<(Vec<VdiRecord>, ScanResult), SrError>, act, _ctx| {
                        let (saved, result) = r?;
                        for r in saved {
                            let kind = if result.added.iter().any(|a| a.uuid == r.uuid) {
                                EventKind::Add
                            } else {
                                EventKind::Mod
                            };
                            act.tell(r.uuid, kind);
                        }
                        Ok(result)
                    },
                ),
        )
    }
}

impl Handler<Dismantle> for SrActor {
    type Result = ResponseActFuture<Self, Result<(), SrError>>;

    fn handle(&mut self, msg: Dismantle, _ctx: &mut Context<Self>) -> Self::Result {
        let all: Vec<uuid::Uuid> = self.vdis.keys().copied().collect();
        self.locked(
            all,
            move |act| {
                for r in act.vdis.values() {
                    if let Some(a) = r.attached.first() {
                        return Err(SrError::InUse {
                            vdi: r.uuid,
                            vm: a.vm,
                            device: a.device.clone(),
                            why: "the SR's VDIs must be unplugged from every VM first".into(),
                        });
                    }
                    if act.leased.contains_key(&r.uuid) {
                        return Err(SrError::Busy {
                            vdi: r.uuid,
                            op: "being read",
                        });
                    }
                }
                if !msg.keep_volumes {
                    act.fault()?;
                }
                let vdis: Vec<VdiRecord> = act.vdis.values().cloned().collect();
                let driver = act.driver.clone();
                let keep = msg.keep_volumes;
                Ok(move || {
                    if keep {
                        return Ok(());
                    }
                    // Leaves first: a parent goes once nothing is backed by it.
                    let mut left = vdis;
                    while !left.is_empty() {
                        let parents: BTreeSet<uuid::Uuid> =
                            left.iter().filter_map(|v| v.parent).collect();
                        let (leaves, rest): (Vec<_>, Vec<_>) =
                            left.into_iter().partition(|v| !parents.contains(&v.uuid));
                        if leaves.is_empty() {
                            // A loop in the parents (a hand-edited record): take them all.
                            for v in &rest {
                                driver.destroy(&v.location)?;
                            }
                            break;
                        }
                        for v in &leaves {
                            driver.destroy(&v.location)?;
                        }
                        left = rest;
                    }
                    driver.remove()?;
                    Ok(())
                })
            },
            |act, r| {
                r?;
                let gone: Vec<uuid::Uuid> = act.vdis.keys().copied().collect();
                for uuid in gone {
                    act.tell(uuid, EventKind::Del);
                }
                act.vdis.clear();
                act.missing.clear();
                Ok(())
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adopted_names_come_from_file_names() {
        assert_eq!(adopted_name("debian.qcow2"), "debian");
        assert_eq!(adopted_name("vdi-x"), "vdi-x");
        assert_eq!(adopted_name("a..b.raw"), "a_b");
    }
}
