//! The xenstored actor: owns the store (no lock around it). Connections
//! register an outbound channel; their requests arrive in batches and the
//! replies and watch events go back on that channel in order.

mod messages;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use actix::{Actor, AsyncContext, Context, Handler};
use tokio::sync::mpsc;

pub use messages::{Connect, Disconnect, Requests};

use super::slot::AddrSlot;
use super::supervisor::ChildSpec;
use crate::xenstored::{Out, Quota, Store};
use crate::xs::{ConnId, Outbound};
use crate::xs::{MsgType, Packet, XsError, HEADER_LEN};

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

/// Output queued for a socket connection and not yet written: what stops
/// a client that does not read its replies from costing memory without end
/// (as oxenstored and cxenstored bound theirs).
pub const OUT_SOFT_LIMIT: usize = 256 * 1024;
/// Past this, a watch event is not queued: the connection is dropped (a
/// watcher that falls this far behind has lost track anyway).
pub const OUT_HARD_LIMIT: usize = 1024 * 1024;

/// What a socket connection has queued and not yet written: the actor adds
/// to it, the connection's writer takes from it, its reader waits while it
/// is above [`OUT_SOFT_LIMIT`] (no more requests are read meanwhile). And
/// the requests it has handed the store and the store has not handled: one
/// batch at a time, so the reader cannot outrun the store either.
#[derive(Debug, Default)]
pub struct OutBudget {
    bytes: AtomicUsize,
    requests: AtomicUsize,
    drained: tokio::sync::Notify,
}

impl OutBudget {
    pub fn queued(&self) -> usize {
        self.bytes.load(Ordering::Acquire)
    }

    fn add(&self, n: usize) {
        self.bytes.fetch_add(n, Ordering::AcqRel);
    }

    /// `n` bytes were written.
    pub fn written(&self, n: usize) {
        let _ = self
            .bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                Some(b.saturating_sub(n))
            });
        self.drained.notify_waiters();
    }

    /// `n` requests go to the store.
    pub fn sent(&self, n: usize) {
        self.requests.fetch_add(n, Ordering::AcqRel);
    }

    /// The store handled `n` requests.
    fn handled(&self, n: usize) {
        let _ = self
            .requests
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| {
                Some(r.saturating_sub(n))
            });
        self.drained.notify_waiters();
    }

    /// Returns once the store has handled what it was sent and what is
    /// queued for the client is at most `limit`.
    pub async fn ready(&self, limit: usize) {
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if self.queued() <= limit && self.requests.load(Ordering::Acquire) == 0 {
                return;
            }
            drained.await;
        }
    }
}

/// A connection's way back.
#[derive(Debug)]
struct Outlet {
    tx: mpsc::UnboundedSender<Outbound>,
    /// Socket connections account for what they have queued.
    budget: Option<Arc<OutBudget>>,
}

/// The actor.
#[derive(Debug)]
pub struct XenstoredActor {
    store: Store,
    outbound: HashMap<ConnId, Outlet>,
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
        let mut scratch = std::mem::take(&mut self.scratch);
        for out in scratch.drain(..) {
            match out {
                Out::Send(conn, packet) => {
                    let Some(outlet) = self.outbound.get(&conn) else {
                        continue;
                    };
                    if let Some(budget) = &outlet.budget {
                        let size = HEADER_LEN + packet.payload.len();
                        let event = packet.ty == MsgType::WatchEvent as u32;
                        if event && budget.queued() + size > OUT_HARD_LIMIT {
                            tracing::warn!(
                                conn,
                                queued = budget.queued(),
                                "a xenstore client does not read its watch events: disconnected"
                            );
                            self.close(conn);
                            continue;
                        }
                        budget.add(size);
                    }
                    // A closed channel: the connection is going away.
                    let _ = outlet.tx.send(Outbound::Packet(packet));
                }
                Out::Close(conn) => {
                    if let Some(outlet) = self.outbound.remove(&conn) {
                        let _ = outlet.tx.send(Outbound::Close);
                    }
                }
            }
        }
        self.scratch = scratch;
    }

    /// Drops a connection: the store forgets it, its writer closes it.
    fn close(&mut self, conn: ConnId) {
        self.store.disconnect(conn);
        if let Some(outlet) = self.outbound.remove(&conn) {
            let _ = outlet.tx.send(Outbound::Close);
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
        self.outbound.insert(
            conn,
            Outlet {
                tx: msg.outbound,
                budget: msg.budget,
            },
        );
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
        if let Some(budget) = self.outbound.get(&conn).and_then(|o| o.budget.as_ref()) {
            budget.handled(packets.len());
        }
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
        self.connect_with(domid, None).await
    }

    /// Like [`connect`](Self::connect), accounting what is queued for the
    /// connection in `budget` (socket connections).
    pub async fn connect_with(
        &self,
        domid: Option<u32>,
        budget: Option<Arc<OutBudget>>,
    ) -> Result<(ConnId, mpsc::UnboundedReceiver<Outbound>), XenstoredError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let conn = self
            .addr()?
            .send(Connect {
                domid,
                outbound: tx,
                budget,
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
