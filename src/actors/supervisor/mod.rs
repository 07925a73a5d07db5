//! An Erlang/OTP-style supervision tree on actix.
//!
//! actix 0.13 drops an actor whose handler panics, and its own `Supervisor`
//! neither notices why nor offers strategies. Here each child runs inside a
//! runner future owned by its supervisor: the runner catches the panic (with
//! its message), asks the actor to stop, or drops it by force, and reports
//! the exit reason. On that the supervisor applies OTP's rules:
//!
//! - restart types: permanent (always restarted), transient (after an
//!   abnormal exit), temporary (never);
//! - strategies: one_for_one, one_for_all, rest_for_one;
//! - intensity: more than `max_restarts` in `period` and the supervisor stops
//!   its children in reverse order and exits with an error, which its own
//!   parent handles by its own rules (escalation);
//! - ordered start (a failed start fails the supervisor's start, with the
//!   reason) and reverse-order shutdown, each child within its timeout, then
//!   dropped by force;
//! - dynamic children, nested supervisors, and a snapshot of the tree.
//!
//! Children run on their supervisor's arbiter unless their spec names
//! another. A child whose supervisor disappears without stopping it is
//! dropped (the control channel closing is the OTP link).

mod handle;
mod handlers;
mod messages;
mod runner;
mod spec;
mod state;
mod tree;

pub use handle::{RootSupervisor, SupervisorHandle};
pub use messages::{ChildAddr, CountChildren, GetTree, RemoveChild, StartChild};
pub use runner::Started;
pub use spec::{
    ChildKind, ChildSpec, ExitReason, ExitSlot, Restart, Shutdown, StartError, Strategy,
    SupervisorFlags, DEFAULT_SUPERVISOR_SHUTDOWN, DEFAULT_WORKER_SHUTDOWN,
};
pub use state::Supervisor;
pub use tree::{ChildCount, TreeNode};

/// What a supervisor operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("a child named {0} already exists")]
    AlreadyExists(String),
    #[error("no child named {0}")]
    NotFound(String),
    #[error("child {id} failed to start")]
    StartFailed {
        id: String,
        #[source]
        source: StartError,
    },
    #[error("the supervisor is shutting down")]
    ShuttingDown,
    #[error("the supervisor is not running")]
    Unavailable,
}

impl From<actix::MailboxError> for SupervisorError {
    fn from(_: actix::MailboxError) -> Self {
        SupervisorError::Unavailable
    }
}
