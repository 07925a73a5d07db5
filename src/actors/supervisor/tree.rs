//! A snapshot of the supervision tree, for `supervisor.tree` and the shell.

use serde::{Deserialize, Serialize};

use super::spec::ChildKind;

/// One node of the tree: a supervisor or a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeNode {
    pub id: String,
    pub kind: ChildKind,
    /// `running`, `starting`, `stopped` (a transient child that ended
    /// normally, or one between a failed restart and its retry), or
    /// `unresponsive` (a supervisor that did not answer the snapshot in time).
    pub state: String,
    /// How many times its supervisor has restarted it.
    pub restarts: u32,
    /// Why its previous incarnation ended, if it ever ended.
    pub last_exit: Option<String>,
    /// When its current incarnation started, in milliseconds since the Unix epoch.
    pub started_at_ms: Option<u64>,
    pub children: Vec<TreeNode>,
}

impl TreeNode {
    /// The total restarts in this subtree, this node's own included.
    pub fn total_restarts(&self) -> u64 {
        u64::from(self.restarts)
            + self
                .children
                .iter()
                .map(TreeNode::total_restarts)
                .sum::<u64>()
    }

    /// Finds a node by its path of ids below this one, e.g. `["domains", "vm-1"]`.
    pub fn find(&self, path: &[&str]) -> Option<&TreeNode> {
        match path.split_first() {
            None => Some(self),
            Some((first, rest)) => self
                .children
                .iter()
                .find(|c| c.id == *first)
                .and_then(|c| c.find(rest)),
        }
    }
}

/// Children of one supervisor, counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ChildCount {
    pub specs: usize,
    pub active: usize,
    pub supervisors: usize,
    pub workers: usize,
}
