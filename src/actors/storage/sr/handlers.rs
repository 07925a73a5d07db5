//! What an SR actor answers from its state, and the one path every
//! operation that changes a VDI takes ([`SrActor::locked`]): its VDIs'
//! locks taken (in uuid order), its plan checked against the state, its
//! work run on the blocking pool, its outcome applied.

use actix::{ActorFutureExt, Context, Handler, MessageResult, ResponseActFuture, WrapFuture};

use super::messages::{FindVdi, GetVdi, Info, ListVdis};
use super::state::SrActor;
use crate::actors::storage::view::{mib, SrView, VdiRef, VdiView};
use crate::actors::storage::SrError;

pub(super) fn ready<T: 'static>(
    r: Result<T, SrError>,
) -> ResponseActFuture<SrActor, Result<T, SrError>> {
    Box::pin(actix::fut::ready(r))
}

impl SrActor {
    /// Runs an operation once the locks of `vdis` are held: `plan` (in the
    /// actor) checks the state and returns the blocking work; `apply` (in
    /// the actor, locks still held) records the work's outcome. A plan that
    /// fails ends the operation before any work.
    pub(super) fn locked<W, R, T, P, A>(
        &mut self,
        vdis: Vec<uuid::Uuid>,
        plan: P,
        apply: A,
    ) -> ResponseActFuture<Self, Result<T, SrError>>
    where
        P: FnOnce(&mut SrActor) -> Result<W, SrError> + 'static,
        W: FnOnce() -> Result<R, SrError> + Send + 'static,
        R: Send + 'static,
        A: FnOnce(&mut SrActor, Result<R, SrError>) -> Result<T, SrError> + 'static,
        T: 'static,
    {
        let mut ids = vdis;
        ids.sort();
        ids.dedup();
        let locks: Vec<_> = ids.iter().map(|u| self.lock(*u)).collect();
        let acquire = async move {
            let mut guards = Vec::with_capacity(locks.len());
            for l in locks {
                guards.push(l.lock_owned().await);
            }
            guards
        };
        Box::pin(
            acquire
                .into_actor(self)
                .then(move |guards, act, _ctx| {
                    let work = plan(act);
                    async move {
                        let outcome = match work {
                            Ok(work) => Ok(crate::drivers::blocking::run(work)
                                .await
                                .map_err(SrError::from)
                                .and_then(|r| r)),
                            Err(e) => Err(e),
                        };
                        (guards, outcome)
                    }
                    .into_actor(act)
                })
                .map(move |(guards, outcome), act, _ctx| {
                    let out = match outcome {
                        Ok(r) => apply(act, r),
                        Err(e) => Err(e),
                    };
                    drop(guards);
                    out
                }),
        )
    }

    /// The VDIs of the SR, by name then uuid.
    pub(super) fn refs(&self) -> Vec<VdiRef> {
        let mut refs: Vec<VdiRef> = self
            .vdis
            .values()
            .map(|v| VdiRef {
                uuid: v.uuid,
                name: v.name.clone(),
            })
            .collect();
        refs.sort_by(|a, b| (&a.name, a.uuid).cmp(&(&b.name, b.uuid)));
        refs
    }
}

impl Handler<Info> for SrActor {
    type Result = ResponseActFuture<Self, Result<SrView, SrError>>;

    fn handle(&mut self, _msg: Info, _ctx: &mut Context<Self>) -> Self::Result {
        let driver = self.driver.clone();
        Box::pin(
            crate::drivers::blocking::run(move || driver.usage())
                .into_actor(self)
                .map(|usage, act, _ctx| {
                    let (size, free, fault) = match usage {
                        Ok(Ok(u)) => (u.size_bytes, u.free_bytes, act.fault.clone()),
                        Ok(Err(e)) => (0, 0, Some(e.to_string())),
                        Err(e) => (0, 0, Some(e.to_string())),
                    };
                    Ok(SrView {
                        uuid: act.record.uuid,
                        name: act.record.name.clone(),
                        kind: act.record.kind,
                        config: act.record.config.clone(),
                        size_mib: size >> 20,
                        free_mib: free >> 20,
                        vdis: act.refs(),
                        fault,
                    })
                }),
        )
    }
}

impl Handler<ListVdis> for SrActor {
    type Result = MessageResult<ListVdis>;

    fn handle(&mut self, _msg: ListVdis, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.vdis.values().map(|v| self.view(v)).collect())
    }
}

impl Handler<GetVdi> for SrActor {
    type Result = ResponseActFuture<Self, Result<VdiView, SrError>>;

    fn handle(&mut self, GetVdi(uuid): GetVdi, _ctx: &mut Context<Self>) -> Self::Result {
        let mut view = match self.vdi(&uuid) {
            Ok(v) => self.view(v),
            Err(e) => return ready(Err(e)),
        };
        let (driver, loc) = (self.driver.clone(), view.location.clone());
        Box::pin(
            crate::drivers::blocking::run(move || driver.volume(&loc))
                .into_actor(self)
                .map(move |vol, _act, _ctx| {
                    if let Ok(Ok(Some(vol))) = vol {
                        view.physical_mib = Some(mib(vol.physical_bytes));
                    }
                    Ok(view)
                }),
        )
    }
}

impl Handler<FindVdi> for SrActor {
    type Result = MessageResult<FindVdi>;

    fn handle(&mut self, FindVdi(key): FindVdi, _ctx: &mut Context<Self>) -> Self::Result {
        if let Ok(uuid) = key.parse::<uuid::Uuid>() {
            if self.vdis.contains_key(&uuid) {
                return MessageResult(vec![uuid]);
            }
        }
        MessageResult(
            self.vdis
                .values()
                .filter(|v| v.name == key)
                .map(|v| v.uuid)
                .collect(),
        )
    }
}
