//! The `xenith` shell: one-shot commands (output, --json, exit codes), the
//! completion scripts, and the interactive shell driven through a
//! pseudo-terminal (typing, Tab completion, help, Ctrl-C, history, quit).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::daemon::{xenith, Xenithd};

const XENITHD: &str = env!("CARGO_BIN_EXE_xenithd");
const XENITH: &str = env!("CARGO_BIN_EXE_xenith");

fn vm_toml(dir: &std::path::Path, name: &str) -> String {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "name = \"{name}\"\ntype = \"pv\"\nmemory_mib = 128\nkernel = \"/boot/vmlinuz\"\n\
             [[disks]]\npath = \"/d.img\"\ndevice = \"xvda\"\n[[nics]]\nbridge = \"xenbr0\"\n"
        ),
    )
    .unwrap();
    path.display().to_string()
}

#[test]
fn one_shot_commands_print_for_people_or_as_json_and_exit_0_or_1() {
    let d = Xenithd::start(XENITHD, &[]);
    let file = vm_toml(d.dir.path(), "web");
    let (code, uuid, _) = xenith(&d, &["vm", "create", &file]);
    assert_eq!(code, 0);
    let uuid = uuid.trim().to_owned();
    assert_eq!(uuid.len(), 36);

    let (code, out, _) = xenith(&d, &["vm", "list"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "NAME  POWER   DOMID  UUID");
    assert_eq!(lines[1], format!("web   Halted  -      {uuid}"));

    assert_eq!(
        xenith(&d, &["vm", "start", "web"]).1,
        "web: Running (domid 1)\n"
    );
    // Not a tty: no colour codes.
    let t0 = Instant::now();
    let out = loop {
        let (_, out, _) = xenith(&d, &["vm", "get", "web"]);
        if out.matches("Connected").count() == 2 || t0.elapsed() > Duration::from_secs(10) {
            break out;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        out.contains("power_state  Running") && !out.contains('\x1b'),
        "{out}"
    );
    assert!(out.contains("vbd   xvda    Connected"), "{out}");

    let (code, out, _) = xenith(&d, &["--json", "vm", "get", "web"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["power_state"], "Running");

    let (_, out, _) = xenith(&d, &["vm", "console", "web", "--lines", "3"]);
    assert!(out.contains("link up") || out.contains("login"), "{out}");

    assert_eq!(
        xenith(
            &d,
            &["vbd", "plug", "web", "/e.img", "xvde", "--mode", "ro"]
        )
        .1,
        "xvde plugged\n"
    );
    assert_eq!(
        xenith(&d, &["vbd", "unplug", "web", "xvde"]).1,
        "xvde unplugged\n"
    );
    assert_eq!(xenith(&d, &["vif", "plug", "web"]).1, "1 plugged\n");
    assert_eq!(
        xenith(&d, &["vif", "unplug", "web", "1"]).1,
        "1 unplugged\n"
    );
    assert_eq!(xenith(&d, &["xs", "write", "/t/k", "v"]).0, 0);
    assert_eq!(xenith(&d, &["xs", "read", "/t/k"]).1, "v\n");
    assert_eq!(xenith(&d, &["xs", "ls", "/t"]).1, "k\n");
    assert_eq!(xenith(&d, &["xs", "rm", "/t"]).0, 0);
    let (_, out, _) = xenith(&d, &["tree"]);
    assert!(
        out.contains(&format!("{uuid} (supervisor) running")),
        "{out}"
    );
    assert!(out.contains("vbd:xvda (worker) running"), "{out}");

    // Errors: exit 1, the message on stderr, nothing on stdout.
    let (code, out, err) = xenith(&d, &["vm", "start", "web"]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(err.contains("VM_BAD_POWER_STATE"), "{err}");
    let (code, _, err) = xenith(&d, &["xs", "read", "/nope"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("XENSTORE_ERROR") && err.contains("ENOENT"),
        "{err}"
    );
    assert_eq!(xenith(&d, &["vm", "frobnicate"]).0, 1);

    // Completion scripts come from the same command definitions.
    let (code, bash, _) = xenith(&d, &["completions", "bash"]);
    assert_eq!(code, 0);
    assert!(
        bash.contains("_xenith") && bash.contains("console"),
        "{bash}"
    );
    assert!(xenith(&d, &["completions", "zsh"])
        .1
        .starts_with("#compdef xenith"));
}

/// A process on a pseudo-terminal, and what it has printed so far.
struct Pty {
    child: std::process::Child,
    master: std::fs::File,
    screen: mpsc::Receiver<Vec<u8>>,
    seen: String,
}

impl Pty {
    fn spawn(cmd: &mut Command) -> Pty {
        use std::os::unix::process::CommandExt;
        let pty = nix::pty::openpty(None, None).unwrap();
        let slave: OwnedFd = pty.slave;
        // SAFETY: between fork and exec the closure only makes async-signal-
        // safe calls (setsid, ioctl) on the child's own descriptors: a new
        // session whose controlling terminal is the pty (stdin), as a login
        // shell has, so that Ctrl-C typed there sends SIGINT.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                if nix::libc::ioctl(0, nix::libc::TIOCSCTTY as _, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave))
            .spawn()
            .unwrap();
        let master = std::fs::File::from(pty.master);
        let mut reader = master.try_clone().unwrap();
        let (tx, screen) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Pty {
            child,
            master,
            screen,
            seen: String::new(),
        }
    }

    fn send(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).unwrap();
    }

    /// Waits until the screen (since the last mark) shows `text`.
    fn expect(&mut self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.seen.contains(text) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.screen.recv_timeout(left) {
                Ok(chunk) => self.seen.push_str(&String::from_utf8_lossy(&chunk)),
                Err(_) => panic!("never saw {text:?}; the screen:\n{}", self.seen),
            }
        }
        // Later expectations look past this point.
        let at = self.seen.find(text).unwrap() + text.len();
        self.seen.drain(..at);
    }
}

#[test]
fn the_interactive_shell_on_a_terminal() {
    let d = Xenithd::start(XENITHD, &[]);
    let file = vm_toml(d.dir.path(), "database");
    assert_eq!(xenith(&d, &["vm", "create", &file]).0, 0);
    let state = d.dir.path().join("state-home");
    let mut sh = Pty::spawn(
        Command::new(XENITH)
            .arg("--socket")
            .arg(&d.socket)
            .env("XDG_STATE_HOME", &state)
            .env("TERM", "xterm")
            .env_remove("NO_COLOR"),
    );
    sh.expect("xenith> ");
    sh.send("vm list\r");
    sh.expect("NAME");
    sh.expect("database");
    // On a terminal, power states are coloured.
    sh.expect("\x1b[2mHalted\x1b[0m");
    sh.expect("xenith> ");

    // Tab completes the verb, then the VM's name.
    sh.send("vm sta\t");
    sh.expect("vm start ");
    sh.send("data\t");
    sh.expect("database");
    sh.send("\r");
    sh.expect("database: Running (domid 1)");
    sh.expect("xenith> ");
    // xenstore paths complete from xs.ls.
    sh.send("xs ls /loc\t");
    sh.expect("/local");
    sh.send("/domain/1/cont\t");
    sh.expect("control");
    sh.send("\r");
    sh.expect("feature-poweroff");
    sh.expect("xenith> ");

    // SR and VDI names complete from sr.list and vdi.list.
    let sr_dir = d.dir.path().join("sr");
    let sr_dir = sr_dir.to_str().unwrap();
    assert_eq!(
        xenith(
            &d,
            &["sr", "create", "local", "--type", "file", "--path", sr_dir]
        )
        .0,
        0
    );
    assert_eq!(
        xenith(&d, &["vdi", "create", "local", "rootdisk", "--size", "16"]).0,
        0
    );
    sh.send("sr get lo\t");
    sh.expect("local");
    sh.send("\r");
    sh.expect("rootdisk");
    sh.expect("xenith> ");
    sh.send("vdi snapshot roo\t");
    sh.expect("rootdisk");
    sh.send("--name snap\r");
    sh.expect("xenith> ");
    sh.send("vdi list --sr lo\t");
    sh.expect("local");
    sh.send("\r");
    sh.expect("ro,snapshot");
    sh.expect("xenith> ");

    sh.send("help vm\r");
    sh.expect("shutdown");
    sh.expect("xenith> ");
    // A bad command is an error; the shell goes on.
    sh.send("vm frobnicate\r");
    sh.expect("error");
    sh.expect("xenith> ");
    // Ctrl-C cancels the line being typed...
    sh.send("vm kill database\x03");
    sh.expect("xenith> ");
    // ...and stops a running stream without leaving.
    sh.send("events\r");
    std::thread::sleep(Duration::from_millis(300));
    sh.send("\x03");
    sh.expect("interrupted");
    sh.expect("xenith> ");
    sh.send("vm get database\r");
    sh.expect("power_state");
    sh.expect("Running");
    sh.expect("xenith> ");
    sh.send("quit\r");
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = sh.child.try_wait().unwrap() {
            break s;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "quit did not leave");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
    // The line typed then cancelled is not in the history; the rest are.
    let history = std::fs::read_to_string(state.join("xenith/history")).unwrap();
    assert!(
        history.contains("vm list") && history.contains("help vm"),
        "{history}"
    );
    assert!(!history.contains("vm kill"), "{history}");
}

/// Reads a child's stdout until `text` shows (bounded), then kills it.
fn stream_until(mut child: std::process::Child, text: &str, then: impl FnOnce()) -> String {
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = String::new();
    let mut then = Some(then);
    let deadline = Instant::now() + Duration::from_secs(10);
    // First let it start streaming, then act, then look for `text`.
    std::thread::sleep(Duration::from_millis(500));
    while let Ok(chunk) = rx.try_recv() {
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    if let Some(f) = then.take() {
        f();
    }
    while !seen.contains(text) {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(chunk) => seen.push_str(&String::from_utf8_lossy(&chunk)),
            Err(_) => panic!("never saw {text:?}; output:\n{seen}"),
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    seen
}

#[test]
fn console_follow_and_xs_watch_stream_until_stopped() {
    let d = Xenithd::start(XENITHD, &[]);
    let file = vm_toml(d.dir.path(), "follow");
    assert_eq!(xenith(&d, &["vm", "create", &file]).0, 0);
    assert_eq!(xenith(&d, &["vm", "start", "follow"]).0, 0);
    let spawn = |args: &[&str]| {
        Command::new(XENITH)
            .arg("--socket")
            .arg(&d.socket)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // The guest's power-off message arrives through --follow.
    let seen = stream_until(
        spawn(&["vm", "console", "follow", "--follow"]),
        "reboot: Power down",
        || {
            assert_eq!(xenith(&d, &["vm", "shutdown", "follow"]).0, 0);
        },
    );
    assert!(seen.contains("login:"), "{seen}");
    // xs watch prints the changed path.
    let seen = stream_until(spawn(&["xs", "watch", "/watched"]), "/watched/k", || {
        assert_eq!(xenith(&d, &["xs", "write", "/watched/k", "1"]).0, 0);
    });
    assert!(seen.starts_with("/watched\n"), "{seen}");
}
