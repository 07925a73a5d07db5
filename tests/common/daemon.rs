//! Runs `xenithd` on temporary paths, for tests.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// A running xenithd; killed when dropped.
pub struct Xenithd {
    pub child: Child,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Xenithd {
    /// Starts xenithd on the embedded defaults in a fresh directory.
    pub fn start(xenithd: &str, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(xenithd, dir, extra)
    }

    /// Starts xenithd with its socket and state under `dir` (reused across restarts).
    pub fn start_in(xenithd: &str, dir: tempfile::TempDir, extra: &[&str]) -> Self {
        let socket = dir.path().join("run/xenith.sock");
        let state_dir = dir.path().join("state");
        let child = Command::new(xenithd)
            .arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(&state_dir)
            .args(["--hypervisor", "sim", "--xenstore", "embedded"])
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("XENITHD_LOG").unwrap_or_else(|_| "xenith=info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("xenithd.log")).unwrap())
            .spawn()
            .unwrap();
        wait_for_socket(&socket, "xenithd", 20);
        Self {
            child,
            socket,
            state_dir,
            dir,
        }
    }

    /// The embedded xenstored's socket (next to the RPC socket).
    pub fn xenstored_socket(&self) -> PathBuf {
        self.socket.with_file_name("xenstored.sock")
    }

    /// SIGTERM, wait; returns the directory for a restart.
    pub fn stop(mut self) -> (Option<i32>, tempfile::TempDir) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let code = self.child.wait().unwrap().code();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        (code, dir)
    }
}

impl Drop for Xenithd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failing test shows the end of the daemon's log.
        if std::thread::panicking() {
            let log =
                std::fs::read_to_string(self.dir.path().join("xenithd.log")).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!(
                "--- xenithd.log (last {} lines) ---\n{}",
                tail.len(),
                tail.join("\n")
            );
        }
        // Killed, the daemon could not stop its device models: do it here.
        if let Some(dir) = self.socket.parent() {
            let emulators = xenith::drivers::emulator::EmulatorConfig {
                qemu: "qemu-system-x86_64".into(),
                run_dir: dir.to_owned(),
                host: xenith::drivers::HypervisorKind::Sim,
            };
            emulators.reap(&[]);
        }
    }
}

/// Waits (up to `secs` seconds) until something listens on `socket`.
pub fn wait_for_socket(socket: &std::path::Path, what: &str, secs: u64) {
    let t0 = std::time::Instant::now();
    while std::os::unix::net::UnixStream::connect(socket).is_err() {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(secs),
            "{what} did not come up on {}",
            socket.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Runs the `xenith` shell against `d` once: its exit code, stdout, stderr.
pub fn xenith(d: &Xenithd, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_xenith"))
        .arg("--socket")
        .arg(&d.socket)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
