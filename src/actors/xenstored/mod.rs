//! The xenstored actor: owns the store (no lock around it). Connections
//! register an outbound channel; their requests arrive in batches and the
//! replies and watch events go back on that channel in order.

mod messages;

use std::collections::HashMap;

use actix::{Actor, AsyncContext, Context, Handler};
use tokio::sync::mpsc;

pub use messages::{Connect, Disconnect, Requests};

use super::slot::AddrSlot;
use super::supervisor::ChildSpec;
use crate::xenstored::{Out, Quota, Store};
use crate::xs::{ConnId, Outbound};
use crate::xs::{Packet, XsError};

/// What a xenstored request can fail with (outside the protocol's errors).
#[derive(Debug, thiserror::Error)]
pub enum XenstoredError {
    #[error("the xenstored actor is not running (it may be restarting)")]
    Unavailable,
    #[error("xenstored refused the connection: {0}")]
    Refused(XsError),
}

impl From<actix::MailboxError> for XenstoredError {
    fn from(_: actix::MailboxError) -> Self {
        XenstoredError::Unavailable
    }
}

/// The actor.
#[derive(Debug)]
pub struct XenstoredActor {
    store: Store,
    outbound: HashMap<ConnId, mpsc::UnboundedSender<Outbound>>,
    slot: AddrSlot<XenstoredActor>,
    scratch: Vec<Out>,
}

impl XenstoredActor {
    /// The child spec: a fresh, empty store at each (re)start.
    pub fn spec(quota: Quota, slot: AddrSlot<XenstoredActor>) -> ChildSpec {
        ChildSpec::worker("store", move |_exit| {
            Ok(XenstoredActor {
                store: Store::new(quota),
                outbound: HashMap::new(),
                slot: slot.clone(),
                scratch: Vec::new(),
            })
        })
    }

    fn deliver(&mut self) {
        for out in self.scratch.drain(..) {
            match out {
                Out::Send(conn, packet) => {
                    if let Some(tx) = self.outbound.get(&conn) {
                        // A closed channel: the connection is going away.
                        let _ = tx.send(Outbound::Packet(packet));
                    }
                }
                Out::Close(conn) => {
                    if let Some(tx) = self.outbound.remove(&conn) {
                        let _ = tx.send(Outbound::Close);
                    }
                }
            }
        }
    }
}

impl Actor for XenstoredActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(0); // unbounded: connections apply their own limits
        self.slot.publish(ctx.address());
    }
}

impl Handler<Connect> for XenstoredActor {
    type Result = Result<ConnId, XsError>;

    fn handle(&mut self, msg: Connect, _ctx: &mut Context<Self>) -> Self::Result {
        let conn = match msg.domid {
            None => self.store.connect_privileged(),
            Some(domid) => self.store.connect_domain(domid)?,
        };
        self.outbound.insert(conn, msg.outbound);
        Ok(conn)
    }
}

impl Handler<Disconnect> for XenstoredActor {
    type Result = ();

    fn handle(&mut self, Disconnect(conn): Disconnect, _ctx: &mut Context<Self>) {
        self.store.disconnect(conn);
        self.outbound.remove(&conn);
    }
}

impl Handler<Requests> for XenstoredActor {
    type Result = ();

    fn handle(&mut self, Requests(conn, packets): Requests, _ctx: &mut Context<Self>) {
        let mut scratch = std::mem::take(&mut self.scratch);
        for p in &packets {
            self.store.handle(conn, p, &mut scratch);
        }
        self.scratch = scratch;
        self.deliver();
    }
}

impl crate::drivers::xenstore::EmbeddedStore for XenstoredHandle {
    fn connect(
        &self,
        domid: Option<u32>,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<
                    Output = Result<(ConnId, mpsc::UnboundedReceiver<Outbound>), String>,
                > + Send,
        >,
    > {
        let this = self.clone();
        Box::pin(async move {
            XenstoredHandle::connect(&this, domid)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn send(&self, conn: ConnId, packets: Vec<Packet>) -> bool {
        XenstoredHandle::send(self, conn, packets).is_ok()
    }

    fn disconnect(&self, conn: ConnId) {
        XenstoredHandle::disconnect(self, conn);
    }
}

/// The typed handle to the xenstored actor.
#[derive(Debug, Clone)]
pub struct XenstoredHandle {
    slot: AddrSlot<XenstoredActor>,
}

impl XenstoredHandle {
    pub fn new(slot: AddrSlot<XenstoredActor>) -> Self {
        Self { slot }
    }

    fn addr(&self) -> Result<actix::Addr<XenstoredActor>, XenstoredError> {
        self.slot.get().ok_or(XenstoredError::Unavailable)
    }

    /// Opens a connection: privileged (a socket client, dom0) when `domid`
    /// is None, else acting for that (introduced) domain.
    pub async fn connect(
        &self,
        domid: Option<u32>,
    ) -> Result<(ConnId, mpsc::UnboundedReceiver<Outbound>), XenstoredError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let conn = self
            .addr()?
            .send(Connect {
                domid,
                outbound: tx,
            })
            .await?;
        conn.map(|c| (c, rx)).map_err(XenstoredError::Refused)
    }

    /// Sends requests of one connection (answered on its outbound channel).
    pub fn send(&self, conn: ConnId, packets: Vec<Packet>) -> Result<(), XenstoredError> {
        self.addr()?
            .try_send(Requests(conn, packets))
            .map_err(|_| XenstoredError::Unavailable)
    }

    pub fn disconnect(&self, conn: ConnId) {
        if let Ok(addr) = self.addr() {
            addr.do_send(Disconnect(conn));
        }
    }
}
