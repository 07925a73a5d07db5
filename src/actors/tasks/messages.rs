//! Messages the tasks actor answers, and what it answers.

use actix::Message;
use serde::Serialize;

use super::TaskError;
use crate::drivers::storage::Job;

/// Where a task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    Pending,
    Success,
    Failure,
    Cancelling,
    Cancelled,
}

impl TaskStatus {
    pub fn finished(self) -> bool {
        matches!(self, Self::Success | Self::Failure | Self::Cancelled)
    }
}

/// How a task's work failed, in the wire's terms (the API turned its
/// error into this).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskFailure {
    pub code: String,
    pub message: String,
    pub details: Vec<String>,
}

/// A task as `task.get` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskView {
    pub uuid: uuid::Uuid,
    pub method: String,
    pub status: TaskStatus,
    pub progress: f64,
    /// RFC 3339, UTC.
    pub created: String,
    pub finished: Option<String>,
    pub result: Option<serde_json::Value>,
    pub error: Option<TaskFailure>,
    pub cancellable: bool,
}

/// Starts a task; answers its uuid and the job its work reports on.
#[derive(Debug)]
pub struct Begin {
    pub method: String,
    pub cancellable: bool,
}

impl Message for Begin {
    type Result = (uuid::Uuid, Job);
}

/// A task's work ended.
#[derive(Debug)]
pub struct Finish {
    pub task: uuid::Uuid,
    pub outcome: Result<serde_json::Value, TaskFailure>,
}

impl Message for Finish {
    type Result = ();
}

#[derive(Debug)]
pub struct Get(pub uuid::Uuid);

impl Message for Get {
    type Result = Option<TaskView>;
}

#[derive(Debug)]
pub struct List;

impl Message for List {
    type Result = Vec<TaskView>;
}

/// Asks a task's work to stop.
#[derive(Debug)]
pub struct Cancel(pub uuid::Uuid);

impl Message for Cancel {
    type Result = Result<TaskView, TaskError>;
}
