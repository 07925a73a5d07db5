//! The tasks actor: every long operation (`vdi.copy`, `vdi.import`,
//! `vdi.export`, and any method called with `async: true`) is a task with a
//! status, a progress (0 to 1, read from the work itself: bytes copied,
//! qemu-img's own count) and, once it ends, a result or an error. A task
//! whose work can stop is cancellable: `task.cancel` tells the work (its
//! [`Job`]), which stops and undoes what it had begun.
//!
//! Tasks live in memory (as XAPI's do): a daemon restart forgets them, and
//! the work they ran was undone or finished by its owner's recovery.
//! Finished tasks are kept an hour (at most [`KEEP_FINISHED`] of them).
//! Each change is a `task` event; progress is published as it moves.

mod error;
mod handle;
mod handlers;
mod messages;
mod state;

pub use error::TaskError;
pub use handle::TaskHandle;
pub use messages::{TaskFailure, TaskStatus, TaskView};
pub use state::{TasksActor, KEEP_FINISHED};

pub use crate::drivers::storage::Job;
