//! Transactions (the C daemon's model).
//!
//! A transaction sees its own view: each node it touches is copied on first
//! access, and nodes it *reads* (READ, DIRECTORY, GET_PERMS) are recorded
//! with their generation. Its changes are logged. At commit, if a recorded
//! node changed meanwhile the commit fails with EAGAIN; otherwise the log is
//! replayed onto the tree and the watches fire then. Blind writes win, and a
//! parent's list of children that the transaction only changed implicitly
//! (by creating or removing a child) is not a conflict: two transactions
//! setting up different devices under the same parent both commit.

use std::collections::{HashMap, HashSet};

use super::tree::{SharedPerms, Tree};
use crate::xs::path::{basename, is_at_or_below, parent};

/// Generation recorded for a node that was absent when read.
pub const ABSENT: u64 = u64::MAX;

/// A node as a transaction sees it. Its children are not copied (a
/// directory may have 10,000): the view keeps what the transaction added and
/// removed, over the tree's own list (`fresh` nodes, created here, have only
/// what was added).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TNode {
    pub value: Vec<u8>,
    pub perms: SharedPerms,
    fresh: bool,
    added: Vec<Box<str>>,
    removed: HashSet<Box<str>>,
}

impl TNode {
    fn fresh(value: Vec<u8>, perms: SharedPerms) -> Self {
        TNode {
            value,
            perms,
            fresh: true,
            added: Vec::new(),
            removed: HashSet::new(),
        }
    }

    fn from_tree(value: Vec<u8>, perms: SharedPerms) -> Self {
        TNode {
            value,
            perms,
            fresh: false,
            added: Vec::new(),
            removed: HashSet::new(),
        }
    }

    /// Its children as the transaction sees them (`path` is its own path).
    pub fn children(&self, tree: &Tree, path: &str) -> Vec<Box<str>> {
        let mut out: Vec<Box<str>> = Vec::new();
        if !self.fresh {
            if let Some(id) = tree.lookup(path) {
                out.extend(
                    tree.node(id)
                        .children
                        .iter()
                        .map(|c| tree.node(*c).name())
                        .filter(|n| !self.removed.contains(*n))
                        .map(Box::from),
                );
            }
        }
        out.extend(self.added.iter().cloned());
        out
    }

    fn has_child(&self, tree: &Tree, path: &str, name: &str) -> bool {
        if self.added.iter().any(|c| &**c == name) {
            return true;
        }
        if self.fresh || self.removed.contains(name) {
            return false;
        }
        let child = if path == "/" {
            format!("/{name}")
        } else {
            format!("{path}/{name}")
        };
        tree.lookup(&child).is_some()
    }

    /// A child created here. A name removed earlier stays in `removed`
    /// (hiding the tree's old child) and appears once, from `added`.
    fn add_child(&mut self, name: &str) {
        self.added.push(name.into());
    }

    fn remove_child(&mut self, name: &str) {
        self.added.retain(|c| &**c != name);
        if !self.fresh {
            self.removed.insert(name.into());
        }
    }
}

/// A change, replayed at commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Write(String, Vec<u8>),
    Mkdir(String),
    Rm(String),
    SetPerms(String, SharedPerms),
}

/// One open transaction.
#[derive(Debug, Default)]
pub struct Txn {
    /// Nodes as this transaction sees them; None: absent (and so is
    /// everything below).
    view: HashMap<String, Option<TNode>>,
    reads: HashMap<String, u64>,
    pub ops: Vec<Op>,
}

impl Txn {
    /// How many nodes this transaction has touched (its quota counts them).
    pub fn touched(&self) -> usize {
        self.view.len()
    }

    /// The node at `path` as this transaction sees it; `record` notes the
    /// read for conflict detection at commit.
    pub fn get(&mut self, tree: &Tree, path: &str, record: bool) -> Option<TNode> {
        if let Some(entry) = self.view.get(path) {
            let entry = entry.clone();
            if record {
                self.record(tree, path);
            }
            return entry;
        }
        if self.hidden(tree, path) {
            return None;
        }
        let node = tree.lookup(path).map(|id| {
            let n = tree.node(id);
            TNode::from_tree(n.value().to_vec(), n.perms.clone())
        });
        if record {
            self.record(tree, path);
        }
        self.view.insert(path.to_owned(), node.clone());
        node
    }

    fn record(&mut self, tree: &Tree, path: &str) {
        if !self.reads.contains_key(path) {
            let gen = tree
                .lookup(path)
                .map_or(ABSENT, |id| tree.node(id).generation);
            self.reads.insert(path.to_owned(), gen);
        }
    }

