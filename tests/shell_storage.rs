//! The `xenith` shell's storage and task commands against a daemon with
//! real qemu-img (Debian's qemu-utils): a file SR in a temporary directory,
//! VDIs made, snapshotted, listed, resized, exported, imported and copied
//! (long operations followed as tasks), errors with exit 1, and Ctrl-C
//! cancelling a followed copy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::{xenith, Xenithd};
use serde_json::Value;

const XENITHD: &str = env!("CARGO_BIN_EXE_xenithd");
const XENITH: &str = env!("CARGO_BIN_EXE_xenith");

/// Runs a command that must succeed; its stdout.
fn ok(d: &Xenithd, args: &[&str]) -> String {
    let (code, out, err) = xenith(d, args);
    assert_eq!(code, 0, "xenith {args:?}: {err}");
    out
}

/// Its `--json` output, parsed.
fn json(d: &Xenithd, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&ok(d, &all)).unwrap()
}

/// A uuid printed alone on a line.
fn uuid(out: &str) -> String {
    let u = out.trim().to_owned();
    assert_eq!(u.len(), 36, "not a uuid: {out:?}");
    u
}

/// A file SR named "local" in `dir`, through the shell; its uuid.
fn file_sr(d: &Xenithd, dir: &std::path::Path) -> String {
    let dir = dir.to_str().unwrap();
    uuid(&ok(
        d,
        &["sr", "create", "local", "--type", "file", "--path", dir],
    ))
}

fn daemon() -> Xenithd {
    assert!(
        Command::new("qemu-img")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success()),
        "qemu-img is missing: install Debian's qemu-utils"
    );
    Xenithd::start(XENITHD, &[])
}

