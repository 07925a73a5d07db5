//! The task that drives a client's connection: it writes requests (all
//! that is queued, in one go), routes replies by req_id and watch events by
//! token, and, for a persistent client, establishes the connection again
//! when it is lost.

use std::collections::{HashMap, HashSet};

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot, watch};

use super::client::{nul, split, Cmd, Dial, Reply, Wire, XsClientError, XsLink};
use crate::xs::{MsgType, Outbound, Packet, XsError};

/// A watch the connection holds: its path, and where its events go.
struct Held {
    path: String,
    events: mpsc::UnboundedSender<String>,
}

/// What the connection's task keeps across connections.
#[derive(Default)]
struct Conn {
    pending: HashMap<u32, oneshot::Sender<Reply>>,
    watches: HashMap<Vec<u8>, Held>,
    /// Transactions opened on the current connection (a request in one that
    /// the connection no longer has fails at once).
    transactions: HashSet<u32>,
    /// Requests of transactions being opened, by req_id.
    opening: HashSet<u32>,
    next_id: u32,
    out: Vec<Packet>,
}

impl Conn {
    /// Queues a command for the connection.
    fn take(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Request { mut packet, reply } => {
                if packet.tx_id != 0 && !self.transactions.contains(&packet.tx_id) {
                    let _ = reply.send(Err(XsClientError::TransactionLost));
                    return;
                }
                if packet.ty == MsgType::TransactionEnd as u32 {
                    self.transactions.remove(&packet.tx_id);
                }
                self.next_id = self.next_id.wrapping_add(1).max(1);
                packet.req_id = self.next_id;
                if packet.ty == MsgType::TransactionStart as u32 {
                    self.opening.insert(self.next_id);
                }
                self.pending.insert(self.next_id, reply);
                self.out.push(packet);
            }
            Cmd::Watch {
                path,
                token,
                events,
            } => {
                self.watches.insert(token, Held { path, events });
            }
            Cmd::Forget { token } => {
                self.watches.remove(&token);
            }
        }
    }

    /// A packet from xenstored: a watch event or a reply.
    fn received(&mut self, p: Packet) {
        if p.ty == MsgType::WatchEvent as u32 {
            let mut parts = p.payload.split(|b| *b == 0);
            let (Some(path), Some(token)) = (parts.next(), parts.next()) else {
                return;
            };
            if let Some(held) = self.watches.get(token) {
                let _ = held.events.send(String::from_utf8_lossy(path).into_owned());
            }
        } else if let Some(reply) = self.pending.remove(&p.req_id) {
            if self.opening.remove(&p.req_id) {
                if let Some(id) = split(&p.payload).first().and_then(|s| s.parse().ok()) {
                    self.transactions.insert(id);
                }
            }
            let result = match p.as_error() {
                Some(e) => Err(XsClientError::Xs(e)),
                None if p.ty == MsgType::Error as u32 => Err(XsClientError::Xs(XsError::EIO)),
                None => Ok(p.payload),
            };
            let _ = reply.send(result);
        }
    }

    /// The connection is gone: what was in flight fails (as lost when the
    /// connection is to be established again, else as closed), the
    /// transactions are forgotten; the watches stay, to be registered again.
    fn lost(&mut self, again: bool) {
        for (_, reply) in self.pending.drain() {
            let _ = reply.send(Err(if again {
                XsClientError::Lost
            } else {
                XsClientError::Closed
            }));
        }
        self.transactions.clear();
        self.opening.clear();
        self.out.clear();
    }

    /// On a new connection: every watch registered again (replies ignored).
    fn rewatch(&mut self) {
        let watches: Vec<(String, Vec<u8>)> = self
            .watches
            .iter()
            .map(|(token, held)| (held.path.clone(), token.clone()))
            .collect();
        for (path, token) in watches {
            let mut payload = nul(&path);
            payload.extend_from_slice(&token);
            payload.push(0);
            let (reply, _) = oneshot::channel();
            self.take(Cmd::Request {
                packet: Packet::new(MsgType::Watch, 0, 0, payload),
                reply,
            });
        }
    }
}

/// The connection's task: writes requests (everything queued, in one go),
/// routes replies by req_id and watch events by token; with `redial`, it
/// establishes the connection again whenever it is lost.
pub(super) async fn drive(
    mut wire: Wire,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    redial: Option<Dial>,
    link: watch::Sender<XsLink>,
) {
    let mut c = Conn::default();
    'connection: loop {
        loop {
            let incoming = tokio::select! {
                cmd = cmds.recv() => {
                    let Some(first) = cmd else { break 'connection };
                    let mut next = Some(first);
                    while let Some(cmd) = next {
                        c.take(cmd);
                        next = cmds.try_recv().ok();
                    }
                    if !send(&mut wire, &mut c.out).await {
                        break;
                    }
                    continue;
                }
                packet = receive(&mut wire) => packet,
            };
            match incoming {
                Some(p) => c.received(p),
                None => break,
            }
        }
        if let Wire::Embedded(store, conn, _) = &wire {
            store.disconnect(*conn);
        }
        c.lost(redial.is_some());
        let Some(dial) = &redial else { break };
        link.send_modify(|l| l.connected = false);
        tracing::warn!("the xenstore connection was lost: establishing it again");
        let mut delay = std::time::Duration::from_millis(10);
        wire = loop {
            match dial.connect().await {
                Ok(w) => break w,
                Err(e) => {
                    let error = crate::error::chain(&e);
                    tracing::debug!(%error, "xenstore not back yet");
                }
            }
            // Commands meanwhile: requests wait for the connection (or fail
            // at once, for a transaction it lost).
            let wait = tokio::time::sleep(delay);
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    _ = &mut wait => break,
                    cmd = cmds.recv() => match cmd {
                        Some(cmd) => c.take(cmd),
                        None => break 'connection,
                    },
                }
            }
            delay = (delay * 2).min(std::time::Duration::from_secs(2));
        };
        c.rewatch();
        // What was queued while down goes out behind the watches.
        let queued = std::mem::take(&mut c.out);
        let (watches, requests): (Vec<Packet>, Vec<Packet>) = queued
            .into_iter()
            .partition(|p| p.ty == MsgType::Watch as u32 && p.tx_id == 0);
        c.out = watches;
        c.out.extend(requests);
        if !send(&mut wire, &mut c.out).await {
            continue 'connection;
        }
        link.send_modify(|l| {
            l.connected = true;
            l.reconnects += 1;
        });
        tracing::info!(
            reconnects = link.borrow().reconnects,
            "the xenstore connection is back"
        );
    }
    if let Wire::Embedded(store, conn, _) = &wire {
        store.disconnect(*conn);
    }
    link.send_modify(|l| l.connected = false);
    // Dropping `c` tells every waiter the connection closed.
}

async fn send(wire: &mut Wire, out: &mut Vec<Packet>) -> bool {
    match wire {
        Wire::Socket(wr, _) => {
            let mut buf = Vec::new();
            for p in out.drain(..) {
                p.encode_into(&mut buf);
            }
            wr.write_all(&buf).await.is_ok()
        }
        Wire::Embedded(store, conn, _) => store.send(*conn, std::mem::take(out)),
    }
}

async fn receive(wire: &mut Wire) -> Option<Packet> {
    match wire {
        Wire::Socket(_, rd) => rd.next().await.and_then(Result::ok),
        Wire::Embedded(_, _, rx) => match rx.recv().await {
            Some(Outbound::Packet(p)) => Some(p),
            Some(Outbound::Close) | None => None,
        },
    }
}
