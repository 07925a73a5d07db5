//! The node tree: an arena of nodes, each with its value, permissions,
//! generation and children (in creation order, as the C daemon lists them).
//!
//! Kept small for a million nodes: a node's name and value share one
//! allocation; permissions are shared (`Arc`) between a parent and the
//! children that inherit them; only directories with many children carry a
//! name index, and it holds node ids only (names are hashed where they lie).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::HashTable;

use crate::xs::{Perm, PermLetter};

/// A node's index in the arena.
pub type NodeId = u32;

/// The root's id.
pub const ROOT: NodeId = 0;

/// Above this many children, a directory gets a name index.
const INDEX_AT: usize = 32;

/// Shared permissions: owner (with the default letter) first, then the ACL.
pub type SharedPerms = Arc<[Perm]>;

/// One node.
#[derive(Debug)]
pub struct Node {
    /// The name's bytes, then the value's.
    data: Box<[u8]>,
    pub perms: SharedPerms,
    pub children: Vec<NodeId>,
    /// The store's generation count when this node last changed (its
    /// value, its permissions or its list of children).
    pub generation: u64,
    pub parent: NodeId,
    name_len: u16,
}

impl Node {
    fn new(name: &str, value: &[u8], perms: SharedPerms, generation: u64, parent: NodeId) -> Self {
        let mut data = Vec::with_capacity(name.len() + value.len());
        data.extend_from_slice(name.as_bytes());
        data.extend_from_slice(value);
        // Path components are at most 3072 bytes (the path limit).
        let name_len = u16::try_from(name.len()).unwrap_or(u16::MAX);
        Node {
            data: data.into_boxed_slice(),
            perms,
            children: Vec::new(),
            generation,
            parent,
            name_len,
        }
    }

    pub fn name(&self) -> &str {
        // Names come from validated paths (ASCII), so this never fails.
        std::str::from_utf8(&self.data[..self.name_len as usize]).unwrap_or("")
    }

    pub fn value(&self) -> &[u8] {
        &self.data[self.name_len as usize..]
    }

    pub fn owner(&self) -> u32 {
        self.perms.first().map_or(0, |p| p.domid)
    }
}

/// The tree.
#[derive(Debug)]
pub struct Tree {
    nodes: Vec<Option<Node>>,
    free: Vec<NodeId>,
    /// Name indexes of large directories: ids, hashed by name.
    index: HashMap<NodeId, HashTable<NodeId>>,
    hasher: hashbrown::DefaultHashBuilder,
    live: usize,
}

/// The permissions of "/" and of the nodes the store starts with: owned by
/// dom0, no access for others.
pub fn dom0_only() -> SharedPerms {
    Arc::from(vec![Perm {
        letter: PermLetter::None,
        domid: 0,
    }])
}

impl Default for Tree {
    fn default() -> Self {
        Self::new()
    }
}

fn live(nodes: &[Option<Node>], id: NodeId) -> &Node {
    match nodes.get(id as usize) {
        Some(Some(n)) => n,
        // Ids handed out by the tree point at live nodes while the caller
        // holds them; anything else is a bug in this module.
        _ => unreachable!("stale node id {id}"),
    }
}

impl Tree {
    /// A tree holding "/".
    pub fn new() -> Self {
        Self {
            nodes: vec![Some(Node::new("", b"", dom0_only(), 0, ROOT))],
            free: Vec::new(),
            index: HashMap::new(),
            hasher: hashbrown::DefaultHashBuilder::default(),
            live: 1,
        }
    }

    /// Number of nodes, "/" included.
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn node(&self, id: NodeId) -> &Node {
        live(&self.nodes, id)
    }

    fn node_mut(&mut self, id: NodeId) -> &mut Node {
        match self.nodes.get_mut(id as usize) {
            Some(Some(n)) => n,
            _ => unreachable!("stale node id {id}"),
        }
    }

    /// The child of `parent` named `name`.
    pub fn child(&self, parent: NodeId, name: &str) -> Option<NodeId> {
        if let Some(ix) = self.index.get(&parent) {
            let hash = self.hasher.hash_one(name);
            return ix
                .find(hash, |id| live(&self.nodes, *id).name() == name)
                .copied();
        }
        self.node(parent)
            .children
            .iter()
            .copied()
            .find(|c| self.node(*c).name() == name)
    }

