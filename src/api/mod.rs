//! The one internal API every frontend (the RPC socket, the TLS listener,
//! the shell through them) goes through. Frontends parse their wire format
//! into calls on [`Api`]; `Api` drives the actors through their handles.

mod error;

use serde::Serialize;

pub use error::{ApiError, ErrorCode};

use crate::actors::host::{HostHandle, HostInfo};
use crate::actors::slot::AddrSlot;
use crate::actors::supervisor::{Supervisor, SupervisorHandle, TreeNode};

/// One operation, as a frontend parsed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    HostInfo,
    SupervisorTree,
}

/// What an operation returns (serialises as the inner value).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Reply {
    HostInfo(HostInfo),
    Tree(TreeNode),
}

/// xenith's operations, shared by all frontends.
#[derive(Debug, Clone)]
pub struct Api {
    host: HostHandle,
    root: AddrSlot<Supervisor>,
}

impl Api {
    pub fn new(host: HostHandle, root: AddrSlot<Supervisor>) -> Self {
        Self { host, root }
    }

    /// Runs one parsed call.
    pub async fn execute(&self, call: Call) -> Result<Reply, ApiError> {
        match call {
            Call::HostInfo => self.host_info().await.map(Reply::HostInfo),
            Call::SupervisorTree => self.supervisor_tree().await.map(Reply::Tree),
        }
    }

    /// `host.info`.
    pub async fn host_info(&self) -> Result<HostInfo, ApiError> {
        self.host.info().await.map_err(ApiError::internal)
    }

    /// `supervisor.tree`: the whole supervision tree.
    pub async fn supervisor_tree(&self) -> Result<TreeNode, ApiError> {
        let root =
            self.root.get().map(SupervisorHandle::from).ok_or_else(|| {
                ApiError::new(ErrorCode::InternalError, "the tree is still starting")
            })?;
        root.tree().await.map_err(ApiError::internal)
    }
}
