//! API errors: a code from CONTRACT.md, a message, and details; and the
//! one place where each layer's error becomes one (the API's edge).

use serde::Serialize;

use crate::actors::domain::VmError;
use crate::actors::host::HostError;
use crate::actors::inventory::InventoryError;
use crate::actors::storage::SrError;
use crate::actors::supervisor::SupervisorError;
use crate::actors::tasks::TaskError;
use crate::drivers::storage::StorageError;
use crate::drivers::xenstore::XsClientError;

/// The error codes of CONTRACT.md (RPC errors carry them by name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    InvalidParams,
    UnknownMethod,
    NotFound,
    AlreadyExists,
    VmBadPowerState,
    HostNotEnoughFreeMemory,
    OperationTimeout,
    NotAllowed,
    Unauthorized,
    XenstoreError,
    InternalError,
    /// A disk (a VDI, or a path) another VM holds (details: the disk, the VM).
    VdiInUse,
    /// Another operation is under way on the VM (details: the VM, the
    /// operation): refused, not queued.
    OtherOperationInProgress,
    /// The SR has not the room (details: the SR, needed MiB, free MiB).
    SrFull,
    /// A storage tool failed (details: the tool, its message).
    SrBackendError,
    /// The operation was cancelled (`task.cancel`) and undone.
    TaskCancelled,
}

