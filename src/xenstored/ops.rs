//! Node operations, directly on the tree or inside a transaction, with the
//! permission rules and quotas of the C daemon.

use std::sync::Arc;

use super::store::{inherit, nul_terminated, Out, Store, Who};
use super::tree::{NodeId, SharedPerms};
use super::txn::{Op, TNode, Txn};
use crate::xs::path::{is_at_or_below, parent};
use crate::xs::{ConnId, Perm, XsError, PAYLOAD_MAX};

/// The access an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Read,
    Write,
}

fn allowed(who: Who, perms: &[Perm], need: Need) -> bool {
    let letter = who.perm(perms);
    match need {
        Need::Read => letter.can_read(),
        Need::Write => letter.can_write(),
    }
}

fn children_payload<'a>(names: impl Iterator<Item = &'a str>) -> Vec<u8> {
    let mut out = Vec::new();
    for n in names {
        out.extend_from_slice(n.as_bytes());
        out.push(0);
    }
    out
}

fn perms_payload(perms: &[Perm]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in perms {
        out.extend_from_slice(p.to_string().as_bytes());
        out.push(0);
    }
    out
}

/// DIRECTORY_PART's answer: "<generation>\0", the children from byte
/// `offset` that fit, and one more "\0" once the list is complete.
fn directory_part_payload(
    generation: u64,
    children: &[u8],
    offset: usize,
) -> Result<Vec<u8>, XsError> {
    if offset > children.len() {
        return Err(XsError::EINVAL);
    }
    let mut out = nul_terminated(&generation.to_string());
    let room = PAYLOAD_MAX - out.len() - 1;
    let rest = &children[offset..];
    if rest.len() <= room {
        out.extend_from_slice(rest);
        out.push(0);
    } else {
        // Cut after the last whole name that fits.
        let cut = rest[..room]
            .iter()
            .rposition(|b| *b == 0)
            .map_or(0, |i| i + 1);
        out.extend_from_slice(&rest[..cut]);
    }
    Ok(out)
}

impl Store {
    fn add_owned(&mut self, domid: u32, n: usize) {
        *self.owned.entry(domid).or_default() += n;
    }

    /// ENOENT, or EACCES when the nearest existing ancestor is unreadable.
    fn missing(&self, who: Who, path: &str) -> XsError {
        let anc = self.tree.nearest_existing(path);
        if allowed(who, &self.tree.node(anc).perms, Need::Read) {
            XsError::ENOENT
        } else {
            XsError::EACCES
        }
    }

    fn lookup_checked(&self, who: Who, path: &str, need: Need) -> Result<NodeId, XsError> {
        match self.tree.lookup(path) {
            Some(id) if allowed(who, &self.tree.node(id).perms, need) => Ok(id),
            Some(_) => Err(XsError::EACCES),
            None => Err(self.missing(who, path)),
        }
    }

    /// Runs `f` on an open transaction of `conn`.
    fn in_txn<T>(
        &mut self,
        conn: ConnId,
        who: Who,
        tx: u32,
        f: impl FnOnce(&mut Self, &mut Txn) -> Result<T, XsError>,
    ) -> Result<T, XsError> {
        let c = self.conns.get_mut(&conn).ok_or(XsError::EINVAL)?;
        let mut txn = c.txns.remove(&tx).ok_or(XsError::ENOENT)?;
        let result = if !who.privileged && txn.touched() >= self.quota.transaction_nodes {
            Err(XsError::ENOSPC)
        } else {
            f(self, &mut txn)
        };
        if let Some(c) = self.conns.get_mut(&conn) {
            c.txns.insert(tx, txn);
        }
        result
    }

    fn tx_missing(&self, txn: &mut Txn, who: Who, path: &str) -> XsError {
        let (_, anc) = txn.nearest_existing(&self.tree, path);
        if allowed(who, &anc.perms, Need::Read) {
            XsError::ENOENT
        } else {
            XsError::EACCES
        }
    }

