//! The typed handle to one SR's actor.

use super::messages::{
    Activate, Attach, CloneVdi, CopyIn, CreateVdi, Deactivate, DestroyVdi, Detach, Dismantle,
    FindVdi, GetVdi, Hold, Info, Lease, ListVdis, Reconcile, Release, ResizeVdi, Scan, Snapshot,
    Source,
};
use super::state::SrActor;
use crate::actors::slot::AddrSlot;
use crate::actors::storage::view::{ActiveVdi, ScanResult, SrView, VdiView};
use crate::actors::storage::SrError;
use crate::drivers::storage::{Job, VdiFormat};
use crate::storage::Attachment;

/// How long a request waits for an SR actor that is restarting.
const RESTART_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// What the catalog, the inventory and the domain actors hold of an SR.
#[derive(Debug, Clone)]
pub struct SrHandle {
    pub uuid: uuid::Uuid,
    slot: AddrSlot<SrActor>,
}

impl SrHandle {
    pub fn new(uuid: uuid::Uuid, slot: AddrSlot<SrActor>) -> Self {
        Self { uuid, slot }
    }

    async fn addr(&self) -> Result<actix::Addr<SrActor>, SrError> {
        self.slot
            .running(RESTART_WAIT)
            .await
            .ok_or(SrError::Unavailable("the SR's actor"))
    }

    async fn ask<M>(&self, msg: M) -> Result<M::Result, SrError>
    where
        M: actix::Message + Send + 'static,
        M::Result: Send,
        SrActor: actix::Handler<M>,
    {
        self.addr()
            .await?
            .send(msg)
            .await
            .map_err(|_| SrError::Unavailable("the SR's actor"))
    }

    pub async fn info(&self) -> Result<SrView, SrError> {
        self.ask(Info).await?
    }

    pub async fn list(&self) -> Result<Vec<VdiView>, SrError> {
        self.ask(ListVdis).await
    }

    pub async fn get(&self, vdi: uuid::Uuid) -> Result<VdiView, SrError> {
        self.ask(GetVdi(vdi)).await?
    }

    pub async fn find(&self, key: &str) -> Result<Vec<uuid::Uuid>, SrError> {
        self.ask(FindVdi(key.to_owned())).await
    }

    pub async fn create(
        &self,
        name: String,
        size_mib: u64,
        format: Option<VdiFormat>,
    ) -> Result<uuid::Uuid, SrError> {
        self.ask(CreateVdi {
            name,
            size_mib,
            format,
        })
        .await?
    }

    pub async fn destroy(&self, vdi: uuid::Uuid) -> Result<(), SrError> {
        self.ask(DestroyVdi(vdi)).await?
    }

    pub async fn resize(&self, vdi: uuid::Uuid, size_mib: u64) -> Result<(), SrError> {
        self.ask(ResizeVdi { vdi, size_mib }).await?
    }

    pub async fn snapshot(
        &self,
        vdi: uuid::Uuid,
        name: Option<String>,
    ) -> Result<uuid::Uuid, SrError> {
        self.ask(Snapshot { vdi, name }).await?
    }

    pub async fn clone_vdi(
        &self,
        vdi: uuid::Uuid,
        name: Option<String>,
    ) -> Result<uuid::Uuid, SrError> {
        self.ask(CloneVdi { vdi, name }).await?
    }

    /// A new VDI copied from `source`.
    pub async fn copy_in(
        &self,
        name: String,
        format: Option<VdiFormat>,
        source: Source,
        job: Job,
    ) -> Result<uuid::Uuid, SrError> {
        self.ask(CopyIn {
            name,
            format,
            source,
            job,
        })
        .await?
    }

    /// Holds a VDI still while it is read; [`SrHandle::release`] ends it.
    pub async fn hold(&self, vdi: uuid::Uuid) -> Result<Lease, SrError> {
        self.ask(Hold(vdi)).await?
    }

    pub async fn release(&self, vdi: uuid::Uuid) {
        let _ = self.ask(Release(vdi)).await;
    }

    pub async fn attach(
        &self,
        vdi: uuid::Uuid,
        attachment: Attachment,
    ) -> Result<crate::vm::VdiDisk, SrError> {
        self.ask(Attach { vdi, attachment }).await?
    }

    pub async fn detach(&self, vdi: uuid::Uuid, vm: uuid::Uuid, device: String) {
        let _ = self.ask(Detach { vdi, vm, device }).await;
    }

    pub async fn reconcile(&self, all: Vec<(uuid::Uuid, Attachment)>) -> Result<(), SrError> {
        self.ask(Reconcile(all)).await
    }

    pub async fn activate(&self, vdi: uuid::Uuid, vm: uuid::Uuid) -> Result<ActiveVdi, SrError> {
        self.ask(Activate { vdi, vm }).await?
    }

    pub async fn deactivate(&self, vdi: uuid::Uuid, vm: uuid::Uuid) {
        let _ = self.ask(Deactivate { vdi, vm }).await;
    }

    pub async fn scan(&self) -> Result<ScanResult, SrError> {
        self.ask(Scan).await?
    }

    pub async fn dismantle(&self, keep_volumes: bool) -> Result<(), SrError> {
        self.ask(Dismantle { keep_volumes }).await?
    }
}
