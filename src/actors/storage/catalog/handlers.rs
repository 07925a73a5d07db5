//! What the catalog does with its requests.

use actix::{ActorFutureExt, Context, Handler, MessageResult, ResponseActFuture, WrapFuture};

use super::messages::{CreateSr, ListSrs, RemoveSr, ResolveSr};
use super::state::CatalogActor;
use crate::actors::events::EventKind;
use crate::actors::storage::SrError;
use crate::storage::{paths_overlap, SrConfig, SrCreate, SrRecord};

fn ready<T: 'static>(r: Result<T, SrError>) -> ResponseActFuture<CatalogActor, Result<T, SrError>> {
    Box::pin(actix::fut::ready(r))
}

impl CatalogActor {
    /// What the host-independent checks leave: the new SR must not overlap
    /// another, nor the state directory.
    fn check_place(&self, spec: &SrCreate) -> Result<(), SrError> {
        match &spec.config {
            SrConfig::File { path } => {
                if paths_overlap(path, &self.state_dir) {
                    return Err(SrError::param(
                        "config.path",
                        format!(
                            "{} overlaps xenith's state directory {}",
                            path.display(),
                            self.state_dir.display()
                        ),
                    ));
                }
                for (r, _) in self.srs.values() {
                    if let SrConfig::File { path: other } = &r.config {
                        if paths_overlap(path, other) {
                            return Err(SrError::param(
                                "config.path",
                                format!(
                                    "{} overlaps SR {} ({})",
                                    path.display(),
                                    r.name,
                                    other.display()
                                ),
                            ));
                        }
                    }
                }
            }
            SrConfig::Lvm { vg, device, .. } => {
                for (r, _) in self.srs.values() {
                    if let SrConfig::Lvm {
                        vg: other,
                        device: od,
                        ..
                    } = &r.config
                    {
                        if vg == other || (device.is_some() && device == od) {
                            return Err(SrError::param(
                                "config",
                                format!("volume group {vg} is SR {}'s", r.name),
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

impl Handler<CreateSr> for CatalogActor {
    type Result = ResponseActFuture<Self, Result<uuid::Uuid, SrError>>;

    fn handle(&mut self, msg: CreateSr, _ctx: &mut Context<Self>) -> Self::Result {
        let spec = match SrCreate::validate(&msg.name, msg.kind, msg.config) {
            Ok(s) => s,
            Err(e) => return ready(Err(e.into())),
        };
        if let Some(uuid) = self.names.get(&spec.name) {
            return ready(Err(SrError::NameTaken {
                name: spec.name,
                uuid: *uuid,
            }));
        }
        if self.reserved.contains(&spec.name) {
            return ready(Err(SrError::NameTaken {
                name: spec.name,
                uuid: uuid::Uuid::nil(),
            }));
        }
        if let Err(e) = self.check_place(&spec) {
            return ready(Err(e));
        }
        self.reserved.insert(spec.name.clone());
        let record = SrRecord {
            uuid: uuid::Uuid::new_v4(),
            name: spec.name.clone(),
            kind: spec.kind,
            config: spec.config,
        };
        let driver = crate::storage::driver(&record.config, &self.tools);
        let store = self.records.clone();
        let r = record.clone();
        let made = async move {
            crate::drivers::blocking::run(move || -> Result<(), SrError> {
                driver.prepare()?;
                if let Err(e) = store.save_sr(&r) {
                    let _ = driver.remove();
                    return Err(e.into());
                }
                Ok(())
            })
            .await?
        };
        let name = spec.name;
        Box::pin(
            made.into_actor(self)
                .then(move |r, act, _ctx| {
                    let start = r.map(|()| act.start_sr(record.clone()));
                    async move {
                        match start {
                            Ok(start) => start.await.map(|h| (record, h)),
                            Err(e) => Err(e),
                        }
                    }
                    .into_actor(act)
                })
                .map(move |r, act, _ctx| {
                    act.reserved.remove(&name);
                    let (record, handle) = r?;
                    tracing::info!(sr = %record.name, uuid = %record.uuid, kind = record.kind.as_str(), "SR created");
                    let uuid = record.uuid;
                    act.tell(&record, EventKind::Add);
                    act.register(record, handle);
                    Ok(uuid)
                }),
        )
    }
}

impl Handler<RemoveSr> for CatalogActor {
    type Result = ResponseActFuture<Self, Result<(), SrError>>;

    fn handle(&mut self, msg: RemoveSr, _ctx: &mut Context<Self>) -> Self::Result {
        let Some((record, handle)) = self.resolve(&msg.key).cloned() else {
            return ready(Err(SrError::NotFound {
                what: "SR",
                key: msg.key,
            }));
        };
        let (sup, store) = (self.sup.clone(), self.records.clone());
        let keep = msg.keep_volumes;
        let uuid = record.uuid;
        let work = async move {
            handle.dismantle(keep).await?;
            sup.remove_child(format!("sr:{uuid}")).await?;
            crate::drivers::blocking::run(move || store.remove_sr(&uuid)).await??;
            Ok::<_, SrError>(())
        };
        Box::pin(work.into_actor(self).map(move |r, act, _ctx| {
            r?;
            let verb = if keep { "forgotten" } else { "destroyed" };
            tracing::info!(sr = %record.name, uuid = %record.uuid, "SR {verb}");
            act.names.remove(&record.name);
            act.srs.remove(&record.uuid);
            act.tell(&record, EventKind::Del);
            Ok(())
        }))
    }
}

impl Handler<ResolveSr> for CatalogActor {
    type Result = Option<crate::actors::storage::sr::SrHandle>;

    fn handle(&mut self, ResolveSr(key): ResolveSr, _ctx: &mut Context<Self>) -> Self::Result {
        self.resolve(&key).map(|(_, h)| h.clone())
    }
}

impl Handler<ListSrs> for CatalogActor {
    type Result = MessageResult<ListSrs>;

    fn handle(&mut self, _msg: ListSrs, _ctx: &mut Context<Self>) -> Self::Result {
        let mut all: Vec<_> = self.srs.values().collect();
        all.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        MessageResult(all.into_iter().map(|(_, h)| h.clone()).collect())
    }
}
