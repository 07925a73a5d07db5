//! The typed handle to the tasks actor.

use std::future::Future;

use super::messages::{Begin, Cancel, Finish, Get, List, TaskFailure, TaskView};
use super::state::TasksActor;
use super::TaskError;
use crate::actors::slot::AddrSlot;
use crate::drivers::storage::Job;

/// What the API and the storage actors hold of the tasks actor.
#[derive(Debug, Clone)]
pub struct TaskHandle {
    slot: AddrSlot<TasksActor>,
}

fn parse(key: &str) -> Result<uuid::Uuid, TaskError> {
    key.parse().map_err(|_| TaskError::NotFound(key.to_owned()))
}

impl TaskHandle {
    pub fn new(slot: AddrSlot<TasksActor>) -> Self {
        Self { slot }
    }

    fn addr(&self) -> Result<actix::Addr<TasksActor>, TaskError> {
        self.slot.get().ok_or(TaskError::Unavailable)
    }

    /// A new pending task; its work reports on the job.
    pub async fn begin(
        &self,
        method: &str,
        cancellable: bool,
    ) -> Result<(uuid::Uuid, Job), TaskError> {
        Ok(self
            .addr()?
            .send(Begin {
                method: method.to_owned(),
                cancellable,
            })
            .await?)
    }

    /// The task's work ended (a tasks actor that restarted since has
    /// forgotten it: nothing to record).
    pub async fn finish(&self, task: uuid::Uuid, outcome: Result<serde_json::Value, TaskFailure>) {
        if let Ok(addr) = self.addr() {
            let _ = addr.send(Finish { task, outcome }).await;
        }
    }

    /// Runs `work` as a task in the background; returns the task at once.
    pub async fn spawn<F, Fut>(
        &self,
        method: &str,
        cancellable: bool,
        work: F,
    ) -> Result<uuid::Uuid, TaskError>
    where
        F: FnOnce(Job) -> Fut,
        Fut: Future<Output = Result<serde_json::Value, TaskFailure>> + 'static,
    {
        let (task, job) = self.begin(method, cancellable).await?;
        let fut = work(job);
        let tasks = self.clone();
        actix::spawn(async move {
            let outcome = fut.await;
            tasks.finish(task, outcome).await;
        });
        Ok(task)
    }

    pub async fn get(&self, key: &str) -> Result<TaskView, TaskError> {
        let uuid = parse(key)?;
        self.addr()?
            .send(Get(uuid))
            .await?
            .ok_or_else(|| TaskError::NotFound(key.to_owned()))
    }

    pub async fn list(&self) -> Result<Vec<TaskView>, TaskError> {
        Ok(self.addr()?.send(List).await?)
    }

    pub async fn cancel(&self, key: &str) -> Result<TaskView, TaskError> {
        let uuid = parse(key)?;
        self.addr()?.send(Cancel(uuid)).await?
    }
}
