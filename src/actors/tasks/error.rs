//! What task requests can fail with.

/// A task request failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TaskError {
    #[error("no task {0}")]
    NotFound(String),
    #[error("task {task} ({method}) cannot be cancelled: {why}")]
    NotCancellable {
        task: uuid::Uuid,
        method: String,
        why: &'static str,
    },
    #[error("the tasks actor is not running (it may be restarting)")]
    Unavailable,
}

impl From<actix::MailboxError> for TaskError {
    fn from(_: actix::MailboxError) -> Self {
        TaskError::Unavailable
    }
}
