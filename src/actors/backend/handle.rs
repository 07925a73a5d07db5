//! The typed handle to a running backend actor.

use actix::Addr;

use super::hotplug::HotplugError;
use super::messages::{DeviceStatus, Release, Unplug};
use super::state::BackendActor;
use crate::actors::child::ChildId;
use crate::actors::supervisor::SupervisorHandle;
use crate::xs::XenbusState;

/// What a backend request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("the device's backend actor is not running")]
    Unavailable,
    #[error(transparent)]
    Hotplug(#[from] HotplugError),
}

impl From<actix::MailboxError> for BackendError {
    fn from(_: actix::MailboxError) -> Self {
        BackendError::Unavailable
    }
}

/// A running device backend.
#[derive(Debug, Clone)]
pub struct BackendHandle {
    addr: Addr<BackendActor>,
}

impl BackendHandle {
    /// The backend `id` of a VM's supervisor, if it runs.
    pub async fn find(vm_sup: &SupervisorHandle, id: &ChildId) -> Option<BackendHandle> {
        match vm_sup.child::<BackendActor>(id.to_string()).await {
            Ok(Some(addr)) => Some(BackendHandle { addr }),
            _ => None,
        }
    }

    /// The backend's state as its actor last saw it, and the frontend's.
    pub async fn status(&self) -> Result<(XenbusState, XenbusState), BackendError> {
        Ok(self.addr.send(DeviceStatus).await?)
    }

    /// Closes the device with the guest (see [`Unplug`]).
    pub async fn unplug(&self) -> Result<bool, BackendError> {
        Ok(self.addr.send(Unplug).await??)
    }

    /// Releases the device of a domain that is going (see [`Release`]).
    pub async fn release(&self) -> Result<(), BackendError> {
        Ok(self.addr.send(Release).await??)
    }
}
