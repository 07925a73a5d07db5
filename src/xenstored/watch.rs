//! Watches, indexed by path so that a change finds its watchers with a few
//! lookups (its path and each ancestor, plus a range for removals) instead
//! of scanning every watch.

use std::collections::{BTreeMap, HashMap};

use crate::xs::path::depth;
use crate::xs::ConnId;

/// One watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watch {
    pub conn: ConnId,
    /// Absolute or special ("@...").
    pub path: String,
    pub token: Vec<u8>,
    /// Registered with a relative path: events carry relative paths.
    pub relative: bool,
    /// At most this many levels below `path`.
    pub depth: Option<u32>,
}

/// A watch that a change fires, and the path its event names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    pub conn: ConnId,
    pub path: String,
    pub token: Vec<u8>,
    pub relative: bool,
}

/// All watches.
#[derive(Debug, Default)]
pub struct Watches {
    by_path: BTreeMap<String, Vec<Watch>>,
    per_conn: HashMap<ConnId, usize>,
}

impl Watches {
    pub fn count(&self, conn: ConnId) -> usize {
        self.per_conn.get(&conn).copied().unwrap_or(0)
    }

    pub fn total(&self) -> usize {
        self.per_conn.values().sum()
    }

    /// Adds a watch; false if this connection has one with that path and token.
    pub fn add(&mut self, w: Watch) -> bool {
        let list = self.by_path.entry(w.path.clone()).or_default();
        if list.iter().any(|x| x.conn == w.conn && x.token == w.token) {
            return false;
        }
        *self.per_conn.entry(w.conn).or_default() += 1;
        list.push(w);
        true
    }

    /// Removes a watch; false if there was none.
    pub fn remove(&mut self, conn: ConnId, path: &str, token: &[u8]) -> bool {
        let Some(list) = self.by_path.get_mut(path) else {
            return false;
        };
        let before = list.len();
        list.retain(|w| !(w.conn == conn && w.token == token));
        let removed = before != list.len();
        if list.is_empty() {
            self.by_path.remove(path);
        }
        if removed {
            self.dec(conn, 1);
        }
        removed
    }

    fn dec(&mut self, conn: ConnId, n: usize) {
        if let Some(c) = self.per_conn.get_mut(&conn) {
            *c = c.saturating_sub(n);
            if *c == 0 {
                self.per_conn.remove(&conn);
            }
        }
    }

    /// Removes every watch of a connection.
    pub fn remove_conn(&mut self, conn: ConnId) {
        if self.per_conn.remove(&conn).is_none() {
            return;
        }
        self.by_path.retain(|_, list| {
            list.retain(|w| w.conn != conn);
            !list.is_empty()
        });
    }

    /// The watches a change at `path` fires: those on `path` or an ancestor
    /// (within their depth), naming `path`; and, when a subtree was removed
    /// (`exact` false), those below `path`, naming their own path.
    pub fn fired(&self, path: &str, exact: bool) -> Vec<Fired> {
        let mut out = Vec::new();
        if path.starts_with('@') {
            for w in self.by_path.get(path).into_iter().flatten() {
                out.push(fired(w, path));
            }
            return out;
        }
        let d = depth(path);
        let mut prefix = Some(path);
        while let Some(p) = prefix {
            for w in self.by_path.get(p).into_iter().flatten() {
                if w.depth.is_none_or(|max| d - depth(p) <= max as usize) {
                    out.push(fired(w, path));
                }
            }
            prefix = crate::xs::path::parent(p);
        }
        if !exact {
            let start = if path == "/" {
                "/".to_owned()
            } else {
                format!("{path}/")
            };
            for (wpath, list) in self.by_path.range(start.clone()..) {
                if !wpath.starts_with(&start) {
                    break;
                }
                if wpath == path {
                    continue;
                }
                for w in list {
                    out.push(fired(w, wpath));
                }
            }
        }
        out
    }
}

fn fired(w: &Watch, path: &str) -> Fired {
    Fired {
        conn: w.conn,
        path: path.to_owned(),
        token: w.token.clone(),
        relative: w.relative,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(conn: ConnId, path: &str, depth: Option<u32>) -> Watch {
        Watch {
            conn,
            path: path.into(),
            token: path.as_bytes().to_vec(),
            relative: false,
            depth,
        }
    }

    #[test]
    fn ancestors_depth_descendants_and_duplicates() {
        let mut ws = Watches::default();
        assert!(ws.add(w(1, "/a", None)));
        assert!(!ws.add(w(1, "/a", None)));
        assert!(ws.add(w(2, "/a", Some(1))));
        assert!(ws.add(w(1, "/a/b/c", None)));
        assert!(ws.add(w(1, "/ab", None)));
        assert!(ws.add(w(3, "/", None)));
        let paths = |f: Vec<Fired>| {
            let mut v: Vec<(ConnId, String)> = f.into_iter().map(|f| (f.conn, f.path)).collect();
            v.sort();
            v
        };
        assert_eq!(
            paths(ws.fired("/a/b", true)),
            [(1, "/a/b".into()), (2, "/a/b".into()), (3, "/a/b".into())]
        );
        // Depth 1: /a/b/x is two levels below /a.
        assert_eq!(
            paths(ws.fired("/a/b/x", true)),
            [(1, "/a/b/x".into()), (3, "/a/b/x".into())]
        );
        // Removing /a/b fires the watch below it, naming the watch's path; not /ab.
        assert_eq!(
            paths(ws.fired("/a/b", false)),
            [
                (1, "/a/b".into()),
                (1, "/a/b/c".into()),
                (2, "/a/b".into()),
                (3, "/a/b".into())
            ]
        );
        assert!(ws.remove(1, "/a", b"/a"));
        assert!(!ws.remove(1, "/a", b"/a"));
        ws.remove_conn(1);
        assert_eq!(ws.count(1), 0);
        assert_eq!(ws.total(), 2);
    }
}
