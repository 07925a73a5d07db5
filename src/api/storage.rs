//! The storage and task calls of the API (`sr.*`, `vdi.*`, `task.*`): each
//! goes to the storage handle or the tasks handle, and its answer is shaped
//! into the wire's types here. Copies, imports and exports always run as
//! tasks (a caller that did not ask `async` waits for its task's end), so
//! that `task.list` shows them and `task.cancel` stops them.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Api, ApiError, Reply};
use crate::actors::storage::{ScanResult, SrView, VdiView};
use crate::actors::tasks::{Job, TaskFailure, TaskView};
pub use crate::storage::{SrConfigFile, SrType, VdiFormat};

/// One storage call, as a frontend parsed it.
#[derive(Debug, Clone)]
pub enum StorageCall {
    SrCreate {
        name: String,
        kind: SrType,
        config: SrConfigFile,
    },
    SrList,
    SrGet(String),
    SrScan(String),
    SrDestroy(String),
    SrForget(String),
    VdiCreate {
        sr: String,
        name: String,
        size_mib: u64,
        format: Option<VdiFormat>,
    },
    VdiList {
        sr: Option<String>,
    },
    VdiGet(String),
    VdiDestroy(String),
    VdiResize {
        vdi: String,
        size_mib: u64,
    },
    VdiSnapshot {
        vdi: String,
        name: Option<String>,
    },
    VdiClone {
        vdi: String,
        name: Option<String>,
    },
    VdiCopy {
        vdi: String,
        sr: String,
        format: Option<VdiFormat>,
        name: Option<String>,
    },
    VdiImport {
        sr: String,
        path: PathBuf,
        name: Option<String>,
        format: Option<VdiFormat>,
    },
    VdiExport {
        vdi: String,
        path: PathBuf,
        format: Option<VdiFormat>,
    },
    TaskList,
    TaskGet(String),
    TaskCancel(String),
}

impl StorageCall {
    /// The method's name, and what it names (for the audit line); None
    /// for a read.
    pub fn audited(&self) -> Option<(&'static str, String)> {
        Some(match self {
            StorageCall::SrCreate { name, .. } => ("sr.create", name.clone()),
            StorageCall::SrScan(k) => ("sr.scan", k.clone()),
            StorageCall::SrDestroy(k) => ("sr.destroy", k.clone()),
            StorageCall::SrForget(k) => ("sr.forget", k.clone()),
            StorageCall::VdiCreate { sr, name, .. } => ("vdi.create", format!("{sr}/{name}")),
            StorageCall::VdiDestroy(k) => ("vdi.destroy", k.clone()),
            StorageCall::VdiResize { vdi, .. } => ("vdi.resize", vdi.clone()),
            StorageCall::VdiSnapshot { vdi, .. } => ("vdi.snapshot", vdi.clone()),
            StorageCall::VdiClone { vdi, .. } => ("vdi.clone", vdi.clone()),
            StorageCall::VdiCopy { vdi, sr, .. } => ("vdi.copy", format!("{vdi} -> {sr}")),
            StorageCall::VdiImport { sr, path, .. } => {
                ("vdi.import", format!("{} -> {sr}", path.display()))
            }
            StorageCall::VdiExport { vdi, path, .. } => {
                ("vdi.export", format!("{vdi} -> {}", path.display()))
            }
            StorageCall::TaskCancel(k) => ("task.cancel", k.clone()),
            StorageCall::SrList
            | StorageCall::SrGet(_)
            | StorageCall::VdiList { .. }
            | StorageCall::VdiGet(_)
            | StorageCall::TaskList
            | StorageCall::TaskGet(_) => return None,
        })
    }

    /// Whether it is a long operation (a cancellable task).
    pub fn is_long(&self) -> bool {
        self.long().is_some()
    }

    /// The long operations: run as cancellable tasks.
    fn long(&self) -> Option<&'static str> {
        match self {
            StorageCall::VdiCopy { .. } => Some("vdi.copy"),
            StorageCall::VdiImport { .. } => Some("vdi.import"),
            StorageCall::VdiExport { .. } => Some("vdi.export"),
            _ => None,
        }
    }
}

/// `sr.list` entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SrSummary {
    pub uuid: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub size_mib: u64,
    pub free_mib: u64,
    /// How many VDIs it holds.
    pub vdis: usize,
    /// Why it cannot be reached, if it cannot (an extension of the contract).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
}

/// `sr.get`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SrInfo {
    pub uuid: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub config: serde_json::Value,
    pub size_mib: u64,
    pub free_mib: u64,
    pub vdis: Vec<NameRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameRef {
    pub uuid: String,
    pub name: String,
}

/// `vdi.list` entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VdiSummary {
    pub uuid: String,
    pub name: String,
    pub sr: String,
    pub format: String,
    pub size_mib: u64,
    /// Extensions of the contract.
    pub read_only: bool,
    #[serde(default)]
    pub snapshot_of: Option<String>,
    #[serde(default)]
    pub attached: usize,
}