    fn tx_node(
        &self,
        txn: &mut Txn,
        who: Who,
        path: &str,
        record: bool,
        need: Need,
    ) -> Result<TNode, XsError> {
        match txn.get(&self.tree, path, record) {
            Some(n) if allowed(who, &n.perms, need) => Ok(n),
            Some(_) => Err(XsError::EACCES),
            None => Err(self.tx_missing(txn, who, path)),
        }
    }

    pub(crate) fn read(
        &mut self,
        conn: ConnId,
        who: Who,
        tx: u32,
        path: &str,
    ) -> Result<Vec<u8>, XsError> {
        if tx == 0 {
            let id = self.lookup_checked(who, path, Need::Read)?;
            return Ok(self.tree.node(id).value().to_vec());
        }
        self.in_txn(conn, who, tx, |s, t| {
            Ok(s.tx_node(t, who, path, true, Need::Read)?.value)
        })
    }

    fn children_of(
        &mut self,
        conn: ConnId,
        who: Who,
        tx: u32,
        path: &str,
    ) -> Result<(u64, Vec<u8>), XsError> {
        if tx == 0 {
            let id = self.lookup_checked(who, path, Need::Read)?;
            let n = self.tree.node(id);
            let names = children_payload(n.children.iter().map(|c| self.tree.node(*c).name()));
            return Ok((n.generation, names));
        }
        self.in_txn(conn, who, tx, |s, t| {
            let n = s.tx_node(t, who, path, true, Need::Read)?;
            let generation = s
                .tree
                .lookup(path)
                .map_or(0, |id| s.tree.node(id).generation);
            Ok((
                generation,
                children_payload(n.children(&s.tree, path).iter().map(|c| &**c)),
            ))
        })
    }

    pub(crate) fn directory(
        &mut self,
        conn: ConnId,
        who: Who,
        tx: u32,
        path: &str,
    ) -> Result<Vec<u8>, XsError> {
        let (_, names) = self.children_of(conn, who, tx, path)?;
        if names.len() > PAYLOAD_MAX {
            return Err(XsError::E2BIG);
        }
        Ok(names)
    }

    pub(crate) fn directory_part(
        &mut self,
        conn: ConnId,
        who: Who,
        tx: u32,
        path: &str,
        offset: usize,
    ) -> Result<Vec<u8>, XsError> {
        let (generation, names) = self.children_of(conn, who, tx, path)?;
        directory_part_payload(generation, &names, offset)
    }

    pub(crate) fn get_perms(
        &mut self,
        conn: ConnId,
        who: Who,
        tx: u32,
        path: &crate::xs::XsPath,
    ) -> Result<Vec<u8>, XsError> {
        if path.is_special() {
            let perms = self
                .special_perms
                .get(path.as_str())
                .ok_or(XsError::ENOENT)?;
            if !allowed(who, perms, Need::Read) {
                return Err(XsError::EACCES);
            }
            return Ok(perms_payload(perms));
        }
        let path = path.as_str();
        if tx == 0 {
            let id = self.lookup_checked(who, path, Need::Read)?;
            return Ok(perms_payload(&self.tree.node(id).perms));
        }
        self.in_txn(conn, who, tx, |s, t| {
            Ok(perms_payload(
                &s.tx_node(t, who, path, true, Need::Read)?.perms,
            ))
        })
    }

