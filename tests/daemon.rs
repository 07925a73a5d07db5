//! xenithd and xenith as users run them: flags, config errors, the socket
//! rules, RPC answers, bad input, signals.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rmpv::Value;

mod common;

const XENITHD: &str = env!("CARGO_BIN_EXE_xenithd");
const XENITH: &str = env!("CARGO_BIN_EXE_xenith");

struct Daemon {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn start(extra: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("run/xenith.sock");
        let mut cmd = Command::new(XENITHD);
        cmd.arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(dir.path().join("state"));
        cmd.args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let child = cmd.spawn().unwrap();
        let d = Daemon {
            child,
            socket,
            _dir: dir,
        };
        d.wait_ready();
        d
    }

    fn wait_ready(&self) {
        common::daemon::wait_for_socket(&self.socket, "xenithd", 10);
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    fn stop(self) -> (std::process::ExitStatus, String) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.stop_after_signal()
    }

    fn shell(&self, args: &[&str]) -> Output {
        Command::new(XENITH)
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn encode(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, v).unwrap();
    out
}

fn request(id: u32, method: &str, params: Value) -> Vec<u8> {
    encode(&Value::Array(vec![
        0.into(),
        id.into(),
        method.into(),
        Value::Array(vec![params]),
    ]))
}

fn read_frame(s: &mut UnixStream) -> Value {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    rmpv::decode::read_value(s).unwrap()
}

fn field<'a>(v: &'a Value, key: &str) -> &'a Value {
    v.as_map()
        .unwrap()
        .iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
        .unwrap()
}

#[test]
fn serves_host_info_and_the_tree_and_stops_in_order_on_sigterm() {
    let d = Daemon::start(&[]);
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let mut s = UnixStream::connect(&d.socket).unwrap();
    s.write_all(&request(1, "host.info", Value::Map(vec![])))
        .unwrap();
    let reply = read_frame(&mut s);
    let items = reply.as_array().unwrap();
    assert_eq!((items[0].as_u64(), items[1].as_u64()), (Some(1), Some(1)));
    assert!(items[2].is_nil(), "{reply}");
    assert_eq!(field(&items[3], "hypervisor").as_str(), Some("sim"));
    assert_eq!(field(&items[3], "total_mib").as_u64(), Some(65536));
    assert_eq!(field(&items[3], "free_mib").as_u64(), Some(65536 - 1024));

    let out = d.shell(&["--json", "tree"]);
    assert!(out.status.success());
    let tree: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids = |node: &serde_json::Value| -> Vec<String> {
        node["children"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        ids(&tree),
        ["host", "xenstored", "tasks", "storage", "rpc", "vms"]
    );
    assert_eq!(ids(&tree["children"][3]), ["srs", "catalog"]);
    assert_eq!(ids(&tree["children"][5]), ["domains", "inventory"]);
    assert_eq!(ids(&tree["children"][1]), ["store", "xenstore-socket"]);
    assert_eq!(tree["children"][0]["restarts"], 0);

    let socket = d.socket.clone();
    let (status, log) = d.stop();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("SIGTERM"), "{log}");
    assert!(!socket.exists(), "socket removed at shutdown");
}

#[test]
fn sigint_also_stops_it_cleanly() {
    let d = Daemon::start(&[]);
    d.signal(nix::sys::signal::Signal::SIGINT);
    let (status, log) = d.stop_after_signal();
    assert_eq!(status.code(), Some(0), "{log}");
}

impl Daemon {
    fn stop_after_signal(mut self) -> (std::process::ExitStatus, String) {
        let status = self.child.wait().unwrap();
        let mut err = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        (status, err)
    }
}

#[test]
fn many_requests_in_flight_on_one_connection_all_answered() {
    let d = Daemon::start(&[]);
    let mut s = UnixStream::connect(&d.socket).unwrap();
    let mut batch = Vec::new();
    for id in 0..500u32 {
        let method = if id % 2 == 0 {
            "host.info"
        } else {
            "supervisor.tree"
        };
        batch.extend(request(id, method, Value::Map(vec![])));
    }
    s.write_all(&batch).unwrap();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..500 {
        let r = read_frame(&mut s);
        let items = r.as_array().unwrap();
        assert!(items[2].is_nil(), "{r}");
        seen.insert(items[1].as_u64().unwrap());
    }
    assert_eq!(seen.len(), 500);
}

