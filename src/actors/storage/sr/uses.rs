//! How VMs use an SR's VDIs: the VMs whose specs name a VDI (attached: one
//! writer at a time, kept in the VDI's record), the running VMs whose
//! backends use it now (active: an LV activated), and the leases of
//! copies and exports reading it.

use actix::{ActorFutureExt, AsyncContext, Context, Handler, ResponseActFuture, WrapFuture};

use super::handlers::ready;
use super::messages::{
    Activate, Attach, Deactivate, Detach, Hold, Lease, Reconcile, Release, Source,
};
use super::state::SrActor;
use crate::actors::events::EventKind;
use crate::actors::storage::view::ActiveVdi;
use crate::actors::storage::SrError;
use crate::storage::VdiRecord;

impl SrActor {
    /// Saves a record whose uses changed, off the actor's thread.
    fn save_later(&self, r: VdiRecord, ctx: &mut Context<Self>) {
        let store = self.records.clone();
        ctx.spawn(
            async move {
                let uuid = r.uuid;
                match crate::drivers::blocking::run(move || store.save_vdi(&r)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(vdi = %uuid, error = %crate::error::chain(&e), "cannot record a VDI's use"),
                    Err(e) => tracing::warn!(vdi = %uuid, error = %e, "cannot record a VDI's use"),
                }
            }
            .into_actor(self),
        );
    }
}

impl Handler<Attach> for SrActor {
    type Result = ResponseActFuture<Self, Result<crate::vm::VdiDisk, SrError>>;

    fn handle(&mut self, msg: Attach, _ctx: &mut Context<Self>) -> Self::Result {
        let uuid = msg.vdi;
        let a = msg.attachment;
        self.locked(
            vec![uuid],
            saving(move |act| {
                let mut r = act.settled(&uuid)?.clone();
                if r.attached.iter().any(|x| x.vm == a.vm && x.device == a.device && x.writable == a.writable) {
                    return Ok(None);
                }
                if a.writable && r.read_only {
                    return Err(SrError::ReadOnly {
                        vdi: uuid,
                        what: "attach it with mode \"ro\", or attach a clone of it",
                    });
                }
                let holder = r
                    .attached
                    .iter()
                    .filter(|x| x.vm != a.vm || x.device != a.device)
                    .find(|x| x.writable || a.writable);
                if let Some(h) = holder {
                    let why = if h.writable {
                        "it has a writer already: a VDI has one writer, and readers only without one"
                    } else {
                        "other VMs read it: it can be written only when no one else uses it"
                    };
                    return Err(SrError::InUse {
                        vdi: uuid,
                        vm: h.vm,
                        device: h.device.clone(),
                        why: why.into(),
                    });
                }
                r.attached.retain(|x| x.vm != a.vm || x.device != a.device);
                r.attached.push(a);
                Ok(Some(r))
            }),
            move |act, r| {
                if let Some(r) = r? {
                    act.vdis.insert(uuid, r);
                    act.tell(uuid, EventKind::Mod);
                }
                let r = act.settled(&uuid)?;
                Ok(crate::vm::VdiDisk {
                    uuid,
                    path: act.driver.path(&r.location),
                    format: r.format,
                })
            },
        )
    }
}

/// The work of a plan that changes a record: saving it (if it changed).
type SaveWork = Box<dyn FnOnce() -> Result<Option<VdiRecord>, SrError> + Send>;

fn saving<P>(plan: P) -> impl FnOnce(&mut SrActor) -> Result<SaveWork, SrError> + 'static
where
    P: FnOnce(&mut SrActor) -> Result<Option<VdiRecord>, SrError> + 'static,
{
    move |act| {
        let changed = plan(act)?;
        let store = act.records.clone();
        Ok(Box::new(move || {
            if let Some(r) = &changed {
                store.save_vdi(r)?;
            }
            Ok(changed)
        }) as SaveWork)
    }
}