/// A VM's use of a VDI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachedTo {
    pub vm: String,
    pub device: String,
    /// "rw" or "ro".
    pub mode: String,
}

/// `vdi.get`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VdiInfo {
    pub uuid: String,
    pub name: String,
    pub sr: String,
    pub format: String,
    pub size_mib: u64,
    pub physical_mib: Option<u64>,
    pub read_only: bool,
    pub snapshot_of: Option<String>,
    pub parent: Option<String>,
    pub attached: Vec<AttachedTo>,
    /// Extensions of the contract: its file or LV in the SR, whether
    /// `sr.scan` adopted it, whether its volume is missing, how many
    /// running VMs use it now, the operation under way.
    pub location: String,
    pub adopted: bool,
    pub missing: bool,
    pub active: usize,
    #[serde(default)]
    pub pending: Option<String>,
}

/// `sr.scan`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanInfo {
    pub added: Vec<NameRef>,
    pub missing: Vec<NameRef>,
    /// Extension: volumes changed behind xenith's back.
    pub changed: Vec<NameRef>,
}

/// `task.list` entries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSummary {
    pub uuid: String,
    pub method: String,
    pub status: String,
    pub progress: f64,
}

/// `task.get`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskInfo {
    pub uuid: String,
    pub method: String,
    pub status: String,
    pub progress: f64,
    pub created: String,
    pub finished: Option<String>,
    pub result: Option<serde_json::Value>,
    pub error: Option<serde_json::Value>,
    /// Extension: whether `task.cancel` can stop it now.
    pub cancellable: bool,
}

