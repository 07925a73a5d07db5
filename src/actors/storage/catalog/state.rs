//! The catalog's state and its start: every SR of the records, its actor
//! started under `srs`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

use actix::{Actor, AsyncContext, Context};

use crate::actors::events::{EventBus, EventClass, EventKind};
use crate::actors::slot::AddrSlot;
use crate::actors::storage::sr::{SrActor, SrHandle};
use crate::actors::storage::SrError;
use crate::actors::supervisor::{ChildSpec, StartError, Supervisor, SupervisorHandle};
use crate::drivers::storage::StorageTools;
use crate::storage::{SrRecord, StorageRecords};

/// The catalog: the one owner of the SRs xenith knows.
#[derive(Debug)]
pub struct CatalogActor {
    pub(super) srs: BTreeMap<uuid::Uuid, (SrRecord, SrHandle)>,
    pub(super) names: HashMap<String, uuid::Uuid>,
    /// Names of SRs being created.
    pub(super) reserved: HashSet<String>,
    pub(super) sup: SupervisorHandle,
    pub(super) records: StorageRecords,
    pub(super) tools: StorageTools,
    /// No SR may lie in it (nor it in an SR).
    pub(super) state_dir: PathBuf,
    pub(super) events: EventBus,
    slot: AddrSlot<CatalogActor>,
}

/// What the catalog is built from.
#[derive(Debug, Clone)]
pub struct CatalogEnv {
    pub records: StorageRecords,
    pub tools: StorageTools,
    pub state_dir: PathBuf,
    pub events: EventBus,
}

impl CatalogActor {
    /// The child spec: at each (re)start every SR of the records gets its
    /// actor again under `srs` (started after it, in the `storage`
    /// supervisor, rest_for_one).
    pub fn spec(
        env: CatalogEnv,
        srs: AddrSlot<Supervisor>,
        slot: AddrSlot<CatalogActor>,
    ) -> ChildSpec {
        ChildSpec::worker_async("catalog", move |_exit| {
            let (env, srs, slot) = (env.clone(), srs.clone(), slot.clone());
            async move {
                let sup = srs
                    .get()
                    .map(SupervisorHandle::from)
                    .ok_or_else(|| StartError::new("the srs supervisor is not running"))?;
                let store = env.records.clone();
                let records = crate::drivers::blocking::run(move || store.load_srs())
                    .await
                    .map_err(|e| StartError::new(e.to_string()))?
                    .map_err(|e| StartError::new(crate::error::chain(&e)))?;
                let mut catalog = CatalogActor {
                    srs: BTreeMap::new(),
                    names: HashMap::new(),
                    reserved: HashSet::new(),
                    sup,
                    records: env.records,
                    tools: env.tools,
                    state_dir: env.state_dir,
                    events: env.events,
                    slot,
                };
                for record in records {
                    let (uuid, name) = (record.uuid, record.name.clone());
                    if catalog.names.contains_key(&name) {
                        tracing::warn!(sr = %name, %uuid, "two SRs have one name: this one is left out (rename its record)");
                        continue;
                    }
                    match catalog.start_sr(record.clone()).await {
                        Ok(handle) => catalog.register(record, handle),
                        Err(e) => {
                            tracing::warn!(sr = %name, %uuid, error = %crate::error::chain(&e), "cannot start the SR's actor: left out")
                        }
                    }
                }
                Ok(catalog)
            }
        })
    }

    /// Starts an SR's actor under `srs`.
    pub(super) fn start_sr(
        &self,
        record: SrRecord,
    ) -> impl std::future::Future<Output = Result<SrHandle, SrError>> + 'static {
        let slot = AddrSlot::new();
        let handle = SrHandle::new(record.uuid, slot.clone());
        let spec = SrActor::spec(
            record,
            self.records.clone(),
            self.tools.clone(),
            self.events.clone(),
            slot,
        );
        let sup = self.sup.clone();
        async move {
            match sup.start_child(spec.clone()).await {
                // The actor of a catalog that restarted on its own: its
                // slot is that catalog's, so it is replaced (it re-reads
                // its SR; the VDIs' records keep who uses them).
                Err(crate::actors::supervisor::SupervisorError::AlreadyExists(id)) => {
                    tracing::info!(sr = %id, "replacing the SR actor a previous catalog started");
                    sup.remove_child(id).await?;
                    sup.start_child(spec).await?;
                }
                r => r?,
            }
            Ok(handle)
        }
    }

    pub(super) fn register(&mut self, record: SrRecord, handle: SrHandle) {
        self.names.insert(record.name.clone(), record.uuid);
        self.srs.insert(record.uuid, (record, handle));
    }

    pub(super) fn resolve(&self, key: &str) -> Option<&(SrRecord, SrHandle)> {
        key.parse::<uuid::Uuid>()
            .ok()
            .and_then(|u| self.srs.get(&u))
            .or_else(|| self.names.get(key).and_then(|u| self.srs.get(u)))
    }

    pub(super) fn tell(&self, record: &SrRecord, kind: EventKind) {
        self.events
            .publish(EventClass::Sr, record.uuid.to_string(), kind, || {
                serde_json::json!({
                    "uuid": record.uuid,
                    "name": record.name,
                    "type": record.kind,
                    "config": record.config,
                })
            });
    }
}

impl Actor for CatalogActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.slot.publish(ctx.address());
    }
}