impl Handler<Detach> for SrActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: Detach, _ctx: &mut Context<Self>) -> Self::Result {
        let uuid = msg.vdi;
        Box::pin(
            self.locked(
                vec![uuid],
                saving(move |act: &mut SrActor| {
                    let Some(mut r) = act.vdis.get(&uuid).cloned() else {
                        return Ok(None);
                    };
                    let before = r.attached.len();
                    r.attached.retain(|x| x.vm != msg.vm || x.device != msg.device);
                    if !r.attached.iter().any(|x| x.vm == msg.vm) {
                        r.active.retain(|vm| *vm != msg.vm);
                    }
                    Ok((r.attached.len() != before).then_some(r))
                }),
                move |act, r| {
                    if let Some(r) = r? {
                        act.vdis.insert(uuid, r);
                        act.tell(uuid, EventKind::Mod);
                    }
                    Ok(())
                },
            )
            .map(|r: Result<(), SrError>, _act, _ctx| {
                if let Err(e) = r {
                    tracing::warn!(error = %crate::error::chain(&e), "cannot record that a VM no longer names a VDI");
                }
            }),
        )
    }
}

impl Handler<Reconcile> for SrActor {
    type Result = ();

    fn handle(&mut self, Reconcile(all): Reconcile, ctx: &mut Context<Self>) {
        let mut want: std::collections::HashMap<uuid::Uuid, Vec<crate::storage::Attachment>> =
            std::collections::HashMap::new();
        for (vdi, a) in all {
            want.entry(vdi).or_default().push(a);
        }
        let mut changed = Vec::new();
        for r in self.vdis.values_mut() {
            let mut attached = want.remove(&r.uuid).unwrap_or_default();
            attached.sort_by(|a, b| (a.vm, &a.device).cmp(&(b.vm, &b.device)));
            let mut old = r.attached.clone();
            old.sort_by(|a, b| (a.vm, &a.device).cmp(&(b.vm, &b.device)));
            let active_before = r.active.len();
            r.active.retain(|vm| attached.iter().any(|a| a.vm == *vm));
            if old != attached || r.active.len() != active_before {
                if old != attached {
                    tracing::info!(vdi = %r.uuid, before = old.len(), now = attached.len(), "the VMs naming a VDI, as the VM records say");
                }
                r.attached = attached;
                changed.push(r.clone());
            }
        }
        for r in changed {
            let uuid = r.uuid;
            self.save_later(r, ctx);
            self.tell(uuid, EventKind::Mod);
        }
    }
}

impl Handler<Activate> for SrActor {
    type Result = ResponseActFuture<Self, Result<ActiveVdi, SrError>>;

    fn handle(&mut self, msg: Activate, _ctx: &mut Context<Self>) -> Self::Result {
        let uuid = msg.vdi;
        self.locked(
            vec![uuid],
            move |act| {
                act.fault()?;
                let mut r = act.settled(&uuid)?.clone();
                if act.missing.contains(&uuid) {
                    return Err(SrError::NotFound {
                        what: "volume of VDI",
                        key: format!("{uuid} ({} in SR {})", r.location, act.record.name),
                    });
                }
                let changed = !r.active.contains(&msg.vm);
                if changed {
                    r.active.push(msg.vm);
                }
                let (store, driver) = (act.records.clone(), act.driver.clone());
                Ok(move || {
                    let attached = driver.attach(&r.location, r.format)?;
                    if changed {
                        store.save_vdi(&r)?;
                    }
                    Ok((r, attached))
                })
            },
            move |act, res| {
                let (r, attached) = res?;
                act.vdis.insert(uuid, r);
                act.tell(uuid, EventKind::Mod);
                Ok(ActiveVdi {
                    vdi: uuid,
                    path: attached.path,
                    format: attached.format,
                    block: attached.block,
                })
            },
        )
    }
}

impl Handler<Deactivate> for SrActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: Deactivate, _ctx: &mut Context<Self>) -> Self::Result {
        let uuid = msg.vdi;
        Box::pin(
            self.locked(
                vec![uuid],
                move |act| {
                    let r = act.vdis.get(&uuid).cloned();
                    let leased = act.leased.get(&uuid).copied().unwrap_or(0) > 0;
                    let (store, driver) = (act.records.clone(), act.driver.clone());
                    Ok(move || {
                        let Some(mut r) = r else { return Ok(None) };
                        if !r.active.contains(&msg.vm) {
                            return Ok(None);
                        }
                        r.active.retain(|vm| *vm != msg.vm);
                        if r.active.is_empty() && !leased {
                            driver.detach(&r.location)?;
                        }
                        // What the VM wrote is not a change behind xenith's back.
                        if let Ok(Some(v)) = driver.volume(&r.location) {
                            r.stamp = v.stamp.map(|(bytes, mtime_ns)| crate::storage::Stamp { bytes, mtime_ns });
                        }
                        store.save_vdi(&r)?;
                        Ok(Some(r))
                    })
                },
                move |act, r: Result<Option<VdiRecord>, SrError>| {
                    if let Some(r) = r? {
                        act.vdis.insert(uuid, r);
                        act.tell(uuid, EventKind::Mod);
                    }
                    Ok(())
                },
            )
            .map(move |r, _act, _ctx| {
                if let Err(e) = r {
                    tracing::warn!(vdi = %uuid, error = %crate::error::chain(&e), "cannot release a VDI a VM stopped using");
                }
            }),
        )
    }
}

