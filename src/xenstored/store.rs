//! The store: the tree, connections, domains, watches and transactions,
//! and the handling of every request. Synchronous and single-owner: the
//! xenstored actor owns one `Store` and feeds it requests in order.

use std::collections::HashMap;
use std::sync::Arc;

use super::tree::{dom0_only, SharedPerms, Tree, ROOT};
use super::txn::Txn;
use super::watch::{Watch, Watches};
use crate::xs::path::{domain_path, relative_to, XsPath};
use crate::xs::{
    parse_request, ConnId, MsgType, Packet, Perm, PermLetter, Request, XsError, PAYLOAD_MAX,
};

/// The first domain id that names no domain (xen.h's DOMID_FIRST_RESERVED).
const DOMID_FIRST_RESERVED: u32 = 0x7ff0;

/// Per-domain limits for unprivileged domains (the C daemon's defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub nodes: usize,
    pub watches: usize,
    pub transactions: usize,
    pub node_size: usize,
    pub outstanding: usize,
    pub transaction_nodes: usize,
    pub perms: usize,
}

impl Default for Quota {
    fn default() -> Self {
        Self {
            nodes: 1000,
            watches: 128,
            transactions: 10,
            node_size: 2048,
            outstanding: 20,
            transaction_nodes: 1024,
            perms: 5,
        }
    }
}

/// What handling a request produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    /// A packet for a connection (a reply or a watch event).
    Send(ConnId, Packet),
    /// The connection's domain was released: close it.
    Close(ConnId),
}

/// Who is asking, for permission checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Who {
    pub domid: u32,
    pub privileged: bool,
    pub target: Option<u32>,
}

impl Who {
    /// The letter this requester gets on a node with `perms`.
    pub fn perm(&self, perms: &[Perm]) -> PermLetter {
        if self.privileged {
            return PermLetter::Both;
        }
        let me = |d: u32| d == self.domid || Some(d) == self.target;
        match perms.split_first() {
            None => PermLetter::None,
            Some((owner, _)) if me(owner.domid) => PermLetter::Both,
            Some((owner, acl)) => acl
                .iter()
                .find(|p| me(p.domid))
                .map_or(owner.letter, |p| p.letter),
        }
    }

    pub fn is_owner(&self, perms: &[Perm]) -> bool {
        self.privileged
            || perms
                .first()
                .is_some_and(|o| o.domid == self.domid || Some(o.domid) == self.target)
    }
}

#[derive(Debug)]
pub(crate) struct Conn {
    pub domid: u32,
    pub privileged: bool,
    pub home: String,
    pub txns: HashMap<u32, Txn>,
    pub next_tx: u32,
}

#[derive(Debug, Default)]
pub(crate) struct Domain {
    pub target: Option<u32>,
    pub conns: Vec<ConnId>,
}

/// The whole xenstore state.
#[derive(Debug)]
pub struct Store {
    pub(crate) tree: Tree,
    pub(crate) generation: u64,
    pub(crate) conns: HashMap<ConnId, Conn>,
    /// Introduced domains (dom0 counts as introduced always).
    pub(crate) domains: HashMap<u32, Domain>,
    pub(crate) watches: Watches,
    pub(crate) special_perms: HashMap<&'static str, SharedPerms>,
    /// Nodes owned per domain (for the node quota and release).
    pub(crate) owned: HashMap<u32, usize>,
    pub(crate) quota: Quota,
    next_conn: ConnId,
}

pub(crate) const INTRODUCE_DOMAIN: &str = "@introduceDomain";
pub(crate) const RELEASE_DOMAIN: &str = "@releaseDomain";

