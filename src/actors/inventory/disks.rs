//! One writer per disk: a path or block device attached read-write to a VM
//! (running or not) is attached nowhere else, not even a second time to
//! the same VM; read-only attachments share freely. The inventory checks
//! it, serially, before a VM is created or a disk plugged.
//!
//! Two disks are the same when their paths resolve to the same file
//! (symlinks followed), or name the same inode (hard links), or the same
//! block device (`/dev/mapper/x` and `/dev/dm-0`).

use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::vm::{DiskMode, VmSpec};

/// What a disk's backing is, for comparison.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Node {
    File { dev: u64, ino: u64 },
    Block { rdev: u64 },
}

/// A disk's identity: its path with symlinks resolved (the path as given
/// when it does not exist yet), and the file or device behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskKey {
    pub path: PathBuf,
    pub node: Option<Node>,
}

impl DiskKey {
    /// Reads a disk's identity (blocking: run it on the blocking pool).
    pub fn of(path: &Path) -> DiskKey {
        let resolved = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
        let node = std::fs::metadata(&resolved).ok().map(|m| {
            if m.file_type().is_block_device() {
                Node::Block { rdev: m.rdev() }
            } else {
                Node::File {
                    dev: m.dev(),
                    ino: m.ino(),
                }
            }
        });
        DiskKey {
            path: resolved,
            node,
        }
    }

    fn same(&self, other: &DiskKey) -> bool {
        self.path == other.path || (self.node.is_some() && self.node == other.node)
    }
}

/// One disk of one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskUse {
    pub vm: uuid::Uuid,
    /// The VM's name (errors name the VM holding a disk).
    pub name: String,
    /// The VM's device ("xvda").
    pub device: String,
    /// The path as the VM's spec gives it.
    pub path: PathBuf,
    pub mode: DiskMode,
    pub key: DiskKey,
}

/// The identities of a spec's disks (blocking).
pub fn uses_of(vm: uuid::Uuid, spec: &VmSpec) -> Vec<DiskUse> {
    spec.disks
        .iter()
        .map(|d| DiskUse {
            vm,
            name: spec.name.clone(),
            device: d.device.clone(),
            path: d.path.clone(),
            mode: d.mode,
            key: DiskKey::of(&d.path),
        })
        .collect()
}

/// The error a disk `new` gets when `held` holds it.
pub fn in_use(new: &DiskUse, held: &DiskUse) -> super::InventoryError {
    let writable = held.mode == DiskMode::Rw;
    super::InventoryError::DiskInUse {
        path: new.path.clone(),
        vm: held.name.clone(),
        device: held.device.clone(),
        writable,
        hint: if writable {
            "detach it there first"
        } else {
            "attach it read-only here too, or detach it there first"
        },
    }
}

/// Every VM's disks, and those of creations and plugs under way.
#[derive(Debug, Default)]
pub struct Disks {
    by_vm: HashMap<uuid::Uuid, Vec<DiskUse>>,
    /// Disks reserved by a creation or a plug until it is done.
    pending: HashMap<u64, Vec<DiskUse>>,
    next: u64,
}

impl Disks {
    fn all(&self) -> impl Iterator<Item = &DiskUse> {
        self.by_vm.values().chain(self.pending.values()).flatten()
    }

