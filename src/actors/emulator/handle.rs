//! The typed handle to a VM's running emulator actor.

use super::messages::{InjectKill, Quit, Status};
use super::state::EmulatorActor;
use super::EmulatorStatus;
use crate::actors::child::{ChildHandle, ChildId};
use crate::actors::supervisor::SupervisorHandle;

/// What an emulator request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("the emulator actor is not running")]
    Unavailable,
    /// QEMU did not do it (it is gone, QMP did not answer...).
    #[error("{0}")]
    Failed(String),
}

impl From<actix::MailboxError> for EmulatorError {
    fn from(_: actix::MailboxError) -> Self {
        EmulatorError::Unavailable
    }
}

/// A VM's running device model.
#[derive(Debug, Clone)]
pub struct EmulatorHandle(ChildHandle<EmulatorActor>);

impl EmulatorHandle {
    /// The VM's emulator actor, if it runs.
    pub async fn find(vm_sup: &SupervisorHandle) -> Option<EmulatorHandle> {
        ChildHandle::find(vm_sup, &ChildId::Emulator)
            .await
            .map(EmulatorHandle)
    }

    /// QEMU's pid and run state (QMP `query-status`).
    pub async fn status(&self) -> Result<EmulatorStatus, EmulatorError> {
        self.0
            .addr()
            .send(Status)
            .await?
            .map_err(EmulatorError::Failed)
    }

    /// QMP `quit`, then QEMU is waited for (killed past a timeout).
    pub async fn quit(&self) -> Result<(), EmulatorError> {
        Ok(self.0.addr().send(Quit).await?)
    }

    /// Fault injection: SIGKILL to QEMU.
    pub async fn inject_kill(&self) -> Result<(), EmulatorError> {
        self.0
            .addr()
            .send(InjectKill)
            .await?
            .map_err(EmulatorError::Failed)
    }
}
