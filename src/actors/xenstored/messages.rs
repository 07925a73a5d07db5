//! Messages the xenstored actor answers.

use actix::Message;
use tokio::sync::mpsc;

use crate::xs::{ConnId, Outbound};
use crate::xs::{Packet, XsError};

/// Registers a connection.
#[derive(Debug)]
pub struct Connect {
    /// None: a privileged socket connection; Some: acting for that domain.
    pub domid: Option<u32>,
    pub outbound: mpsc::UnboundedSender<Outbound>,
    /// What is queued for it, for a socket connection.
    pub budget: Option<std::sync::Arc<super::OutBudget>>,
}

impl Message for Connect {
    type Result = Result<ConnId, XsError>;
}

/// The connection has gone.
#[derive(Debug)]
pub struct Disconnect(pub ConnId);

impl Message for Disconnect {
    type Result = ();
}

/// Requests from one connection, in order.
#[derive(Debug)]
pub struct Requests(pub ConnId, pub Vec<Packet>);

impl Message for Requests {
    type Result = ();
}
