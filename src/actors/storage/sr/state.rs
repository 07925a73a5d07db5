//! An SR actor's state and its start: the SR's VDI records read back, the
//! operations a crash cut short finished or undone, the records checked
//! against what the SR holds.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use actix::{Actor, AsyncContext, Context};

use super::recover;
use crate::actors::events::{EventBus, EventClass, EventKind};
use crate::actors::slot::AddrSlot;
use crate::actors::storage::view::VdiView;
use crate::actors::storage::SrError;
use crate::actors::supervisor::{ChildSpec, StartError};
use crate::drivers::storage::{SrDriver, StorageTools};
use crate::storage::{SrRecord, StorageRecords, VdiRecord};

/// One SR's actor: the one owner of its VDI records.
#[derive(Debug)]
pub struct SrActor {
    pub(super) record: SrRecord,
    pub(super) driver: Arc<dyn SrDriver>,
    pub(super) records: StorageRecords,
    pub(super) vdis: BTreeMap<uuid::Uuid, VdiRecord>,
    /// VDIs whose volume the last look at the SR did not find.
    pub(super) missing: BTreeSet<uuid::Uuid>,
    /// One lock per VDI: its operations run one at a time.
    pub(super) locks: HashMap<uuid::Uuid, Arc<tokio::sync::Mutex<()>>>,
    /// Leases held (a copy reading the VDI).
    pub(super) leased: HashMap<uuid::Uuid, usize>,
    /// Why the SR could not be read at start, if it could not.
    pub(super) fault: Option<String>,
    pub(super) events: EventBus,
    slot: AddrSlot<SrActor>,
}

impl SrActor {
    /// The child spec: at each (re)start the SR's records are read again
    /// and checked against the SR (on the blocking pool).
    pub fn spec(
        record: SrRecord,
        records: StorageRecords,
        tools: StorageTools,
        events: EventBus,
        slot: AddrSlot<SrActor>,
    ) -> ChildSpec {
        let id = format!("sr:{}", record.uuid);
        ChildSpec::worker_async(id, move |_exit| {
            let (record, records, tools, events, slot) = (
                record.clone(),
                records.clone(),
                tools.clone(),
                events.clone(),
                slot.clone(),
            );
            async move {
                let driver = crate::storage::driver(&record.config, &tools);
                let (d, r, sr) = (driver.clone(), records.clone(), record.clone());
                let loaded = crate::drivers::blocking::run(move || recover::load(&*d, &r, &sr))
                    .await
                    .map_err(|e| StartError::new(e.to_string()))?
                    .map_err(|e| StartError::new(crate::error::chain(&e)))?;
                if let Some(fault) = &loaded.fault {
                    tracing::warn!(sr = %record.name, uuid = %record.uuid, %fault, "the SR cannot be read: its VDIs are kept, operations on it fail until it can");
                }
                tracing::info!(sr = %record.name, uuid = %record.uuid, vdis = loaded.vdis.len(), "SR ready");
                Ok(SrActor {
                    record,
                    driver,
                    records,
                    vdis: loaded.vdis.into_iter().map(|v| (v.uuid, v)).collect(),
                    missing: loaded.missing,
                    locks: HashMap::new(),
                    leased: HashMap::new(),
                    fault: loaded.fault,
                    events,
                    slot,
                })
            }
        })
    }

    /// A VDI by uuid.
    pub(super) fn vdi(&self, uuid: &uuid::Uuid) -> Result<&VdiRecord, SrError> {
        self.vdis.get(uuid).ok_or_else(|| SrError::NotFound {
            what: "VDI",
            key: uuid.to_string(),
        })
    }

    /// A VDI that no operation is changing now.
    pub(super) fn settled(&self, uuid: &uuid::Uuid) -> Result<&VdiRecord, SrError> {
        let v = self.vdi(uuid)?;
        match &v.pending {
            None => Ok(v),
            Some(p) => Err(SrError::Busy {
                vdi: *uuid,
                op: match p {
                    crate::storage::Pending::Create => "being made",
                    crate::storage::Pending::Destroy => "being destroyed",
                    crate::storage::Pending::Snapshot { .. } => "being snapshotted",
                    crate::storage::Pending::Clone { .. } => "being cloned",
                    crate::storage::Pending::Copy { .. } => "being copied in",
                },
            }),
        }
    }

    pub(super) fn lock(&mut self, uuid: uuid::Uuid) -> Arc<tokio::sync::Mutex<()>> {
        self.locks.entry(uuid).or_default().clone()
    }

    pub(super) fn view(&self, r: &VdiRecord) -> VdiView {
        VdiView::of(r, self.missing.contains(&r.uuid))
    }

    /// The VDIs backed by `uuid`.
    pub(super) fn children(&self, uuid: &uuid::Uuid) -> Vec<uuid::Uuid> {
        self.vdis
            .values()
            .filter(|v| v.parent == Some(*uuid))
            .map(|v| v.uuid)
            .collect()
    }

    pub(super) fn tell(&self, uuid: uuid::Uuid, kind: EventKind) {
        let view = self.vdis.get(&uuid).map(|r| self.view(r));
        self.events
            .publish(EventClass::Vdi, uuid.to_string(), kind, || {
                view.unwrap_or_else(|| placeholder(uuid, self.record.uuid))
            });
    }

    pub(super) fn fault(&self) -> Result<(), SrError> {
        match &self.fault {
            None => Ok(()),
            Some(f) => Err(SrError::Backend(
                crate::drivers::storage::StorageError::Unsupported(format!(
                    "SR {} cannot be reached: {f} (fix it, then sr.scan)",
                    self.record.name
                )),
            )),
        }
    }
}

/// What a `del` event shows of a VDI that is gone.
fn placeholder(uuid: uuid::Uuid, sr: uuid::Uuid) -> VdiView {
    VdiView {
        uuid,
        name: String::new(),
        sr,
        format: crate::drivers::storage::VdiFormat::Raw,
        size_mib: 0,
        physical_mib: None,
        read_only: false,
        snapshot_of: None,
        parent: None,
        attached: Vec::new(),
        location: String::new(),
        adopted: false,
        pending: None,
        missing: true,
        active: 0,
    }
}

impl Actor for SrActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.slot.publish(ctx.address());
    }
}
