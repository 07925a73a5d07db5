//! Runs `xenithd xenstored` on a temporary socket, for tests and benches.

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `xenithd xenstored` process; killed when dropped.
pub struct Xenstored {
    pub child: Child,
    pub socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Xenstored {
    /// Starts it and waits (up to 10 s) until its socket answers.
    pub fn start(xenithd: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(xenithd, dir)
    }

    /// Kills it (SIGKILL) and starts a fresh one on the same socket.
    pub fn restart(mut self, xenithd: &str) -> Self {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = std::mem::replace(&mut self._dir, tempfile::tempdir().unwrap());
        Self::start_in(xenithd, dir)
    }

    fn start_in(xenithd: &str, dir: tempfile::TempDir) -> Self {
        let socket = dir.path().join("xenstored.sock");
        let child = Command::new(xenithd)
            .args(["xenstored", "--socket"])
            .arg(&socket)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        while UnixStream::connect(&socket).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "xenithd xenstored did not come up"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Self {
            child,
            socket,
            _dir: dir,
        }
    }
}

impl Drop for Xenstored {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