#[test]
fn bad_requests_get_errors_and_an_undecodable_stream_closes_only_its_connection() {
    let d = Daemon::start(&[]);
    let mut good = UnixStream::connect(&d.socket).unwrap();
    let mut s = UnixStream::connect(&d.socket).unwrap();
    // Unknown method, a missing parameter, an unknown one, a non-request frame.
    s.write_all(&request(1, "no.such", Value::Map(vec![])))
        .unwrap();
    s.write_all(&request(2, "session.login", Value::Map(vec![])))
        .unwrap();
    s.write_all(&request(
        3,
        "host.info",
        Value::Map(vec![("bogus".into(), 1.into())]),
    ))
    .unwrap();
    s.write_all(&encode(&Value::from("hello"))).unwrap();
    let mut errors = Vec::new();
    for _ in 0..4 {
        let r = read_frame(&mut s);
        let items = r.as_array().unwrap().clone();
        errors.push((
            items[1].as_u64(),
            field(&items[2], "code").as_str().unwrap().to_owned(),
            field(&items[2], "message").as_str().unwrap().to_owned(),
        ));
    }
    errors.sort();
    assert_eq!(errors[0].0, None);
    assert_eq!(errors[0].1, "INVALID_PARAMS");
    assert_eq!(
        (errors[1].0, errors[1].1.as_str()),
        (Some(1), "UNKNOWN_METHOD")
    );
    assert_eq!(
        (errors[2].0, errors[2].1.as_str()),
        (Some(2), "INVALID_PARAMS")
    );
    assert!(errors[2].2.contains("token"), "{}", errors[2].2);
    assert_eq!(
        (errors[3].0, errors[3].1.as_str()),
        (Some(3), "INVALID_PARAMS")
    );
    assert!(errors[3].2.contains("bogus"), "{}", errors[3].2);
    // Bytes that are not MessagePack: this connection is closed...
    s.write_all(&[0xc1, 0xc1, 0xc1]).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(s.read(&mut buf).unwrap(), 0, "connection closed");
    // ...and the other one still works, as does a new one.
    good.write_all(&request(7, "host.info", Value::Map(vec![])))
        .unwrap();
    assert!(read_frame(&mut good).as_array().unwrap()[2].is_nil());
    let out = d.shell(&["host", "info"]);
    assert!(out.status.success());
}

#[test]
fn an_oversized_frame_closes_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("x.toml");
    std::fs::write(&config, "[rpc]\nmax_frame_bytes = 4096\n").unwrap();
    let d = Daemon::start(&["--config", config.to_str().unwrap()]);
    let mut s = UnixStream::connect(&d.socket).unwrap();
    let big = Value::String("x".repeat(10_000).into());
    let _ = s.write_all(&request(1, "host.info", big));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(s.read(&mut buf).unwrap_or(0), 0);
    assert!(d.shell(&["host", "info"]).status.success());
}

