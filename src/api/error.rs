//! API errors: a code from CONTRACT.md, a message, and details.

use serde::Serialize;

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