    /// Creates `path` and its missing ancestors (no checks: the caller made them).
    fn create(&mut self, who: Who, path: &str, value: Vec<u8>, ev: &mut Vec<Out>) {
        let mut cur = self.tree.nearest_existing(path);
        let base = self.tree.path_of(cur);
        let rest = if base == "/" {
            &path[1..]
        } else {
            &path[base.len() + 1..]
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let generation = self.next_generation();
        let mut value = Some(value);
        for (i, part) in parts.iter().enumerate() {
            let perms = inherit(who, &self.tree.node(cur).perms);
            let owner = perms.first().map_or(0, |p| p.domid);
            let v = if i + 1 == parts.len() {
                value.take().unwrap_or_default()
            } else {
                Vec::new()
            };
            cur = self.tree.add_child(cur, part, &v, perms, generation);
            self.add_owned(owner, 1);
        }
        let perms = self.tree.node(cur).perms.clone();
        self.fire(path, true, &[&perms], ev);
    }

    /// How many nodes creating `path` adds, and whether `who` may.
    fn check_create(
        &self,
        who: Who,
        path: &str,
        existing: &str,
        perms: &[Perm],
    ) -> Result<(), XsError> {
        if !allowed(who, perms, Need::Write) {
            return Err(XsError::EACCES);
        }
        let new = path[existing.len()..].matches('/').count() + usize::from(existing == "/");
        if !who.privileged
            && self.owned.get(&who.domid).copied().unwrap_or(0) + new > self.quota.nodes
        {
            return Err(XsError::ENOSPC);
        }
        Ok(())
    }

    pub(crate) fn write(
        &mut self,
        conn: ConnId,
        who: Who,
        tx: u32,
        path: &str,
        value: Vec<u8>,
        ev: &mut Vec<Out>,
    ) -> Result<(), XsError> {
        if !who.privileged && value.len() > self.quota.node_size {
            return Err(XsError::ENOSPC);
        }
        if tx != 0 {
            return self.in_txn(conn, who, tx, |s, t| s.tx_write(t, who, path, Some(value)));
        }
        match self.tree.lookup(path) {
            Some(id) => {
                if !allowed(who, &self.tree.node(id).perms, Need::Write) {
                    return Err(XsError::EACCES);
                }
                let generation = self.next_generation();
                self.tree.set_value(id, &value, generation);
                let perms = self.tree.node(id).perms.clone();
                self.fire(path, true, &[&perms], ev);
            }
            None => {
                let anc = self.tree.nearest_existing(path);
                let existing = self.tree.path_of(anc);
                self.check_create(who, path, &existing, &self.tree.node(anc).perms.clone())?;
                self.create(who, path, value, ev);
            }
        }
        Ok(())
    }

    /// WRITE (`value` Some) or MKDIR (None) inside a transaction.
    fn tx_write(
        &mut self,
        t: &mut Txn,
        who: Who,
        path: &str,
        value: Option<Vec<u8>>,
    ) -> Result<(), XsError> {
        let inh = |p: &SharedPerms| inherit(who, p);
        match t.get(&self.tree, path, false) {
            Some(n) => {
                if !allowed(who, &n.perms, Need::Write) {
                    return Err(XsError::EACCES);
                }
                if let Some(value) = value {
                    t.write(&self.tree, path, value.clone(), &inh);
                    t.ops.push(Op::Write(path.to_owned(), value));
                }
            }
            None => {
                let (existing, anc) = t.nearest_existing(&self.tree, path);
                self.check_create(who, path, &existing, &anc.perms)?;
                let op = match &value {
                    Some(v) => Op::Write(path.to_owned(), v.clone()),
                    None => Op::Mkdir(path.to_owned()),
                };
                t.write(&self.tree, path, value.unwrap_or_default(), &inh);
                t.ops.push(op);
            }
        }
        Ok(())
    }

    pub(crate) fn mkdir(
        &mut self,
        conn: ConnId,
        who: Who,
        tx: u32,
        path: &str,
        ev: &mut Vec<Out>,
    ) -> Result<(), XsError> {
        if tx != 0 {
            return self.in_txn(conn, who, tx, |s, t| s.tx_write(t, who, path, None));
        }
        match self.tree.lookup(path) {
            // Already there: OK, and no watch fires.
            Some(id) if allowed(who, &self.tree.node(id).perms, Need::Write) => Ok(()),
            Some(_) => Err(XsError::EACCES),
            None => {
                let anc = self.tree.nearest_existing(path);
                let existing = self.tree.path_of(anc);
                self.check_create(who, path, &existing, &self.tree.node(anc).perms.clone())?;
                self.create(who, path, Vec::new(), ev);
                Ok(())
            }
        }
    }

    /// Removes a subtree (no checks), firing watches on and below it.
    fn remove_subtree(&mut self, id: NodeId, path: &str, ev: &mut Vec<Out>) {
        let perms = self.tree.node(id).perms.clone();
        let generation = self.next_generation();
        let owned = &mut self.owned;
        self.tree.remove(id, generation, |n| {
            if let Some(c) = owned.get_mut(&n.owner()) {
                *c = c.saturating_sub(1);
            }
        });
        self.fire(path, false, &[&perms], ev);
    }

    pub(crate) fn rm(
        &mut self,
        conn: ConnId,
        who: Who,
        tx: u32,
        path: &str,
        ev: &mut Vec<Out>,
    ) -> Result<(), XsError> {
        if path == "/" {
            return Err(XsError::EINVAL);
        }
        if tx != 0 {
            return self.in_txn(conn, who, tx, |s, t| match t.get(&s.tree, path, false) {
                Some(n) if allowed(who, &n.perms, Need::Write) => {
                    t.remove(&s.tree, path);
                    t.ops.push(Op::Rm(path.to_owned()));
                    Ok(())
                }
                Some(_) => Err(XsError::EACCES),
                None => match parent(path).and_then(|p| t.get(&s.tree, p, false)) {
                    Some(_) => Ok(()),
                    None => Err(s.tx_missing(t, who, path)),
                },
            });
        }
        match self.tree.lookup(path) {
            Some(id) if allowed(who, &self.tree.node(id).perms, Need::Write) => {
                self.remove_subtree(id, path, ev);
                Ok(())
            }
            Some(_) => Err(XsError::EACCES),
            // A missing node under an existing parent is already gone: OK.
            None => match parent(path).and_then(|p| self.tree.lookup(p)) {
                Some(_) => Ok(()),
                None => Err(self.missing(who, path)),
            },
        }
    }

    pub(crate) fn set_perms(
        &mut self,
        conn: ConnId,
        who: Who,
        tx: u32,
        path: &crate::xs::XsPath,
        perms: Vec<Perm>,
        ev: &mut Vec<Out>,
    ) -> Result<(), XsError> {
        if !who.privileged && perms.len() > self.quota.perms {
            return Err(XsError::ENOSPC);
        }
        let new: SharedPerms = Arc::from(perms);
        if path.is_special() {
            if !who.privileged {
                return Err(XsError::EACCES);
            }
            let name = *self
                .special_perms
                .keys()
                .find(|k| **k == path.as_str())
                .ok_or(XsError::ENOENT)?;
            self.special_perms.insert(name, new);
            return Ok(());
        }
        let path = path.as_str();
        let check = |old: &[Perm]| {
            if !who.is_owner(old) {
                Err(XsError::EACCES)
            } else if !who.privileged
                && new.first().map(|p| p.domid) != old.first().map(|p| p.domid)
            {
                Err(XsError::EPERM)
            } else {
                Ok(())
            }
        };
        if tx != 0 {
            return self.in_txn(conn, who, tx, |s, t| {
                let n = t
                    .get(&s.tree, path, false)
                    .ok_or_else(|| s.tx_missing(t, who, path))?;
                check(&n.perms)?;
                t.set_perms(&s.tree, path, new.clone());
                t.ops.push(Op::SetPerms(path.to_owned(), new.clone()));
                Ok(())
            });
        }
        let id = self
            .tree
            .lookup(path)
            .ok_or_else(|| self.missing(who, path))?;
        let old = self.tree.node(id).perms.clone();
        check(&old)?;
        self.apply_perms(id, path, new, ev);
        Ok(())
    }

    fn apply_perms(&mut self, id: NodeId, path: &str, new: SharedPerms, ev: &mut Vec<Out>) {
        let old = self.tree.node(id).perms.clone();
        let (old_owner, new_owner) = (
            self.tree.node(id).owner(),
            new.first().map_or(0, |p| p.domid),
        );
        if old_owner != new_owner {
            if let Some(c) = self.owned.get_mut(&old_owner) {
                *c = c.saturating_sub(1);
            }
            self.add_owned(new_owner, 1);
        }
        let generation = self.next_generation();
        self.tree.set_perms(id, new.clone(), generation);
        self.fire(path, false, &[&old, &new], ev);
    }

    pub(crate) fn transaction_start(
        &mut self,
        conn: ConnId,
        who: Who,
        tx: u32,
    ) -> Result<Vec<u8>, XsError> {
        if tx != 0 {
            return Err(XsError::EBUSY);
        }
        let quota = self.quota.transactions;
        let c = self.conns.get_mut(&conn).ok_or(XsError::EINVAL)?;
        if !who.privileged && c.txns.len() >= quota {
            return Err(XsError::ENOSPC);
        }
        let mut id = c.next_tx;
        while id == 0 || c.txns.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        c.next_tx = id.wrapping_add(1);
        c.txns.insert(id, Txn::default());
        Ok(nul_terminated(&id.to_string()))
    }

    pub(crate) fn transaction_end(
        &mut self,
        conn: ConnId,
        who: Who,
        tx: u32,
        commit: bool,
        ev: &mut Vec<Out>,
    ) -> Result<(), XsError> {
        let c = self.conns.get_mut(&conn).ok_or(XsError::EINVAL)?;
        // Ended either way, even when the commit fails.
        let txn = c.txns.remove(&tx).ok_or(XsError::ENOENT)?;
        if !commit {
            return Ok(());
        }
        if !txn.still_valid(&self.tree) {
            return Err(XsError::EAGAIN);
        }
        for op in txn.ops {
            self.replay(who, op, ev);
        }
        Ok(())
    }

    /// Applies a committed change. Checks were made against the
    /// transaction's view; what changed meanwhile elsewhere is tolerated
    /// (a removal of what is gone is a no-op, a write recreates parents).
    fn replay(&mut self, who: Who, op: Op, ev: &mut Vec<Out>) {
        match op {
            Op::Write(path, value) => match self.tree.lookup(&path) {
                Some(id) => {
                    let generation = self.next_generation();
                    self.tree.set_value(id, &value, generation);
                    let perms = self.tree.node(id).perms.clone();
                    self.fire(&path, true, &[&perms], ev);
                }
                None => self.create(who, &path, value, ev),
            },
            Op::Mkdir(path) => {
                if self.tree.lookup(&path).is_none() {
                    self.create(who, &path, Vec::new(), ev);
                }
            }
            Op::Rm(path) => {
                if let Some(id) = self.tree.lookup(&path) {
                    self.remove_subtree(id, &path, ev);
                }
            }
            Op::SetPerms(path, perms) => {
                if let Some(id) = self.tree.lookup(&path) {
                    self.apply_perms(id, &path, perms, ev);
                }
            }
        }
    }

    /// Removes every node `domid` owns (at release).
    pub(crate) fn remove_owned(&mut self, domid: u32, ev: &mut Vec<Out>) {
        if self.owned.get(&domid).copied().unwrap_or(0) == 0 {
            return;
        }
        // The topmost owned nodes; their subtrees go with them.
        let tops: Vec<String> = self
            .tree
            .walk()
            .into_iter()
            .filter(|id| {
                let n = self.tree.node(*id);
                *id != super::tree::ROOT
                    && n.owner() == domid
                    && self.tree.node(n.parent).owner() != domid
            })
            .map(|id| self.tree.path_of(id))
            .collect();
        let mut done: Vec<String> = Vec::new();
        for path in tops {
            if done.iter().any(|d| is_at_or_below(&path, d)) {
                continue;
            }
            if let Some(id) = self.tree.lookup(&path) {
                self.remove_subtree(id, &path, ev);
            }
            done.push(path);
        }
        self.owned.remove(&domid);
    }
}