#[test]
fn srs_and_vdis_through_the_shell() {
    let d = daemon();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("sr");
    let dir_s = dir.to_str().unwrap();
    let sr = file_sr(&d, &dir);
    assert!(dir.is_dir());
    let out = ok(&d, &["sr", "list"]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("NAME   TYPE  SIZE"), "{out}");
    assert!(
        lines[1].starts_with("local  file") && lines[1].ends_with(&sr),
        "{out}"
    );
    assert!(
        lines[1].contains(" GiB") || lines[1].contains(" MiB"),
        "{out}"
    );
    // A file SR takes --path, and only that.
    let (code, out, err) = xenith(&d, &["sr", "create", "x", "--type", "file"]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(err.contains("--path"), "{err}");

    let disk = uuid(&ok(
        &d,
        &["vdi", "create", "local", "root", "--size", "64M"],
    ));
    let snap = uuid(&ok(&d, &["vdi", "snapshot", "root", "--name", "before"]));
    let out = ok(&d, &["vdi", "list"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["NAME", "SR", "FORMAT", "SIZE", "FLAGS", "UUID"],
        "{out}"
    );
    let row = |name: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(&format!("{name} ")))
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .unwrap_or_else(|| panic!("no {name} in\n{out}"))
    };
    assert_eq!(
        row("root"),
        ["root", "local", "qcow2", "64", "MiB", "-", disk.as_str()]
    );
    assert_eq!(
        row("before"),
        [
            "before",
            "local",
            "qcow2",
            "64",
            "MiB",
            "ro,snapshot",
            snap.as_str()
        ]
    );
    let listed = json(&d, &["vdi", "list", "--sr", "local"]);
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    let got = ok(&d, &["vdi", "get", "before"]);
    assert!(got.contains("read_only    yes"), "{got}");
    assert!(got.contains(&format!("snapshot_of  {disk}")), "{got}");
    assert!(got.contains("sr           local"), "{got}");
    let got = ok(&d, &["sr", "get", "local"]);
    assert!(got.contains("vdis  2") && got.contains("before"), "{got}");
    assert_eq!(json(&d, &["sr", "get", &sr])["config"]["path"], dir_s);

    assert_eq!(
        ok(&d, &["vdi", "resize", "root", "--size", "1GiB"]),
        "root resized to 1.0 GiB\n"
    );
    assert_eq!(json(&d, &["vdi", "get", "root"])["size_mib"], 1024);
    assert_eq!(
        ok(&d, &["sr", "scan", "local"]),
        "no changes\n",
        "nothing behind xenith's back"
    );

    // The long operations are followed as tasks: no bar off a terminal.
    let img = root.path().join("root.raw");
    let img_s = img.to_str().unwrap();
    assert_eq!(
        ok(&d, &["vdi", "export", "root", img_s, "--format", "raw"]),
        format!("root exported to {img_s}\n")
    );
    assert_eq!(std::fs::metadata(&img).unwrap().len(), 1 << 30);
    let (code, out, err) = xenith(&d, &["vdi", "import", "local", img_s, "--name", "imported"]);
    assert_eq!(code, 0, "{err}");
    let imported = uuid(&out);
    assert!(!err.contains('\r') && !err.contains('['), "no bar: {err:?}");
    assert_eq!(json(&d, &["vdi", "get", &imported])["name"], "imported");
    let copied = json(
        &d,
        &["vdi", "copy", "root", "--sr", "local", "--name", "copy"],
    );
    assert_eq!(copied["uuid"].as_str().unwrap().len(), 36, "{copied}");
    // --no-wait: the task, to ask about later.
    let task = uuid(&ok(
        &d,
        &["vdi", "copy", "before", "--sr", "local", "--no-wait"],
    ));
    let t0 = Instant::now();
    let done = loop {
        let t = json(&d, &["task", "get", &task]);
        if t["status"] != "pending" {
            break t;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "{t}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(done["status"], "success", "{done}");
    let out = ok(&d, &["task", "get", &task]);
    assert!(
        out.contains("status    success") && out.contains("progress  100%"),
        "{out}"
    );
    let out = ok(&d, &["task", "list"]);
    assert!(out.starts_with("UUID"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with(&task) && l.contains("vdi.copy") && l.contains("success")),
        "{out}"
    );
    assert!(out.contains("vdi.export"), "{out}");
    assert!(ok(&d, &["vdi", "clone", "root"]).trim().len() == 36);

    // Errors: exit 1, the message on stderr, nothing on stdout.
    let (code, out, err) = xenith(&d, &["vdi", "get", "nope"]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(err.contains("NOT_FOUND"), "{err}");
    let (code, _, err) = xenith(&d, &["vdi", "create", "local", "x", "--size", "10Q"]);
    assert_eq!(code, 1);
    assert!(err.contains("10Q"), "{err}");
    // A task that fails: its error, exit 1.
    let none = root.path().join("none.img");
    let (code, out, err) = xenith(&d, &["vdi", "import", "local", none.to_str().unwrap()]);
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert!(err.contains("SR_BACKEND_ERROR"), "{err}");
    let (code, _, err) = xenith(&d, &["task", "cancel", &task]);
    assert_eq!(code, 1);
    assert!(err.contains("NOT_ALLOWED"), "it has finished: {err}");

    assert_eq!(ok(&d, &["sr", "destroy", "local"]), "local destroyed\n");
    assert_eq!(ok(&d, &["vdi", "list"]).lines().count(), 1);
    assert_eq!(json(&d, &["sr", "list"]), serde_json::json!([]));
}

#[test]
fn ctrl_c_cancels_a_followed_copy() {
    let d = daemon();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("sr");
    file_sr(&d, &dir);
    // A raw VDI full of data takes a while to copy into qcow2.
    let big = uuid(&ok(
        &d,
        &[
            "vdi", "create", "local", "big", "--size", "1G", "--format", "raw",
        ],
    ));
    let file = dir.join(
        json(&d, &["vdi", "get", &big])["location"]
            .as_str()
            .unwrap(),
    );
    {
        use std::io::Write;
        let mut fh = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
        let chunk = vec![0x77u8; 1 << 20];
        for _ in 0..1024 {
            fh.write_all(&chunk).unwrap();
        }
    }
    let mut child = Command::new(XENITH)
        .arg("--socket")
        .arg(&d.socket)
        .args(["vdi", "copy", "big", "--sr", "local", "--format", "qcow2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once the copy is under way, Ctrl-C.
    let t0 = Instant::now();
    let task = loop {
        let tasks = json(&d, &["task", "list"]);
        if let Some(t) = tasks
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["method"] == "vdi.copy")
        {
            break t["uuid"].as_str().unwrap().to_owned();
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "no copy task");
        std::thread::sleep(Duration::from_millis(10));
    };
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(t0.elapsed() < Duration::from_secs(30), "did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let status = json(&d, &["task", "get", &task])["status"].clone();
    if out.status.code() == Some(0) {
        // The copy outran the signal: it is done, and said so.
        assert_eq!(status, "success");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim().len(), 36);
    } else {
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("cancelled"), "{err}");
        assert_eq!(status, "cancelled");
        assert!(out.stdout.is_empty());
        assert_eq!(
            json(&d, &["vdi", "list"]).as_array().unwrap().len(),
            1,
            "no copy left"
        );
    }
}

#[test]
fn vbd_plug_takes_a_path_or_a_vdi() {
    let d = daemon();
    let dir = d.dir.path().join("sr");
    file_sr(&d, &dir);
    let data = uuid(&ok(&d, &["vdi", "create", "local", "data", "--size", "16"]));
    let file = d.dir.path().join("web.toml");
    std::fs::write(
        &file,
        "name = \"web\"\ntype = \"pv\"\nmemory_mib = 128\nkernel = \"/boot/vmlinuz\"\n\
         [[disks]]\npath = \"/d.img\"\ndevice = \"xvda\"\n",
    )
    .unwrap();
    ok(&d, &["vm", "create", file.to_str().unwrap()]);
    ok(&d, &["vm", "start", "web"]);

    // A VDI by SR/NAME, then a path: each VBD says what it is.
    ok(&d, &["vbd", "plug", "web", "local/data", "xvdb"]);
    ok(
        &d,
        &["vbd", "plug", "web", "/e.img", "xvdc", "--mode", "ro"],
    );
    let vm = json(&d, &["vm", "get", "web"]);
    let vbds = vm["vbds"].as_array().expect("vbds");
    let by_device = |dev: &str| {
        vbds.iter()
            .find(|v| v["device"] == dev)
            .unwrap_or_else(|| panic!("no {dev} in {vm}"))
            .clone()
    };
    assert_eq!(
        by_device("xvdb")["vdi"],
        Value::String(data.clone()),
        "{vm}"
    );
    assert!(by_device("xvdc")["vdi"].is_null(), "{vm}");
    // The VDI is in use: not destroyed.
    let (code, _, err) = xenith(&d, &["vdi", "destroy", &data]);
    assert_eq!(code, 1);
    assert!(err.contains("VDI_IN_USE"), "{err}");

    // A relative path is a path, refused with the reason; an unknown VDI
    // is NOT_FOUND. Neither changes the VM.
    let (code, _, err) = xenith(&d, &["vbd", "plug", "web", "./x.img", "xvdd"]);
    assert_eq!(code, 1);
    assert!(err.contains("absolute"), "{err}");
    let (code, _, err) = xenith(&d, &["vbd", "plug", "web", "local/nothing", "xvdd"]);
    assert_eq!(code, 1);
    assert!(err.contains("NOT_FOUND"), "{err}");
    let after = json(&d, &["vm", "get", "web"]);
    assert_eq!(after["vbds"].as_array().map(Vec::len), Some(3), "{after}");
}