impl Handler<Hold> for SrActor {
    type Result = ResponseActFuture<Self, Result<Lease, SrError>>;

    fn handle(&mut self, Hold(uuid): Hold, _ctx: &mut Context<Self>) -> Self::Result {
        if let Err(e) = self.fault().and_then(|()| self.settled(&uuid).map(drop)) {
            return ready(Err(e));
        }
        let lock = self.lock(uuid);
        Box::pin(
            async move { lock.lock_owned().await }
                .into_actor(self)
                .then(move |guard, act, _ctx| {
                    // A copy of what a running VM is writing would be torn.
                    let r = act.settled(&uuid).cloned().and_then(|r| {
                        match r.attached.iter().find(|a| a.writable && r.active.contains(&a.vm)) {
                            Some(a) => Err(SrError::InUse {
                                vdi: uuid,
                                vm: a.vm,
                                device: a.device.clone(),
                                why: "a running VM writes it: copy a snapshot of it, or shut the VM down first".into(),
                            }),
                            None => Ok(r),
                        }
                    });
                    if r.is_ok() {
                        *act.leased.entry(uuid).or_default() += 1;
                    }
                    // The volumes under it (a qcow2 chain's backing files):
                    // a copy reads what they hold too.
                    let mut below = Vec::new();
                    let mut parent = r.as_ref().ok().and_then(|r| r.parent);
                    while let Some(p) = parent.and_then(|p| act.vdis.get(&p)) {
                        if below.len() > 1000 {
                            break;
                        }
                        below.push(p.location.clone());
                        parent = p.parent;
                    }
                    let driver = act.driver.clone();
                    async move {
                        let r = r?;
                        let work = move || -> Result<(Source, String), SrError> {
                            let attached = driver.attach(&r.location, r.format)?;
                            let vol = driver.volume(&r.location)?;
                            let under: u64 = below
                                .iter()
                                .filter_map(|loc| driver.volume(loc).ok().flatten())
                                .map(|v| v.physical_bytes)
                                .sum();
                            Ok((
                                Source {
                                    path: attached.path,
                                    format: r.format,
                                    virtual_bytes: r.size_mib << 20,
                                    physical_bytes: vol
                                        .map_or(r.size_mib << 20, |v| v.physical_bytes)
                                        .saturating_add(under),
                                    describe: format!("vdi {}", r.uuid),
                                },
                                r.name,
                            ))
                        };
                        let (source, name) = crate::drivers::blocking::run(work).await??;
                        Ok(Lease {
                            source,
                            name,
                            guard,
                        })
                    }
                    .into_actor(act)
                })
                .map(move |r: Result<Lease, SrError>, act, _ctx| {
                    if r.is_err() {
                        release(act, uuid);
                    }
                    r
                }),
        )
    }
}

fn release(act: &mut SrActor, uuid: uuid::Uuid) {
    if let Some(n) = act.leased.get_mut(&uuid) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            act.leased.remove(&uuid);
        }
    }
}

impl Handler<Release> for SrActor {
    type Result = ();

    fn handle(&mut self, Release(uuid): Release, ctx: &mut Context<Self>) {
        release(self, uuid);
        let idle = !self.leased.contains_key(&uuid)
            && self.vdis.get(&uuid).is_some_and(|r| r.active.is_empty());
        if idle {
            if let Some(r) = self.vdis.get(&uuid) {
                let (driver, loc) = (self.driver.clone(), r.location.clone());
                ctx.spawn(
                    async move {
                        if let Ok(Err(e)) = crate::drivers::blocking::run(move || driver.detach(&loc)).await {
                            tracing::warn!(vdi = %uuid, error = %e, "cannot deactivate a VDI after reading it");
                        }
                    }
                    .into_actor(self),
                );
            }
        }
    }
}
