//! examples/client.py, run as a user would run it against xenithd: it
//! creates a VM, starts it, waits for the agent's IP through events, and
//! shuts it down. Needs python3 and msgpack (Debian's python3-msgpack;
//! scripts/test installs it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::daemon::Xenithd;

const XENITHD: &str = env!("CARGO_BIN_EXE_xenithd");

/// Debian's Python, where python3-msgpack installs (a python3 earlier in
/// $PATH, e.g. pyenv's, would not see it).
const PYTHON: &str = "/usr/bin/python3";

#[test]
fn the_python_example_creates_starts_waits_for_the_ip_and_shuts_down() {
    let check = Command::new(PYTHON).args(["-c", "import msgpack"]).output();
    match check {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "python3 cannot import msgpack: install Debian's python3-msgpack (scripts/test does): {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!("python3 is not installed ({e}): scripts/test installs what the tests need"),
    }
    let d = Xenithd::start(XENITHD, &[]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/client.py");
    let out = Command::new(PYTHON)
        .arg(script)
        .arg("--socket")
        .arg(&d.socket)
        .args(["--name", "pyvm", "--timeout", "20"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("started: Running"), "{stdout}");
    // The simulated agent reports 10.128.<domid>: domid 1.
    assert!(
        stdout.contains("guest agent reports IP 10.128.0.1"),
        "{stdout}"
    );
    assert!(stdout.contains("shut down: Halted"), "{stdout}");
    // It removed its VM.
    let c = std::process::Command::new(env!("CARGO_BIN_EXE_xenith"))
        .arg("--socket")
        .arg(&d.socket)
        .args(["vm", "list"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&c.stdout).contains("pyvm"));
}
