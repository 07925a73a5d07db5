//! The tasks actor's state.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use actix::{Actor, AsyncContext, Context};

use super::messages::{TaskFailure, TaskStatus, TaskView};
use crate::actors::events::{EventBus, EventClass, EventKind};
use crate::actors::slot::AddrSlot;
use crate::actors::supervisor::ChildSpec;
use crate::drivers::storage::Job;

/// The most finished tasks kept.
pub const KEEP_FINISHED: usize = 1000;

/// How long a finished task is kept.
const KEEP_FOR: Duration = Duration::from_secs(3600);

/// How often running tasks' progress is published.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

#[derive(Debug)]
pub(super) struct Task {
    pub method: String,
    pub status: TaskStatus,
    pub job: Job,
    pub created: SystemTime,
    pub finished: Option<SystemTime>,
    pub result: Option<serde_json::Value>,
    pub error: Option<TaskFailure>,
    pub cancellable: bool,
    /// The progress last published.
    pub published: f64,
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

impl Task {
    pub fn view(&self, uuid: uuid::Uuid) -> TaskView {
        TaskView {
            uuid,
            method: self.method.clone(),
            status: self.status,
            progress: if self.status == TaskStatus::Success {
                1.0
            } else {
                self.job.progress()
            },
            created: rfc3339(self.created),
            finished: self.finished.map(rfc3339),
            result: self.result.clone(),
            error: self.error.clone(),
            cancellable: self.cancellable && !self.status.finished(),
        }
    }
}

/// The tasks actor.
#[derive(Debug)]
pub struct TasksActor {
    pub(super) tasks: BTreeMap<uuid::Uuid, Task>,
    /// Finished tasks, oldest first.
    pub(super) finished: VecDeque<(Instant, uuid::Uuid)>,
    pub(super) events: EventBus,
    slot: AddrSlot<TasksActor>,
}

impl TasksActor {
    pub fn spec(events: EventBus, slot: AddrSlot<TasksActor>) -> ChildSpec {
        ChildSpec::worker("tasks", move |_exit| {
            Ok(TasksActor {
                tasks: BTreeMap::new(),
                finished: VecDeque::new(),
                events: events.clone(),
                slot: slot.clone(),
            })
        })
    }

    pub(super) fn publish(&self, uuid: uuid::Uuid, kind: EventKind) {
        if let Some(task) = self.tasks.get(&uuid) {
            self.events
                .publish(EventClass::Task, uuid.to_string(), kind, || task.view(uuid));
        }
    }

    /// A task ended: kept for a while, then forgotten.
    pub(super) fn retire(&mut self, uuid: uuid::Uuid) {
        self.finished.push_back((Instant::now(), uuid));
        self.expire();
    }

    fn expire(&mut self) {
        while let Some((at, uuid)) = self.finished.front().copied() {
            if self.finished.len() <= KEEP_FINISHED && at.elapsed() < KEEP_FOR {
                break;
            }
            self.finished.pop_front();
            if self.tasks.remove(&uuid).is_some() {
                self.events.publish(
                    EventClass::Task,
                    uuid.to_string(),
                    EventKind::Del,
                    || serde_json::json!({ "uuid": uuid }),
                );
            }
        }
    }

    /// Publishes the progress of running tasks that moved.
    fn progress(&mut self) {
        let moved: Vec<uuid::Uuid> = self
            .tasks
            .iter_mut()
            .filter(|(_, t)| !t.status.finished())
            .filter_map(|(uuid, t)| {
                let p = t.job.progress();
                (p > t.published).then(|| {
                    t.published = p;
                    *uuid
                })
            })
            .collect();
        for uuid in moved {
            self.publish(uuid, EventKind::Mod);
        }
        self.expire();
    }
}

impl Actor for TasksActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.slot.publish(ctx.address());
        ctx.run_interval(PROGRESS_EVERY, |act, _ctx| act.progress());
    }
}