fn task_info(t: TaskView) -> TaskInfo {
    let status = serde_json::to_value(t.status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    TaskInfo {
        uuid: s(t.uuid),
        method: t.method,
        status,
        progress: t.progress,
        created: t.created,
        finished: t.finished,
        result: t.result,
        error: t.error.and_then(|e| serde_json::to_value(e).ok()),
        cancellable: t.cancellable,
    }
}

fn s<T: ToString>(v: T) -> String {
    v.to_string()
}

fn sr_summary(v: SrView) -> SrSummary {
    SrSummary {
        uuid: s(v.uuid),
        name: v.name,
        kind: v.kind.as_str().to_owned(),
        size_mib: v.size_mib,
        free_mib: v.free_mib,
        vdis: v.vdis.len(),
        fault: v.fault,
    }
}

fn sr_info(v: SrView) -> SrInfo {
    SrInfo {
        uuid: s(v.uuid),
        name: v.name,
        kind: v.kind.as_str().to_owned(),
        config: serde_json::to_value(&v.config).unwrap_or(serde_json::Value::Null),
        size_mib: v.size_mib,
        free_mib: v.free_mib,
        vdis: v
            .vdis
            .into_iter()
            .map(|r| NameRef {
                uuid: s(r.uuid),
                name: r.name,
            })
            .collect(),
        fault: v.fault,
    }
}

fn vdi_summary(v: VdiView) -> VdiSummary {
    VdiSummary {
        uuid: s(v.uuid),
        name: v.name,
        sr: s(v.sr),
        format: v.format.as_str().to_owned(),
        size_mib: v.size_mib,
        read_only: v.read_only,
        snapshot_of: v.snapshot_of.map(s),
        attached: v.attached.len(),
    }
}

fn vdi_info(v: VdiView) -> VdiInfo {
    VdiInfo {
        uuid: s(v.uuid),
        name: v.name,
        sr: s(v.sr),
        format: v.format.as_str().to_owned(),
        size_mib: v.size_mib,
        physical_mib: v.physical_mib,
        read_only: v.read_only,
        snapshot_of: v.snapshot_of.map(s),
        parent: v.parent.map(s),
        attached: v
            .attached
            .into_iter()
            .map(|a| AttachedTo {
                vm: s(a.vm),
                device: a.device,
                mode: if a.writable { "rw" } else { "ro" }.into(),
            })
            .collect(),
        location: v.location,
        adopted: v.adopted,
        missing: v.missing,
        active: v.active,
        pending: v
            .pending
            .and_then(|p| serde_json::to_value(p).ok())
            .and_then(|p| p.get("op").and_then(|o| o.as_str()).map(str::to_owned)),
    }
}

fn refs(r: Vec<crate::actors::storage::VdiRef>) -> Vec<NameRef> {
    r.into_iter()
        .map(|r| NameRef {
            uuid: s(r.uuid),
            name: r.name,
        })
        .collect()
}

fn scan_info(r: ScanResult) -> ScanInfo {
    ScanInfo {
        added: refs(r.added),
        missing: refs(r.missing),
        changed: refs(r.changed),
    }
}

fn task_summary(t: TaskView) -> TaskSummary {
    let status = serde_json::to_value(t.status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    TaskSummary {
        uuid: s(t.uuid),
        method: t.method,
        status,
        progress: t.progress,
    }
}

/// How a task's work failed, for its record.
pub(super) fn failure(e: &ApiError) -> TaskFailure {
    TaskFailure {
        code: e.code.as_str().to_owned(),
        message: e.message.clone(),
        details: e.details.clone(),
    }
}

/// A reply as a task keeps it.
pub(super) fn task_result(r: Result<Reply, ApiError>) -> Result<serde_json::Value, TaskFailure> {
    match r {
        Ok(reply) => serde_json::to_value(reply).map_err(|e| TaskFailure {
            code: "INTERNAL_ERROR".into(),
            message: e.to_string(),
            details: vec![],
        }),
        Err(e) => Err(failure(&e)),
    }
}

impl Api {
    /// Runs a storage call. A long one runs as a task: `asynchronous`
    /// answers the task at once, else its end is awaited.
    pub(super) async fn storage_call(
        &self,
        call: StorageCall,
        asynchronous: bool,
    ) -> Result<Reply, ApiError> {
        if let Some(method) = call.long() {
            let api = self.clone();
            let (tx, rx) = tokio::sync::oneshot::channel();
            let task = self
                .inner
                .tasks
                .spawn(method, true, move |job| async move {
                    let r = api.storage_work(call, job).await;
                    let out = task_result(r.clone());
                    let _ = tx.send(r);
                    out
                })
                .await?;
            if asynchronous {
                return Ok(Reply::Task { task: s(task) });
            }
            return rx.await.unwrap_or_else(|_| {
                Err(ApiError::new(
                    super::ErrorCode::InternalError,
                    format!("task {task} ended without an answer (the daemon is stopping)"),
                ))
            });
        }
        self.storage_work(call, Job::new()).await
    }

    async fn storage_work(&self, call: StorageCall, job: Job) -> Result<Reply, ApiError> {
        let st = &self.inner.storage;
        let created = |u: uuid::Uuid| Reply::Created { uuid: s(u) };
        Ok(match call {
            StorageCall::SrCreate { name, kind, config } => {
                created(st.sr_create(name, kind, config).await?)
            }
            StorageCall::SrList => {
                Reply::SrList(st.sr_list().await?.into_iter().map(sr_summary).collect())
            }
            StorageCall::SrGet(k) => Reply::Sr(Box::new(sr_info(st.sr_get(&k).await?))),
            StorageCall::SrScan(k) => Reply::Scan(scan_info(st.sr_scan(&k).await?)),
            StorageCall::SrDestroy(k) => {
                st.sr_destroy(&k).await?;
                Reply::Done {}
            }
            StorageCall::SrForget(k) => {
                st.sr_forget(&k).await?;
                Reply::Done {}
            }
            StorageCall::VdiCreate {
                sr,
                name,
                size_mib,
                format,
            } => created(st.vdi_create(&sr, name, size_mib, format).await?),
            StorageCall::VdiList { sr } => Reply::VdiList(
                st.vdi_list(sr.as_deref())
                    .await?
                    .into_iter()
                    .map(vdi_summary)
                    .collect(),
            ),
            StorageCall::VdiGet(k) => Reply::Vdi(Box::new(vdi_info(st.vdi_get(&k).await?))),
            StorageCall::VdiDestroy(k) => {
                st.vdi_destroy(&k).await?;
                Reply::Done {}
            }
            StorageCall::VdiResize { vdi, size_mib } => {
                st.vdi_resize(&vdi, size_mib).await?;
                Reply::Done {}
            }
            StorageCall::VdiSnapshot { vdi, name } => created(st.vdi_snapshot(&vdi, name).await?),
            StorageCall::VdiClone { vdi, name } => created(st.vdi_clone(&vdi, name).await?),
            StorageCall::VdiCopy {
                vdi,
                sr,
                format,
                name,
            } => created(st.vdi_copy(&vdi, &sr, format, name, job).await?),
            StorageCall::VdiImport {
                sr,
                path,
                name,
                format,
            } => created(st.vdi_import(&sr, &path, name, format, job).await?),
            StorageCall::VdiExport { vdi, path, format } => {
                st.vdi_export(&vdi, &path, format, job).await?;
                Reply::Done {}
            }
            StorageCall::TaskList => Reply::TaskList(
                self.inner
                    .tasks
                    .list()
                    .await?
                    .into_iter()
                    .map(task_summary)
                    .collect(),
            ),
            StorageCall::TaskGet(k) => {
                Reply::TaskView(Box::new(task_info(self.inner.tasks.get(&k).await?)))
            }
            StorageCall::TaskCancel(k) => {
                Reply::TaskView(Box::new(task_info(self.inner.tasks.cancel(&k).await?)))
            }
        })
    }
}
