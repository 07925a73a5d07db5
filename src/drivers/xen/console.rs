//! Consoles on Xen are xenconsoled's: a console reader follows the log it
//! writes for the domain (`xenconsoled --log=guest`), from where the last
//! reader of that domain stopped.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::mpsc;

use super::lock;
use crate::drivers::hypervisor::DomId;

/// How far the console readers got, by domid: in which log, to which byte.
pub(super) type ConsoleOffsets = HashMap<u16, (PathBuf, u64)>;

/// Where a console reader opened now starts in xenconsoled's log: where
/// the last reader of this domain stopped or, at the first open, at the
/// log's end (what is before it is an earlier domain's of that name).
pub(super) fn start(
    path: &std::path::Path,
    read: &Mutex<ConsoleOffsets>,
    domid: DomId,
) -> Option<u64> {
    let last_read = match lock(read).get(&domid.0) {
        Some((log, at)) if log == path => Some(*at),
        _ => None,
    };
    last_read.or_else(|| std::fs::metadata(path).ok().map(|m| m.len()))
}

/// Follows xenconsoled's log of a domain from `from` (none: from its
/// start, once it exists) until the reader goes away or the domain does,
/// keeping in `read` how far it got.
pub(super) fn follow_log(
    path: &std::path::Path,
    from: Option<u64>,
    tx: &mpsc::UnboundedSender<Vec<u8>>,
    alive: impl Fn() -> bool,
    domid: DomId,
    read: &Mutex<ConsoleOffsets>,
    poll: Duration,
) {
    let mut offset = from;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if tx.is_closed() {
            return;
        }
        let alive = alive();
        if let Ok(mut f) = std::fs::File::open(path) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            let from = match offset {
                Some(o) if o <= len => o,
                _ => 0, // new file, or rotated
            };
            if f.seek(SeekFrom::Start(from)).is_ok() {
                let mut at = from;
                while let Ok(n) = f.read(&mut buf) {
                    if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                    at += u64::try_from(n).unwrap_or(u64::MAX);
                }
                offset = Some(at);
                lock(read).insert(domid.0, (path.to_owned(), at));
            }
        }
        if !alive {
            lock(read).remove(&domid.0);
            return;
        }
        std::thread::sleep(poll);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// Reads what a follower sends until `want` bytes came (or 10 s).
    fn collect(rx: &mut mpsc::UnboundedReceiver<Vec<u8>>, want: usize) -> Vec<u8> {
        let mut got = Vec::new();
        let t0 = std::time::Instant::now();
        while got.len() < want && t0.elapsed() < Duration::from_secs(10) {
            match rx.try_recv() {
                Ok(chunk) => got.extend(chunk),
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        got
    }

    #[test]
    fn a_console_reader_opened_again_goes_on_where_the_last_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("guest-vm.log");
        let mut log = std::fs::File::create(&path).unwrap();
        log.write_all(b"an earlier run\n").unwrap();
        let read = Arc::new(Mutex::new(HashMap::new()));
        let alive = Arc::new(AtomicBool::new(true));
        let follow = |tx: mpsc::UnboundedSender<Vec<u8>>| {
            let (path, read, alive) = (path.clone(), read.clone(), alive.clone());
            let from = start(&path, &read, DomId(7));
            std::thread::spawn(move || {
                let alive = || alive.load(Ordering::Acquire);
                let poll = Duration::from_millis(10);
                follow_log(&path, from, &tx, alive, DomId(7), &read, poll);
            })
        };

        // The first reader starts at the end: the earlier run is not news.
        let (tx, mut rx) = mpsc::unbounded_channel();
        let first = follow(tx);
        log.write_all(b"boot\n").unwrap();
        assert_eq!(collect(&mut rx, 5), b"boot\n");
        // It goes away (the console actor restarts); the guest writes on.
        drop(rx);
        first.join().unwrap();
        log.write_all(b"while nobody read\n").unwrap();

        let (tx, mut rx) = mpsc::unbounded_channel();
        let second = follow(tx);
        log.write_all(b"after\n").unwrap();
        assert_eq!(collect(&mut rx, 24), b"while nobody read\nafter\n");
        // The domain dies: the reader ends and forgets the domain.
        alive.store(false, Ordering::Release);
        second.join().unwrap();
        assert!(read.lock().unwrap().is_empty());
    }
}