impl ErrorCode {
    /// The code's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidParams => "INVALID_PARAMS",
            ErrorCode::UnknownMethod => "UNKNOWN_METHOD",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::AlreadyExists => "ALREADY_EXISTS",
            ErrorCode::VmBadPowerState => "VM_BAD_POWER_STATE",
            ErrorCode::HostNotEnoughFreeMemory => "HOST_NOT_ENOUGH_FREE_MEMORY",
            ErrorCode::OperationTimeout => "OPERATION_TIMEOUT",
            ErrorCode::NotAllowed => "NOT_ALLOWED",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::XenstoreError => "XENSTORE_ERROR",
            ErrorCode::InternalError => "INTERNAL_ERROR",
            ErrorCode::VdiInUse => "VDI_IN_USE",
            ErrorCode::OtherOperationInProgress => "OTHER_OPERATION_IN_PROGRESS",
            ErrorCode::SrFull => "SR_FULL",
            ErrorCode::SrBackendError => "SR_BACKEND_ERROR",
            ErrorCode::TaskCancelled => "TASK_CANCELLED",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An API error as clients see it: `{code, message, details}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub details: Vec<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: Vec::new(),
        }
    }

    pub fn with_details(mut self, details: Vec<String>) -> Self {
        self.details = details;
        self
    }

    /// An internal failure, with the whole chain of causes as the message.
    pub fn internal(error: impl std::error::Error) -> Self {
        Self::new(ErrorCode::InternalError, crate::error::chain(&error))
    }
}

impl From<VmError> for ApiError {
    fn from(e: VmError) -> Self {
        let message = crate::error::chain(&e);
        match e {
            VmError::BadPowerState {
                vm,
                state,
                expected,
                ..
            } => ApiError::new(ErrorCode::VmBadPowerState, message).with_details(vec![
                vm.to_string(),
                expected.name().to_owned(),
                state.name().to_owned(),
            ]),
            VmError::OtherOperation { vm, op } => {
                ApiError::new(ErrorCode::OtherOperationInProgress, message)
                    .with_details(vec![vm.to_string(), op.to_owned()])
            }
            VmError::StepTimeout { step, .. } => {
                ApiError::new(ErrorCode::OperationTimeout, message).with_details(vec![step])
            }
            VmError::NotConnected {
                device, reached, ..
            } => ApiError::new(ErrorCode::OperationTimeout, message)
                .with_details(vec![device, reached.name().to_owned()]),
            VmError::GuestTimeout { .. } => ApiError::new(ErrorCode::OperationTimeout, message)
                .with_details(vec!["wait for the guest's shutdown".into()]),
            VmError::NotEnoughMemory {
                needed_mib,
                free_mib,
            } => ApiError::new(ErrorCode::HostNotEnoughFreeMemory, message)
                .with_details(vec![needed_mib.to_string(), free_mib.to_string()]),
            VmError::InvalidParam { field, .. } => {
                ApiError::new(ErrorCode::InvalidParams, message).with_details(vec![field])
            }
            VmError::InvalidDevice(e) => {
                ApiError::new(ErrorCode::InvalidParams, message).with_details(vec![e.field])
            }
            VmError::DoesNotFit { .. } => {
                ApiError::new(ErrorCode::InvalidParams, message).with_details(vec!["spec".into()])
            }
            VmError::Unsupported(_) => ApiError::new(ErrorCode::InvalidParams, message),
            VmError::NoDevice { name, .. } => {
                ApiError::new(ErrorCode::NotFound, message).with_details(vec![name])
            }
            VmError::NotRunning { id, .. } => {
                ApiError::new(ErrorCode::NotFound, message).with_details(vec![id])
            }
            VmError::Removed => ApiError::new(ErrorCode::NotFound, message),
            VmError::NoSuspend { .. } => ApiError::new(ErrorCode::OperationTimeout, message),
            VmError::BadImage(_) => ApiError::new(ErrorCode::NotAllowed, message),
            VmError::Storage(e) => e.into(),
            VmError::DomainGone => {
                ApiError::new(ErrorCode::NotFound, message).with_details(vec!["domain".into()])
            }
            VmError::Step { .. } | VmError::Unavailable | VmError::Interrupted => {
                ApiError::new(ErrorCode::InternalError, message)
            }
        }
    }
}

impl From<InventoryError> for ApiError {
    fn from(e: InventoryError) -> Self {
        let message = crate::error::chain(&e);
        match e {
            InventoryError::NotFound(key) => {
                ApiError::new(ErrorCode::NotFound, message).with_details(vec![key])
            }
            InventoryError::NameTaken { name, .. } => {
                ApiError::new(ErrorCode::AlreadyExists, message).with_details(vec![name])
            }
            InventoryError::InvalidSpec(e) => ApiError::new(ErrorCode::InvalidParams, message)
                .with_details(vec![format!("spec.{}", e.field)]),
            InventoryError::DiskInUse { path, vm, .. } => {
                ApiError::new(ErrorCode::VdiInUse, message)
                    .with_details(vec![path.display().to_string(), vm])
            }
            InventoryError::Vm(e) => e.into(),
            InventoryError::Storage(e) => e.into(),
            InventoryError::Record(_)
            | InventoryError::Supervisor(_)
            | InventoryError::Unavailable => ApiError::new(ErrorCode::InternalError, message),
        }
    }
}

impl From<SrError> for ApiError {
    fn from(e: SrError) -> Self {
        let message = crate::error::chain(&e);
        match e {
            SrError::NotFound { key, .. } => {
                ApiError::new(ErrorCode::NotFound, message).with_details(vec![key])
            }
            SrError::Ambiguous { key, .. } => {
                ApiError::new(ErrorCode::InvalidParams, message).with_details(vec![key])
            }
            SrError::Invalid(e) => {
                ApiError::new(ErrorCode::InvalidParams, message).with_details(vec![e.field])
            }
            SrError::Param { field, .. } => {
                ApiError::new(ErrorCode::InvalidParams, message).with_details(vec![field])
            }
            SrError::InUse { vdi, vm, .. } => ApiError::new(ErrorCode::VdiInUse, message)
                .with_details(vec![vdi.to_string(), vm.to_string()]),
            SrError::HasChildren { vdi, children } => {
                let mut details = vec![vdi.to_string()];
                details.extend(children.iter().map(ToString::to_string));
                ApiError::new(ErrorCode::NotAllowed, message).with_details(details)
            }
            SrError::ReadOnly { vdi, .. } => {
                ApiError::new(ErrorCode::NotAllowed, message).with_details(vec![vdi.to_string()])
            }
            SrError::Busy { vdi, op } => {
                ApiError::new(ErrorCode::OtherOperationInProgress, message)
                    .with_details(vec![vdi.to_string(), op.to_owned()])
            }
            SrError::Full {
                sr,
                needed_mib,
                free_mib,
            } => ApiError::new(ErrorCode::SrFull, message).with_details(vec![
                sr.to_string(),
                needed_mib.to_string(),
                free_mib.to_string(),
            ]),
            SrError::NameTaken { name, .. } => {
                ApiError::new(ErrorCode::AlreadyExists, message).with_details(vec![name])
            }
            SrError::Backend(e) => e.into(),
            SrError::Record(_)
            | SrError::Pool(_)
            | SrError::Supervisor(_)
            | SrError::Unavailable(_) => ApiError::new(ErrorCode::InternalError, message),
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        let message = crate::error::chain(&e);
        let tool = match &e {
            StorageError::ToolMissing { tool, .. }
            | StorageError::Tool { tool, .. }
            | StorageError::Output { tool, .. } => *tool,
            StorageError::Cancelled => {
                return ApiError::new(
                    ErrorCode::TaskCancelled,
                    "cancelled: what had been copied was removed",
                );
            }
            StorageError::Io { .. } => "io",
            StorageError::Unsupported(_) | StorageError::Exists(_) => "xenith",
        };
        let said = match &e {
            StorageError::Tool { message, .. } | StorageError::Output { message, .. } => {
                message.clone()
            }
            other => other.to_string(),
        };
        ApiError::new(ErrorCode::SrBackendError, message).with_details(vec![tool.to_owned(), said])
    }
}

impl From<TaskError> for ApiError {
    fn from(e: TaskError) -> Self {
        let message = crate::error::chain(&e);
        match e {
            TaskError::NotFound(key) => {
                ApiError::new(ErrorCode::NotFound, message).with_details(vec![key])
            }
            TaskError::NotCancellable { task, .. } => {
                ApiError::new(ErrorCode::NotAllowed, message).with_details(vec![task.to_string()])
            }
            TaskError::Unavailable => ApiError::new(ErrorCode::InternalError, message),
        }
    }
}

impl From<HostError> for ApiError {
    fn from(e: HostError) -> Self {
        ApiError::internal(e)
    }
}

impl From<SupervisorError> for ApiError {
    fn from(e: SupervisorError) -> Self {
        ApiError::internal(e)
    }
}

/// A xenstore request on `path` failed: xenstored's own errors are
/// XENSTORE_ERROR with the error's name (ENOENT, EACCES...) in details.
pub fn xs_error(path: &str, e: XsClientError) -> ApiError {
    match e {
        XsClientError::Xs(x) => {
            ApiError::new(ErrorCode::XenstoreError, format!("{path}: {}", x.as_str()))
                .with_details(vec![x.as_str().to_owned()])
        }
        other => ApiError::internal(other),
    }
}