    /// The first use `new` may not join (one of them read-write), among
    /// everything held and among `new` itself.
    pub fn conflict<'a>(&'a self, new: &'a [DiskUse]) -> Option<(&'a DiskUse, &'a DiskUse)> {
        for (i, n) in new.iter().enumerate() {
            let clash = |u: &&DiskUse| {
                u.key.same(&n.key) && (u.mode == DiskMode::Rw || n.mode == DiskMode::Rw)
            };
            if let Some(held) = self.all().find(clash) {
                return Some((n, held));
            }
            if let Some(held) = new[..i].iter().find(clash) {
                return Some((n, held));
            }
        }
        None
    }

    /// Holds `uses` until [`release`](Self::release)d; returns the token.
    pub fn reserve(&mut self, uses: Vec<DiskUse>) -> u64 {
        self.next += 1;
        self.pending.insert(self.next, uses);
        self.next
    }

    pub fn release(&mut self, token: u64) -> Vec<DiskUse> {
        self.pending.remove(&token).unwrap_or_default()
    }

    /// The VM's disks are now these.
    pub fn set(&mut self, vm: uuid::Uuid, uses: Vec<DiskUse>) {
        self.by_vm.insert(vm, uses);
    }

    /// Adds one disk to a VM's.
    pub fn add(&mut self, uses: Vec<DiskUse>) {
        for u in uses {
            self.by_vm.entry(u.vm).or_default().push(u);
        }
    }

    /// Takes one disk out of a VM's.
    pub fn take_out(&mut self, vm: uuid::Uuid, device: &str) {
        if let Some(uses) = self.by_vm.get_mut(&vm) {
            uses.retain(|u| u.device != device);
        }
    }

    pub fn forget(&mut self, vm: uuid::Uuid) {
        self.by_vm.remove(&vm);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(vm: u128, device: &str, path: &Path, mode: DiskMode) -> DiskUse {
        DiskUse {
            vm: uuid::Uuid::from_u128(vm),
            name: format!("vm{vm}"),
            device: device.into(),
            path: path.to_owned(),
            mode,
            key: DiskKey::of(path),
        }
    }

    #[test]
    fn one_writer_per_disk_readers_share() {
        use DiskMode::{Ro, Rw};
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("a.img");
        std::fs::write(&img, b"disk").unwrap();
        let link = dir.path().join("link.img");
        std::os::unix::fs::symlink(&img, &link).unwrap();
        let hard = dir.path().join("hard.img");
        std::fs::hard_link(&img, &hard).unwrap();
        let other = dir.path().join("b.img");
        std::fs::write(&other, b"disk").unwrap();

        let mut disks = Disks::default();
        disks.set(uuid::Uuid::from_u128(1), vec![disk(1, "xvda", &img, Rw)]);
        // The same file under any name, read-write or read-only: refused.
        for path in [&img, &link, &hard] {
            for mode in [Rw, Ro] {
                let new = [disk(2, "xvda", path, mode)];
                let (_, held) = disks.conflict(&new).unwrap();
                assert_eq!(
                    (held.vm, held.device.as_str()),
                    (uuid::Uuid::from_u128(1), "xvda")
                );
            }
        }
        // Another file: fine. A path that does not exist yet: by its name.
        assert!(disks.conflict(&[disk(2, "xvda", &other, Rw)]).is_none());
        let missing = dir.path().join("nope.img");
        assert!(disks.conflict(&[disk(2, "xvda", &missing, Rw)]).is_none());
        // Twice in one VM, one of them writable: refused; readers share.
        let twice = [disk(3, "xvda", &other, Rw), disk(3, "xvdb", &other, Ro)];
        assert!(disks.conflict(&twice).is_some());
        let readers = [disk(3, "xvda", &other, Ro), disk(3, "xvdb", &other, Ro)];
        assert!(disks.conflict(&readers).is_none());
        // What is reserved counts until released.
        let token = disks.reserve(readers.to_vec());
        assert!(disks.conflict(&[disk(4, "xvda", &other, Rw)]).is_some());
        assert!(disks.conflict(&[disk(4, "xvda", &other, Ro)]).is_none());
        disks.release(token);
        assert!(disks.conflict(&[disk(4, "xvda", &other, Rw)]).is_none());
        // A VM forgotten, or its disk taken out, frees it.
        disks.take_out(uuid::Uuid::from_u128(1), "xvda");
        assert!(disks.conflict(&[disk(2, "xvda", &img, Rw)]).is_none());
    }
}
