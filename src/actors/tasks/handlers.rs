//! What the tasks actor does with its requests.

use std::time::SystemTime;

use actix::{Context, Handler, MessageResult};

use super::messages::{Begin, Cancel, Finish, Get, List, TaskStatus};
use super::state::{Task, TasksActor};
use super::TaskError;
use crate::actors::events::EventKind;
use crate::drivers::storage::Job;

impl Handler<Begin> for TasksActor {
    type Result = MessageResult<Begin>;

    fn handle(&mut self, msg: Begin, _ctx: &mut Context<Self>) -> Self::Result {
        let uuid = uuid::Uuid::new_v4();
        let job = Job::new();
        self.tasks.insert(
            uuid,
            Task {
                method: msg.method,
                status: TaskStatus::Pending,
                job: job.clone(),
                created: SystemTime::now(),
                finished: None,
                result: None,
                error: None,
                cancellable: msg.cancellable,
                published: 0.0,
            },
        );
        self.publish(uuid, EventKind::Add);
        MessageResult((uuid, job))
    }
}

impl Handler<Finish> for TasksActor {
    type Result = ();

    fn handle(&mut self, msg: Finish, _ctx: &mut Context<Self>) {
        // A task this incarnation does not know (the actor restarted since
        // it began): its caller still has its answer.
        let Some(task) = self.tasks.get_mut(&msg.task) else {
            return;
        };
        if task.status.finished() {
            return;
        }
        task.finished = Some(SystemTime::now());
        match msg.outcome {
            Ok(result) => {
                task.status = TaskStatus::Success;
                task.job.set_progress(1.0);
                task.result = Some(result);
            }
            Err(failure) => {
                task.status = if task.job.is_cancelled() {
                    TaskStatus::Cancelled
                } else {
                    TaskStatus::Failure
                };
                task.error = Some(failure);
            }
        }
        self.publish(msg.task, EventKind::Mod);
        self.retire(msg.task);
    }
}

impl Handler<Get> for TasksActor {
    type Result = Option<super::TaskView>;

    fn handle(&mut self, Get(uuid): Get, _ctx: &mut Context<Self>) -> Self::Result {
        self.tasks.get(&uuid).map(|t| t.view(uuid))
    }
}

impl Handler<List> for TasksActor {
    type Result = MessageResult<List>;

    fn handle(&mut self, _msg: List, _ctx: &mut Context<Self>) -> Self::Result {
        let mut all: Vec<_> = self.tasks.iter().map(|(u, t)| t.view(*u)).collect();
        all.sort_by(|a, b| a.created.cmp(&b.created).then(a.uuid.cmp(&b.uuid)));
        MessageResult(all)
    }
}

impl Handler<Cancel> for TasksActor {
    type Result = Result<super::TaskView, TaskError>;

    fn handle(&mut self, Cancel(uuid): Cancel, _ctx: &mut Context<Self>) -> Self::Result {
        let task = self
            .tasks
            .get_mut(&uuid)
            .ok_or_else(|| TaskError::NotFound(uuid.to_string()))?;
        if task.status.finished() {
            return Err(TaskError::NotCancellable {
                task: uuid,
                method: task.method.clone(),
                why: "it has finished",
            });
        }
        if !task.cancellable {
            return Err(TaskError::NotCancellable {
                task: uuid,
                method: task.method.clone(),
                why: "its work cannot be stopped part way (only copies, imports and exports can)",
            });
        }
        task.job.cancel();
        task.status = TaskStatus::Cancelling;
        let view = task.view(uuid);
        self.publish(uuid, EventKind::Mod);
        Ok(view)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::events::EventBus;
    use crate::actors::slot::AddrSlot;
    use crate::actors::tasks::{TaskFailure, TaskHandle};

    #[actix::test]
    async fn tasks_run_finish_fail_and_cancel() {
        let slot = AddrSlot::new();
        let tasks = TaskHandle::new(slot.clone());
        let spec = TasksActor::spec(EventBus::new(16), slot);
        let _root = crate::actors::supervisor::RootSupervisor::start(
            "t",
            crate::actors::supervisor::SupervisorFlags::new(
                crate::actors::supervisor::Strategy::OneForOne,
                3,
                std::time::Duration::from_secs(1),
            ),
            vec![spec],
        )
        .await
        .unwrap();
        let (ok, job) = tasks.begin("vdi.copy", true).await.unwrap();
        job.set_progress(0.5);
        let v = tasks.get(&ok.to_string()).await.unwrap();
        assert_eq!((v.status, v.progress), (TaskStatus::Pending, 0.5));
        tasks.finish(ok, Ok(serde_json::json!({"uuid": "x"}))).await;
        let v = tasks.get(&ok.to_string()).await.unwrap();
        assert_eq!((v.status, v.progress), (TaskStatus::Success, 1.0));
        assert!(v.finished.is_some() && !v.cancellable);
        assert!(tasks.cancel(&ok.to_string()).await.is_err(), "finished");

        let (c, job) = tasks.begin("vdi.copy", true).await.unwrap();
        let v = tasks.cancel(&c.to_string()).await.unwrap();
        assert_eq!(v.status, TaskStatus::Cancelling);
        assert!(job.is_cancelled());
        let failure = TaskFailure {
            code: "SR_BACKEND_ERROR".into(),
            message: "cancelled".into(),
            details: vec![],
        };
        tasks.finish(c, Err(failure)).await;
        assert_eq!(
            tasks.get(&c.to_string()).await.unwrap().status,
            TaskStatus::Cancelled
        );

        let (n, _job) = tasks.begin("vm.start", false).await.unwrap();
        let e = tasks.cancel(&n.to_string()).await.unwrap_err();
        assert!(matches!(e, TaskError::NotCancellable { .. }), "{e}");
        assert_eq!(tasks.list().await.unwrap().len(), 3);
        assert!(matches!(
            tasks.get("nope").await,
            Err(TaskError::NotFound(_))
        ));
    }
}
