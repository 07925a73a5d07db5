//! The storage and task methods (`sr.*`, `vdi.*`, `task.*`) and their
//! parameters, parsed into [`Call::Storage`].

use std::path::PathBuf;

use rmpv::Value;
use serde::Deserialize;

use super::methods::params;
use crate::api::storage::{SrConfigFile, SrType, StorageCall, VdiFormat};
use crate::api::{ApiError, Call, ErrorCode};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SrCreateArgs {
    name: String,
    #[serde(rename = "type")]
    kind: SrType,
    #[serde(default)]
    config: SrConfigFile,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SrArg {
    sr: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OptSrArg {
    #[serde(default)]
    sr: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VdiArg {
    vdi: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VdiCreateArgs {
    sr: String,
    name: String,
    size_mib: u64,
    #[serde(default)]
    format: Option<VdiFormat>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VdiResizeArgs {
    vdi: String,
    size_mib: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VdiNameArgs {
    vdi: String,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VdiCopyArgs {
    vdi: String,
    sr: String,
    #[serde(default)]
    format: Option<VdiFormat>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VdiImportArgs {
    sr: String,
    path: PathBuf,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    format: Option<VdiFormat>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VdiExportArgs {
    vdi: String,
    path: PathBuf,
    #[serde(default)]
    format: Option<VdiFormat>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskArg {
    task: String,
}

/// A storage or task method's call.
pub fn parse_storage(method: &str, args: Value) -> Result<Call, ApiError> {
    use StorageCall as S;
    let call = match method {
        "sr.create" => params::<SrCreateArgs>(method, args).map(|a| S::SrCreate {
            name: a.name,
            kind: a.kind,
            config: a.config,
        }),
        "sr.list" => params::<NoParams>(method, args).map(|_| S::SrList),
        "sr.get" => params::<SrArg>(method, args).map(|a| S::SrGet(a.sr)),
        "sr.scan" => params::<SrArg>(method, args).map(|a| S::SrScan(a.sr)),
        "sr.destroy" => params::<SrArg>(method, args).map(|a| S::SrDestroy(a.sr)),
        "sr.forget" => params::<SrArg>(method, args).map(|a| S::SrForget(a.sr)),
        "vdi.create" => params::<VdiCreateArgs>(method, args).map(|a| S::VdiCreate {
            sr: a.sr,
            name: a.name,
            size_mib: a.size_mib,
            format: a.format,
        }),
        "vdi.list" => params::<OptSrArg>(method, args).map(|a| S::VdiList { sr: a.sr }),
        "vdi.get" => params::<VdiArg>(method, args).map(|a| S::VdiGet(a.vdi)),
        "vdi.destroy" => params::<VdiArg>(method, args).map(|a| S::VdiDestroy(a.vdi)),
        "vdi.resize" => params::<VdiResizeArgs>(method, args).map(|a| S::VdiResize {
            vdi: a.vdi,
            size_mib: a.size_mib,
        }),
        "vdi.snapshot" => params::<VdiNameArgs>(method, args).map(|a| S::VdiSnapshot {
            vdi: a.vdi,
            name: a.name,
        }),
        "vdi.clone" => params::<VdiNameArgs>(method, args).map(|a| S::VdiClone {
            vdi: a.vdi,
            name: a.name,
        }),
        "vdi.copy" => params::<VdiCopyArgs>(method, args).map(|a| S::VdiCopy {
            vdi: a.vdi,
            sr: a.sr,
            format: a.format,
            name: a.name,
        }),
        "vdi.import" => params::<VdiImportArgs>(method, args).map(|a| S::VdiImport {
            sr: a.sr,
            path: a.path,
            name: a.name,
            format: a.format,
        }),
        "vdi.export" => params::<VdiExportArgs>(method, args).map(|a| S::VdiExport {
            vdi: a.vdi,
            path: a.path,
            format: a.format,
        }),
        "task.list" => params::<NoParams>(method, args).map(|_| S::TaskList),
        "task.get" => params::<TaskArg>(method, args).map(|a| S::TaskGet(a.task)),
        "task.cancel" => params::<TaskArg>(method, args).map(|a| S::TaskCancel(a.task)),
        m => {
            return Err(ApiError::new(
                ErrorCode::UnknownMethod,
                format!("no method named {m:?}"),
            ))
        }
    };
    call.map(Call::Storage)
}