    /// The node at an absolute path.
    pub fn lookup(&self, path: &str) -> Option<NodeId> {
        let mut id = ROOT;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            id = self.child(id, part)?;
        }
        Some(id)
    }

    /// The deepest existing node on the way to `path` (at least "/").
    pub fn nearest_existing(&self, path: &str) -> NodeId {
        let mut id = ROOT;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            match self.child(id, part) {
                Some(c) => id = c,
                None => break,
            }
        }
        id
    }

    /// The absolute path of a node.
    pub fn path_of(&self, id: NodeId) -> String {
        let mut parts = Vec::new();
        let mut cur = id;
        while cur != ROOT {
            let n = self.node(cur);
            parts.push(n.name());
            cur = n.parent;
        }
        if parts.is_empty() {
            return "/".into();
        }
        parts.reverse();
        let mut s = String::new();
        for p in parts {
            s.push('/');
            s.push_str(p);
        }
        s
    }

    /// Adds a child; the caller knows `name` is not taken.
    pub fn add_child(
        &mut self,
        parent: NodeId,
        name: &str,
        value: &[u8],
        perms: SharedPerms,
        generation: u64,
    ) -> NodeId {
        let node = Node::new(name, value, perms, generation, parent);
        let id = match self.free.pop() {
            Some(id) => {
                self.nodes[id as usize] = Some(node);
                id
            }
            None => {
                self.nodes.push(Some(node));
                // The quotas keep the store far below 2^32 nodes.
                NodeId::try_from(self.nodes.len() - 1).unwrap_or(NodeId::MAX)
            }
        };
        self.live += 1;
        let p = self.node_mut(parent);
        p.children.push(id);
        p.generation = generation;
        let count = p.children.len();
        let (nodes, hasher) = (&self.nodes, &self.hasher);
        let rehash = |id: &NodeId| hasher.hash_one(live(nodes, *id).name());
        if let Some(ix) = self.index.get_mut(&parent) {
            ix.insert_unique(hasher.hash_one(name), id, rehash);
        } else if count > INDEX_AT {
            let mut ix = HashTable::with_capacity(count * 2);
            for c in &live(nodes, parent).children {
                ix.insert_unique(rehash(c), *c, rehash);
            }
            self.index.insert(parent, ix);
        }
        id
    }

    pub fn set_value(&mut self, id: NodeId, value: &[u8], generation: u64) {
        let n = self.node_mut(id);
        let mut data = Vec::with_capacity(n.name_len as usize + value.len());
        data.extend_from_slice(&n.data[..n.name_len as usize]);
        data.extend_from_slice(value);
        n.data = data.into_boxed_slice();
        n.generation = generation;
    }

    pub fn set_perms(&mut self, id: NodeId, perms: SharedPerms, generation: u64) {
        let n = self.node_mut(id);
        n.perms = perms;
        n.generation = generation;
    }

    /// Removes a node and everything below it; calls `gone` with each
    /// removed node. The root cannot be removed.
    pub fn remove(&mut self, id: NodeId, generation: u64, mut gone: impl FnMut(&Node)) {
        if id == ROOT {
            return;
        }
        let parent = self.node(id).parent;
        let hash = self.hasher.hash_one(self.node(id).name());
        let p = self.node_mut(parent);
        p.children.retain(|c| *c != id);
        p.generation = generation;
        if let Some(ix) = self.index.get_mut(&parent) {
            if let Ok(entry) = ix.find_entry(hash, |x| *x == id) {
                entry.remove();
            }
        }
        let mut stack = vec![id];
        while let Some(cur) = stack.pop() {
            if let Some(node) = self.nodes[cur as usize].take() {
                gone(&node);
                stack.extend_from_slice(&node.children);
                self.index.remove(&cur);
                self.free.push(cur);
                self.live -= 1;
            }
        }
    }

    /// Every node's id, depth first (for consistency checks).
    pub fn walk(&self) -> Vec<NodeId> {
        let mut out = Vec::with_capacity(self.live);
        let mut stack = vec![ROOT];
        while let Some(id) = stack.pop() {
            out.push(id);
            stack.extend(self.node(id).children.iter().rev());
        }
        out
    }

    /// Checks the tree's invariants: each child's parent link, no duplicate
    /// names, indexes in step, the live count. Returns what is wrong.
    pub fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let ids = self.walk();
        if ids.len() != self.live {
            problems.push(format!("{} nodes reachable, {} live", ids.len(), self.live));
        }
        for id in ids {
            let n = self.node(id);
            let mut names = std::collections::HashSet::new();
            for c in &n.children {
                let child = self.node(*c);
                if child.parent != id {
                    problems.push(format!("{} has a wrong parent link", self.path_of(*c)));
                }
                if !names.insert(child.name()) {
                    problems.push(format!(
                        "{} has two children named {}",
                        self.path_of(id),
                        child.name()
                    ));
                }
                if self.child(id, child.name()) != Some(*c) {
                    problems.push(format!("{}: lookup disagrees", self.path_of(*c)));
                }
            }
            if let Some(ix) = self.index.get(&id) {
                if ix.len() != n.children.len() {
                    problems.push(format!("{}: index out of step", self.path_of(id)));
                }
            }
            if n.perms.is_empty() {
                problems.push(format!("{} has no permissions", self.path_of(id)));
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_lookup_remove_and_index() {
        let mut t = Tree::new();
        let a = t.add_child(ROOT, "a", b"1", dom0_only(), 1);
        for i in 0..100 {
            t.add_child(a, &format!("c{i}"), b"", dom0_only(), 2);
        }
        assert_eq!(
            t.lookup("/a/c77").map(|id| t.path_of(id)),
            Some("/a/c77".into())
        );
        assert_eq!(t.lookup("/a/nope"), None);
        assert_eq!(t.nearest_existing("/a/nope/deeper"), a);
        let c5 = t.lookup("/a/c5").unwrap();
        t.add_child(c5, "leaf", b"", dom0_only(), 3);
        assert_eq!(t.len(), 103);
        let mut gone = 0;
        t.remove(c5, 4, |_| gone += 1);
        assert_eq!(gone, 2);
        assert_eq!(t.lookup("/a/c5"), None);
        assert_eq!(t.node(a).generation, 4);
        assert!(t.check().is_empty(), "{:?}", t.check());
        // Freed slots are reused.
        let again = t.add_child(a, "c5", b"", dom0_only(), 5);
        assert!(again < 103);
        assert!(t.check().is_empty());
        assert_eq!(t.node(a).children.len(), 100);
    }
}