impl Store {
    /// A store holding /, /tool and /tool/xenstored, with the special
    /// @introduceDomain and @releaseDomain nodes (perms n0).
    pub fn new(quota: Quota) -> Self {
        let mut tree = Tree::new();
        let tool = tree.add_child(ROOT, "tool", b"", dom0_only(), 1);
        tree.add_child(tool, "xenstored", b"", dom0_only(), 2);
        let mut owned = HashMap::new();
        owned.insert(0, tree.len());
        Self {
            tree,
            generation: 2,
            conns: HashMap::new(),
            domains: HashMap::new(),
            watches: Watches::default(),
            special_perms: [
                (INTRODUCE_DOMAIN, dom0_only()),
                (RELEASE_DOMAIN, dom0_only()),
            ]
            .into(),
            owned,
            quota,
            next_conn: 1,
        }
    }

    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.tree.len()
    }

    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    pub(crate) fn next_generation(&mut self) -> u64 {
        self.generation += 1;
        self.generation
    }

    /// A privileged connection, as a socket client (dom0) gets.
    pub fn connect_privileged(&mut self) -> ConnId {
        self.add_conn(0, true)
    }

    /// A connection acting for domain `domid`, with that domain's
    /// permissions and quotas; the domain must have been introduced.
    pub fn connect_domain(&mut self, domid: u32) -> Result<ConnId, XsError> {
        if domid == 0 {
            return Ok(self.add_conn(0, true));
        }
        if !self.domains.contains_key(&domid) {
            return Err(XsError::ENOENT);
        }
        let id = self.add_conn(domid, false);
        if let Some(d) = self.domains.get_mut(&domid) {
            d.conns.push(id);
        }
        Ok(id)
    }

    fn add_conn(&mut self, domid: u32, privileged: bool) -> ConnId {
        let id = self.next_conn;
        self.next_conn += 1;
        let conn = Conn {
            domid,
            privileged,
            home: domain_path(domid),
            txns: HashMap::new(),
            next_tx: 1,
        };
        self.conns.insert(id, conn);
        id
    }

    /// Forgets a connection: its watches and open transactions go with it.
    pub fn disconnect(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.remove(&conn) {
            if let Some(d) = self.domains.get_mut(&c.domid) {
                d.conns.retain(|x| *x != conn);
            }
        }
        self.watches.remove_conn(conn);
    }

    pub(crate) fn who(&self, conn: ConnId) -> Option<Who> {
        let c = self.conns.get(&conn)?;
        let target = self.domains.get(&c.domid).and_then(|d| d.target);
        Some(Who {
            domid: c.domid,
            privileged: c.privileged,
            target,
        })
    }

    /// Handles one request from `conn`; replies and the watch events it
    /// causes go to `out` (the reply first).
    pub fn handle(&mut self, conn: ConnId, p: &Packet, out: &mut Vec<Out>) {
        let Some(who) = self.who(conn) else { return };
        // The protocol's limit, for clients in process too (the socket's
        // codec drops a connection that sends more).
        if p.payload.len() > PAYLOAD_MAX {
            out.push(Out::Send(conn, p.error(XsError::E2BIG)));
            return;
        }
        let mut events = Vec::new();
        let reply = match parse_request(p) {
            Ok(req) => match self.dispatch(conn, who, p, req, &mut events) {
                Ok(Reply::Ok) => p.ok(),
                Ok(Reply::Data(data)) => {
                    p.reply(MsgType::from_u32(p.ty).unwrap_or(MsgType::Error), data)
                }
                Err(e) => p.error(e),
            },
            Err(e) => p.error(e),
        };
        out.push(Out::Send(conn, reply));
        out.append(&mut events);
    }

    fn dispatch(
        &mut self,
        conn: ConnId,
        who: Who,
        p: &Packet,
        req: Request,
        ev: &mut Vec<Out>,
    ) -> Result<Reply, XsError> {
        let home = self
            .conns
            .get(&conn)
            .map(|c| c.home.clone())
            .ok_or(XsError::EINVAL)?;
        let path =
            |raw: &str, special: bool| XsPath::parse(raw, &home, special).map_err(XsError::from);
        let tx = p.tx_id;
        match req {
            Request::Read(raw) => self
                .read(conn, who, tx, path(&raw, false)?.0.as_str())
                .map(Reply::Data),
            Request::Directory(raw) => self
                .directory(conn, who, tx, path(&raw, false)?.0.as_str())
                .map(Reply::Data),
            Request::DirectoryPart(raw, offset) => self
                .directory_part(
                    conn,
                    who,
                    tx,
                    path(&raw, false)?.0.as_str(),
                    offset as usize,
                )
                .map(Reply::Data),
            Request::GetPerms(raw) => self
                .get_perms(conn, who, tx, &path(&raw, true)?.0)
                .map(Reply::Data),
            Request::Write(raw, value) => self
                .write(conn, who, tx, path(&raw, false)?.0.as_str(), value, ev)
                .map(|_| Reply::Ok),
            Request::Mkdir(raw) => self
                .mkdir(conn, who, tx, path(&raw, false)?.0.as_str(), ev)
                .map(|_| Reply::Ok),
            Request::Rm(raw) => self
                .rm(conn, who, tx, path(&raw, false)?.0.as_str(), ev)
                .map(|_| Reply::Ok),
            Request::SetPerms(raw, perms) => self
                .set_perms(conn, who, tx, &path(&raw, true)?.0, perms, ev)
                .map(|_| Reply::Ok),
            Request::Watch {
                path: raw,
                token,
                depth,
            } => {
                let (p, relative) = path(&raw, true)?;
                if !who.privileged && self.watches.count(conn) >= self.quota.watches {
                    return Err(XsError::E2BIG);
                }
                let watch = Watch {
                    conn,
                    path: p.into_string(),
                    token: token.clone(),
                    relative,
                    depth,
                };
                if !self.watches.add(watch) {
                    return Err(XsError::EEXIST);
                }
                // The first event names the path as the watcher gave it.
                ev.push(Out::Send(conn, Packet::watch_event(&raw, &token)));
                Ok(Reply::Ok)
            }
            Request::Unwatch { path: raw, token } => {
                let (p, _) = path(&raw, true)?;
                if self.watches.remove(conn, p.as_str(), &token) {
                    Ok(Reply::Ok)
                } else {
                    Err(XsError::ENOENT)
                }
            }
            Request::TransactionStart => self.transaction_start(conn, who, tx).map(Reply::Data),
            Request::TransactionEnd(commit) => self
                .transaction_end(conn, who, tx, commit, ev)
                .map(|_| Reply::Ok),
            Request::GetDomainPath(domid) => Ok(Reply::Data(nul_terminated(&domain_path(domid)))),
            Request::IsDomainIntroduced(domid) => {
                let yes = domid == 0 || self.domains.contains_key(&domid);
                Ok(Reply::Data(if yes {
                    b"T\0".to_vec()
                } else {
                    b"F\0".to_vec()
                }))
            }
            Request::Introduce { domid, .. } => {
                privileged(who)?;
                // Ids from DOMID_FIRST_RESERVED (0x7ff0) up name no domain
                // (DOMID_SELF, DOMID_IO, DOMID_INVALID...).
                if domid >= DOMID_FIRST_RESERVED {
                    return Err(XsError::EINVAL);
                }
                self.introduce(domid, ev);
                Ok(Reply::Ok)
            }
            Request::Release(domid) => {
                privileged(who)?;
                self.release(domid, ev).map(|_| Reply::Ok)
            }
            Request::Resume(domid) => {
                privileged(who)?;
                if domid == 0 || self.domains.contains_key(&domid) {
                    Ok(Reply::Ok)
                } else {
                    Err(XsError::ENOENT)
                }
            }
            Request::SetTarget(domid, target) => {
                privileged(who)?;
                if !self.domains.contains_key(&target) && target != 0 {
                    return Err(XsError::ENOENT);
                }
                let d = self.domains.get_mut(&domid).ok_or(XsError::ENOENT)?;
                d.target = Some(target);
                Ok(Reply::Ok)
            }
            Request::ResetWatches => {
                self.watches.remove_conn(conn);
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.txns.clear();
                }
                Ok(Reply::Ok)
            }
            Request::Control(args) => {
                privileged(who)?;
                self.control(&args).map(Reply::Data)
            }
            Request::GetFeature(_) => Err(XsError::ENOSYS),
        }
    }

    /// Marks a domain introduced and fires @introduceDomain.
    pub fn introduce(&mut self, domid: u32, ev: &mut Vec<Out>) {
        if domid != 0 {
            self.domains.entry(domid).or_default();
        }
        self.fire_special(INTRODUCE_DOMAIN, ev);
    }

    /// Releases a domain: closes its connections, removes the nodes it
    /// owns, fires @releaseDomain.
    pub fn release(&mut self, domid: u32, ev: &mut Vec<Out>) -> Result<(), XsError> {
        if domid == 0 {
            return Err(XsError::EINVAL);
        }
        let domain = self.domains.remove(&domid).ok_or(XsError::ENOENT)?;
        for conn in domain.conns {
            self.conns.remove(&conn);
            self.watches.remove_conn(conn);
            ev.push(Out::Close(conn));
        }
        self.remove_owned(domid, ev);
        self.fire_special(RELEASE_DOMAIN, ev);
        Ok(())
    }

    fn control(&mut self, args: &[Vec<u8>]) -> Result<Vec<u8>, XsError> {
        match args.split_first() {
            Some((cmd, rest)) if cmd.as_slice() == b"print" => {
                let text: Vec<String> = rest
                    .iter()
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
                tracing::info!(target: "xenstored", "{}", text.join(" "));
                Ok(b"OK\0".to_vec())
            }
            Some((cmd, _)) if cmd.as_slice() == b"check" => {
                let mut problems = self.tree.check();
                problems.extend(self.check_owned());
                if problems.is_empty() {
                    Ok(b"OK\0".to_vec())
                } else {
                    for p in &problems {
                        tracing::error!(target: "xenstored", problem = %p, "consistency check");
                    }
                    Err(XsError::EIO)
                }
            }
            _ => Err(XsError::EINVAL),
        }
    }

    /// The per-domain node counts agree with the tree.
    fn check_owned(&self) -> Vec<String> {
        let mut counted: HashMap<u32, usize> = HashMap::new();
        for id in self.tree.walk() {
            *counted.entry(self.tree.node(id).owner()).or_default() += 1;
        }
        let mine: HashMap<u32, usize> = self
            .owned
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, v)| (*k, *v))
            .collect();
        if counted == mine {
            vec![]
        } else {
            vec![format!(
                "owned-node counts {mine:?} differ from the tree's {counted:?}"
            )]
        }
    }

    /// Sends the watch events a change at `path` causes to every watcher
    /// allowed to read it (with any of `perms`: old and new).
    pub(crate) fn fire(&self, path: &str, exact: bool, perms: &[&SharedPerms], ev: &mut Vec<Out>) {
        for f in self.watches.fired(path, exact) {
            let Some(who) = self.who(f.conn) else {
                continue;
            };
            if !perms.iter().any(|p| who.perm(p).can_read()) {
                continue;
            }
            let epath = match (f.relative, self.conns.get(&f.conn)) {
                (true, Some(c)) => relative_to(&f.path, &c.home),
                _ => &f.path,
            };
            ev.push(Out::Send(f.conn, Packet::watch_event(epath, &f.token)));
        }
    }

    fn fire_special(&self, name: &'static str, ev: &mut Vec<Out>) {
        if let Some(perms) = self.special_perms.get(name) {
            self.fire(name, true, &[perms], ev);
        }
    }
}

/// What a request answers.
pub(crate) enum Reply {
    Ok,
    Data(Vec<u8>),
}

fn privileged(who: Who) -> Result<(), XsError> {
    if who.privileged {
        Ok(())
    } else {
        Err(XsError::EACCES)
    }
}

pub(crate) fn nul_terminated(s: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(s.len() + 1);
    v.extend_from_slice(s.as_bytes());
    v.push(0);
    v
}

/// Permissions for a node `who` creates below one with `parent` perms:
/// inherited, with an unprivileged creator as the owner (C behaviour).
pub(crate) fn inherit(who: Who, parent: &SharedPerms) -> SharedPerms {
    match parent.first() {
        Some(owner) if !who.privileged && owner.domid != who.domid => {
            let mut v: Vec<Perm> = parent.to_vec();
            v[0].domid = who.domid;
            Arc::from(v)
        }
        _ => parent.clone(),
    }
}