    /// Whether this transaction's view says `path` does not exist: an
    /// ancestor it holds is absent, or does not list the next component.
    fn hidden(&self, tree: &Tree, path: &str) -> bool {
        let mut child = path;
        let mut anc = parent(path);
        while let Some(a) = anc {
            match self.view.get(a) {
                Some(None) => return true,
                Some(Some(n)) => return !n.has_child(tree, a, basename(child)),
                None => {}
            }
            child = a;
            anc = parent(a);
        }
        false
    }

    /// The nearest ancestor of `path` (or `path` itself) that exists here.
    pub fn nearest_existing(&mut self, tree: &Tree, path: &str) -> (String, TNode) {
        let mut cur = path.to_owned();
        loop {
            if let Some(n) = self.get(tree, &cur, false) {
                return (cur, n);
            }
            match parent(&cur) {
                Some(p) => cur = p.to_owned(),
                // "/" always exists.
                None => return (cur, TNode::from_tree(vec![], super::tree::dom0_only())),
            }
        }
    }

    /// Sets the value of an existing node, or creates it and its missing
    /// ancestors (each with the permissions `inherit` gives from its
    /// parent's). Returns how many nodes were created.
    pub fn write(
        &mut self,
        tree: &Tree,
        path: &str,
        value: Vec<u8>,
        inherit: &dyn Fn(&SharedPerms) -> SharedPerms,
    ) -> usize {
        if let Some(n) = self.get(tree, path, false) {
            self.view
                .insert(path.to_owned(), Some(TNode { value, ..n }));
            return 0;
        }
        let Some(p) = parent(path) else { return 0 };
        let created = if self.get(tree, p, false).is_some() {
            0
        } else {
            self.write(tree, p, Vec::new(), inherit)
        };
        if let Some(Some(pn)) = self.view.get_mut(p) {
            let perms = inherit(&pn.perms);
            pn.add_child(basename(path));
            self.view
                .insert(path.to_owned(), Some(TNode::fresh(value, perms)));
        }
        created + 1
    }

    /// Removes an existing node and its subtree from the view.
    pub fn remove(&mut self, tree: &Tree, path: &str) {
        if let Some(p) = parent(path) {
            if self.get(tree, p, false).is_some() {
                if let Some(Some(pn)) = self.view.get_mut(p) {
                    pn.remove_child(basename(path));
                }
            }
        }
        self.view.retain(|k, _| !is_at_or_below(k, path));
        self.view.insert(path.to_owned(), None);
    }

    pub fn set_perms(&mut self, tree: &Tree, path: &str, perms: SharedPerms) {
        if let Some(n) = self.get(tree, path, false) {
            self.view
                .insert(path.to_owned(), Some(TNode { perms, ..n }));
        }
    }

    /// Whether every node this transaction read is as it was.
    pub fn still_valid(&self, tree: &Tree) -> bool {
        self.reads.iter().all(|(path, gen)| {
            tree.lookup(path)
                .map_or(ABSENT, |id| tree.node(id).generation)
                == *gen
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xenstored::tree::{dom0_only, ROOT};

    #[test]
    fn own_view_reads_recorded_blind_writes_not() {
        let mut tree = Tree::new();
        let a = tree.add_child(ROOT, "a", b"1", dom0_only(), 1);
        let inherit = |p: &SharedPerms| p.clone();
        let mut t = Txn::default();
        assert_eq!(t.get(&tree, "/a", true).unwrap().value, b"1");
        // An outside change: the transaction still sees its copy, and is stale.
        tree.set_value(a, b"2", 2);
        assert_eq!(t.get(&tree, "/a", true).unwrap().value, b"1");
        assert!(!t.still_valid(&tree));
        // Blind writes in another transaction do not conflict.
        let mut u = Txn::default();
        assert_eq!(u.write(&tree, "/x/y/z", b"v".to_vec(), &inherit), 3);
        assert_eq!(
            u.get(&tree, "/x/y", false).unwrap().children(&tree, "/x/y"),
            vec![Box::<str>::from("z")]
        );
        assert!(u
            .get(&tree, "/", false)
            .unwrap()
            .children(&tree, "/")
            .iter()
            .any(|c| &**c == "x"));
        // Removed, then created again: listed once.
        let mut r = Txn::default();
        r.remove(&tree, "/a");
        r.write(&tree, "/a/new", vec![], &inherit);
        let root = r.get(&tree, "/", false).unwrap().children(&tree, "/");
        assert_eq!(root.iter().filter(|c| &***c == "a").count(), 1);
        assert!(r.get(&tree, "/a/new", false).is_some());
        tree.add_child(ROOT, "other", b"", dom0_only(), 3);
        assert!(u.still_valid(&tree));
        // Removing hides the subtree, recreating shows only what is new.
        u.remove(&tree, "/x");
        assert!(u.get(&tree, "/x/y/z", false).is_none());
        u.write(&tree, "/x/w", vec![], &inherit);
        assert!(u.get(&tree, "/x/y", false).is_none());
        assert!(u.get(&tree, "/x/w", false).is_some());
    }
}