#[test]
fn a_second_daemon_is_refused_and_a_stale_socket_is_replaced() {
    let d = Daemon::start(&[]);
    // Another state directory, the same socket: refused on the socket,
    // exit 2 (no restart loop), one line naming the live daemon.
    let other = tempfile::tempdir().unwrap();
    let out = Command::new(XENITHD)
        .arg("--socket")
        .arg(&d.socket)
        .arg("--state-dir")
        .arg(other.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr,
        format!(
            "xenithd is already running (pid {}, {})\n",
            d.child.id(),
            d.socket.display()
        )
    );
    // The refused daemon did not remove the live one's socket.
    assert!(d.shell(&["host", "info"]).status.success());

    // The same state directory, another socket: refused on the lock.
    let state = d.socket.parent().unwrap().parent().unwrap().join("state");
    let out = Command::new(XENITHD)
        .arg("--socket")
        .arg(other.path().join("other.sock"))
        .arg("--state-dir")
        .arg(&state)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "xenithd is already running (pid {}, {})\n",
            d.child.id(),
            state.join("xenithd.lock").display()
        )
    );
    assert!(!other.path().join("other.sock").exists());
    assert!(d.shell(&["host", "info"]).status.success());

    // A socket file nobody listens on (a daemon killed with SIGKILL leaves one).
    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let mut child = Command::new(XENITHD)
        .arg("--socket")
        .arg(&stale)
        .arg("--state-dir")
        .arg(dir.path().join("s"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while Command::new(XENITH)
        .arg("--socket")
        .arg(&stale)
        .args(["host", "info"])
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "did not take over the stale socket"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

fn run_with_config(text: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("xenith.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(XENITHD)
        .args(["--config", path.to_str().unwrap(), "--socket"])
        .arg(dir.path().join("x.sock"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).replace(path.to_str().unwrap(), "FILE");
    (out.status.code(), err)
}

#[test]
fn config_errors_are_one_line_naming_file_and_key_with_exit_2() {
    let cases = [
        (
            "[daemon]\nbogus = 1\n",
            "xenithd: FILE: key daemon.bogus: unknown field `bogus`",
        ),
        ("[nope]\n", "xenithd: FILE: key nope: unknown field `nope`"),
        (
            "[daemon]\nlog_format = \"xml\"\n",
            "xenithd: FILE: key daemon.log_format: unknown variant `xml`",
        ),
        (
            "[rpc]\nmax_frame_bytes = 10\n",
            "xenithd: FILE: key rpc.max_frame_bytes: 10 is outside 4096..=67108864",
        ),
        (
            "[daemon]\nhypervisor = 3\n",
            "xenithd: FILE: key daemon.hypervisor: wanted string",
        ),
        (
            "[daemon]\nstate_dir = \"relative\"\n",
            "xenithd: FILE: key daemon.state_dir: \"relative\" is not an absolute path",
        ),
        (
            "[daemon]\nxenstore = \"maybe\"\n",
            "xenithd: FILE: key daemon.xenstore: \"maybe\" is not auto",
        ),
        (
            "[rpc]\nsocket_group = \"no-such-group-xyz\"\n",
            "xenithd: FILE: key rpc.socket_group: no group named",
        ),
        (
            "[sim]\ndom0_mib = 70000\n",
            "xenithd: FILE: key sim.dom0_mib: 70000 is not below sim.total_mib",
        ),
        ("[daemon\n", "xenithd: FILE: line 1:"),
    ];
    for (text, want) in cases {
        let (code, err) = run_with_config(text);
        assert_eq!(code, Some(2), "{text:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{text:?}: one line, got {err:?}");
        assert!(
            err.starts_with(want),
            "{text:?}: got {err:?}, want {want:?}"
        );
    }
    let out = Command::new(XENITHD)
        .args(["--config", "/nonexistent/x.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .starts_with("xenithd: /nonexistent/x.toml: cannot read"));
}

#[test]
fn the_shipped_config_is_the_defaults() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/xenith.toml");
    let loaded = xenith::config::Config::load(Some(&shipped), Default::default()).unwrap();
    let defaults = xenith::config::Config::defaults(Default::default()).unwrap();
    assert_eq!(
        xenith::config::Config {
            source: None,
            ..loaded
        },
        defaults
    );
    let file = xenith::config::ConfigFile::read(&shipped).unwrap();
    assert_eq!(file, xenith::config::ConfigFile::default());
}

#[test]
fn flags_override_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.toml");
    std::fs::write(
        &path,
        "[daemon]\nsocket = \"/file/sock\"\nlog_format = \"json\"\nhypervisor = \"xen\"\n",
    )
    .unwrap();
    let overrides = xenith::config::Overrides {
        socket: Some("/flag/sock".into()),
        hypervisor: Some(xenith::config::HypervisorChoice::Sim),
        ..Default::default()
    };
    let c = xenith::config::Config::load(Some(&path), overrides).unwrap();
    assert_eq!(c.socket, Path::new("/flag/sock"));
    assert_eq!(c.hypervisor, xenith::config::HypervisorChoice::Sim);
    assert_eq!(c.log_format, xenith::config::LogFormat::Json);
}

#[test]
fn json_logs_and_the_chosen_backends_are_logged() {
    let d = Daemon::start(&[
        "--log-format",
        "json",
        "--hypervisor",
        "sim",
        "--xenstore",
        "embedded",
    ]);
    let (status, log) = d.stop();
    assert_eq!(status.code(), Some(0));
    let first: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert_eq!(first["fields"]["message"], "xenithd starting");
    assert_eq!(first["fields"]["hypervisor"], "sim");
    assert_eq!(first["fields"]["xenstore"], "embedded");
    // The simulator is said loudly.
    let second: serde_json::Value = serde_json::from_str(log.lines().nth(1).unwrap()).unwrap();
    assert_eq!(second["level"], "WARN");
    assert!(
        second["fields"]["message"]
            .as_str()
            .unwrap()
            .contains("SIMULATED hypervisor"),
        "{second}"
    );
    for line in log.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{line}: {e}"));
    }
}

#[test]
fn the_xen_backend_is_refused_clearly_where_it_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(XENITHD)
        .args(["--hypervisor", "xen", "--socket"])
        .arg(dir.path().join("x.sock"))
        .arg("--state-dir")
        .arg(dir.path().join("s"))
        .output()
        .unwrap();
    // The host's fault: exit 2, which the unit does not restart on.
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("xen hypervisor backend is unavailable"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    // Xen with xenith's embedded xenstored: refused before anything opens.
    let out = Command::new(XENITHD)
        .args(["--hypervisor", "xen", "--xenstore", "embedded", "--socket"])
        .arg(dir.path().join("x.sock"))
        .arg("--state-dir")
        .arg(dir.path().join("s"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("xen hypervisor backend is unavailable"),
        "Xen itself is checked first"
    );
}

#[test]
fn sighup_is_logged_and_ignored() {
    let d = Daemon::start(&[]);
    d.signal(nix::sys::signal::Signal::SIGHUP);
    std::thread::sleep(Duration::from_millis(200));
    assert!(d.shell(&["host", "info"]).status.success(), "still serving");
    d.signal(nix::sys::signal::Signal::SIGHUP);
    std::thread::sleep(Duration::from_millis(200));
    assert!(d.shell(&["host", "info"]).status.success(), "still serving");
    let (status, log) = d.stop();
    assert_eq!(status.code(), Some(0));
    assert_eq!(log.matches("SIGHUP: ignored").count(), 2, "{log}");
}

#[test]
fn the_shell_exits_0_on_success_and_1_on_error() {
    let d = Daemon::start(&[]);
    let out = d.shell(&["host", "info"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("hypervisor") && l.ends_with("sim")),
        "{text}"
    );
    let out = d.shell(&["--json", "host", "info"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["cpus"], 16);
    let out = d.shell(&["tree"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("├── host (worker) running"), "{text}");
    assert!(text.contains("├── rpc (worker) running"), "{text}");
    assert!(text.contains("└── vms (supervisor) running"), "{text}");
    assert_eq!(d.shell(&["bogus"]).status.code(), Some(1));
    assert_eq!(d.shell(&["--help"]).status.code(), Some(0));
    let out = Command::new(XENITH)
        .args(["--socket", "/nonexistent.sock", "host", "info"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr)
        .starts_with("xenith: cannot connect to /nonexistent.sock"));
}

#[test]
fn socket_and_state_dir_resolve_as_the_contract_says() {
    // Run in a child process so the environment changes stay there.
    let out = Command::new(XENITH)
        .env("XENITH_SOCKET", "/tmp/xenith-env-test.sock")
        .args(["host", "info"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("/tmp/xenith-env-test.sock"));
    assert_eq!(
        xenith::paths::embedded_xenstored_socket(Path::new("/run/xenith/xenith.sock")),
        Path::new("/run/xenith/xenstored.sock")
    );
}

#[test]
fn it_tells_systemd_when_it_is_ready_and_when_it_stops() {
    let dir = tempfile::tempdir().unwrap();
    let notify = dir.path().join("notify.sock");
    let sd = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    sd.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let socket = dir.path().join("x.sock");
    let mut child = Command::new(XENITHD)
        .arg("--socket")
        .arg(&socket)
        .arg("--state-dir")
        .arg(dir.path().join("s"))
        .env("NOTIFY_SOCKET", &notify)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let n = sd.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"READY=1\n");
    // Ready means serving.
    UnixStream::connect(&socket).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let n = sd.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"STOPPING=1\n");
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

fn systemd_analyze_verify(unit: &Path) -> Output {
    let analyze = Path::new("/usr/bin/systemd-analyze");
    assert!(
        analyze.exists(),
        "systemd-analyze is missing: run the README's test command, which installs systemd"
    );
    Command::new(analyze)
        .arg("verify")
        .arg(unit)
        .output()
        .unwrap()
}

fn shipped_unit() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/xenithd.service"))
        .unwrap()
}

#[test]
fn the_systemd_unit_verifies() {
    let unit = shipped_unit();
    assert!(unit.contains("Type=notify") && unit.contains("Restart=on-failure"));
    // It drives real Xen (never the simulator), after Debian 12's xen
    // service and upstream's units, and does not restart on exit 2.
    assert!(
        unit.contains("ExecStart=/usr/sbin/xenithd --hypervisor xen\n"),
        "{unit}"
    );
    for after in [
        "xen.service",
        "xenstored.service",
        "xenconsoled.service",
        "proc-xen.mount",
    ] {
        assert!(
            unit.lines()
                .any(|l| l.starts_with("After=") && l.contains(after)),
            "After= {after}"
        );
    }
    assert!(unit.contains("RestartPreventExitStatus=2"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("xenithd.service");
    std::fs::write(&path, unit.replace("/usr/sbin/xenithd", XENITHD)).unwrap();
    let out = systemd_analyze_verify(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && out.stderr.is_empty(), "{stderr}");
}

#[test]
#[ignore = "needs root: installs xenithd in /usr/sbin as the README's install step does; scripts/test runs it (cargo test --tests -- --ignored)"]
fn the_systemd_unit_verifies_as_installed() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "run as root (scripts/test does)"
    );
    let installed = Path::new("/usr/sbin/xenithd");
    // A xenithd installed already is verified as it is; else this one is
    // installed for the check and removed after.
    let ours = !installed.exists();
    if ours {
        std::fs::copy(XENITHD, installed).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("xenithd.service");
    std::fs::write(&path, shipped_unit()).unwrap();
    let out = systemd_analyze_verify(&path);
    if ours {
        std::fs::remove_file(installed).unwrap();
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && out.stderr.is_empty(), "{stderr}");
}

/// What an administrator needs after the fact: who created, started,
/// killed and removed a VM, and what came of it. Every state-changing call
/// leaves one audit line (method, VM name and uuid, caller, result,
/// duration); reads leave none.
#[test]
fn each_state_changing_call_leaves_an_audit_line() {
    let d = Daemon::start(&["--hypervisor", "sim"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audited.toml");
    std::fs::write(
        &file,
        "name = \"audited\"\ntype = \"pv\"\nmemory_mib = 64\nkernel = \"/boot/vmlinuz\"\n",
    )
    .unwrap();
    assert!(d
        .shell(&["vm", "create", file.to_str().unwrap()])
        .status
        .success());
    assert!(d.shell(&["vm", "start", "audited"]).status.success());
    assert!(!d.shell(&["vm", "start", "audited"]).status.success());
    assert!(d.shell(&["vm", "get", "audited"]).status.success());
    assert!(d.shell(&["vm", "kill", "audited"]).status.success());
    assert!(d.shell(&["vm", "remove", "audited"]).status.success());
    let (status, log) = d.stop();
    assert_eq!(status.code(), Some(0));
    let audit: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("xenith::audit"))
        .collect();
    let methods: Vec<&str> = audit
        .iter()
        .map(|l| {
            l.split("method=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
        })
        .collect();
    assert_eq!(
        methods,
        ["vm.create", "vm.start", "vm.start", "vm.kill", "vm.remove"],
        "{log}"
    );
    let uid = nix::unistd::getuid();
    for line in &audit {
        assert!(line.contains("vm=audited"), "{line}");
        assert!(line.contains(&format!("caller=uid {uid} (pid ")), "{line}");
        assert!(line.contains("duration_ms="), "{line}");
    }
    // The uuid is known from the creation on.
    let uuid = audit[0]
        .split("uuid=")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    assert_eq!(uuid.len(), 36, "{}", audit[0]);
    assert!(audit.iter().all(|l| l.contains(&format!("uuid={uuid}"))));
    assert!(audit[1].contains("result=\"ok\""), "{}", audit[1]);
    assert!(
        audit[2].contains("result=\"VM_BAD_POWER_STATE\""),
        "{}",
        audit[2]
    );
}

/// Reads frames until the daemon closes the connection (or 5 s pass).
fn read_until_closed(s: &mut UnixStream) -> (Vec<Value>, bool) {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut frames = Vec::new();
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    let mut cursor: &[u8] = &bytes;
    while !cursor.is_empty() {
        match rmpv::decode::read_value(&mut cursor) {
            Ok(v) => frames.push(v),
            Err(_) => break,
        }
    }
    (frames, closed)
}

/// What a client did: sent a valid request and garbage in one write; held
/// an event subscription and then sent garbage, or closed its side; sent a
/// request nested 60 deep. What must hold: the valid request is answered
/// before the connection closes; a connection with subscriptions closes
/// all the same; nesting up to 64 is a request like any other.
#[test]
fn malformed_frames_and_half_closes_end_connections_with_subscriptions_too() {
    let d = Daemon::start(&[]);
    let mut s = UnixStream::connect(&d.socket).unwrap();
    let mut both = request(1, "host.info", Value::Map(vec![]));
    both.push(0xc1);
    s.write_all(&both).unwrap();
    let (frames, closed) = read_until_closed(&mut s);
    assert!(closed, "closed after the garbage");
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert!(
        frames[0].as_array().unwrap()[2].is_nil(),
        "host.info answered: {:?}",
        frames[0]
    );

    for how in ["garbage", "half-close"] {
        let mut s = UnixStream::connect(&d.socket).unwrap();
        s.write_all(&request(1, "event.subscribe", Value::Map(vec![])))
            .unwrap();
        let _ = read_frame(&mut s);
        match how {
            "garbage" => s.write_all(&[0xc1]).unwrap(),
            _ => s.shutdown(std::net::Shutdown::Write).unwrap(),
        }
        let (_, closed) = read_until_closed(&mut s);
        assert!(closed, "{how}: the connection stayed open");
    }

    let mut deep = Value::Nil;
    for _ in 0..60 {
        deep = Value::Array(vec![deep]);
    }
    let mut s = UnixStream::connect(&d.socket).unwrap();
    s.write_all(&request(
        7,
        "host.info",
        Value::Map(vec![("x".into(), deep)]),
    ))
    .unwrap();
    let r = read_frame(&mut s);
    let items = r.as_array().unwrap();
    assert_eq!(items[1].as_u64(), Some(7));
    assert_eq!(field(&items[2], "code").as_str(), Some("INVALID_PARAMS"));
}

/// What happened (issue: a socket permission race): xenithd started under
/// umask 000, and a watcher looked at its sockets as fast as it could the
/// whole time. What must hold: neither the RPC socket nor the embedded
/// xenstored's is ever seen with any mode but 0600.
#[test]
fn the_sockets_are_never_reachable_by_others_whatever_the_umask() {
    use std::os::unix::fs::FileTypeExt;
    for _ in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("run/xenith.sock");
        let xs = dir.path().join("run/xenstored.sock");
        std::fs::create_dir_all(dir.path().join("run")).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watcher = {
            let (socket, xs, stop) = (socket.clone(), xs.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut seen = std::collections::BTreeSet::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for p in [&socket, &xs] {
                        if let Ok(m) = std::fs::symlink_metadata(p) {
                            if m.file_type().is_socket() {
                                seen.insert(m.permissions().mode() & 0o777);
                            }
                        }
                    }
                }
                seen
            })
        };
        let mut child = Command::new("sh")
            .arg("-c")
            .arg("umask 000; exec \"$0\" \"$@\"")
            .arg(XENITHD)
            .arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(["--hypervisor", "sim", "--xenstore", "embedded"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        common::daemon::wait_for_socket(&socket, "xenithd", 10);
        std::thread::sleep(Duration::from_millis(50));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let seen = watcher.join().unwrap();
        assert_eq!(
            seen,
            std::collections::BTreeSet::from([0o600]),
            "modes seen"
        );
        let _ = child.kill();
        let _ = child.wait();
    }
}
