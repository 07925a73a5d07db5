//! Storage through the RPC socket, as operators drive it: file SRs with
//! real qemu-img (Debian's qemu-utils), VDIs made, snapshotted, cloned,
//! copied, imported, exported, scanned, destroyed; long operations as
//! tasks; bad input refused with nothing changed; records kept across a
//! restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::daemon::Xenithd;
use common::rpc::{call, error, ok};
use serde_json::{json, Value};
use xenith::proto::rpc::RpcClient;

const XENITHD: &str = env!("CARGO_BIN_EXE_xenithd");

fn tool(name: &str, package: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|f| f.is_file())
        })
        .unwrap_or_else(|| panic!("{name} is missing: install Debian's {package}"))
}

/// Writes 64 KiB of `byte` at `offset` into a VDI file.
fn write(path: &Path, format: &str, offset: u64, byte: u8) {
    let out = std::process::Command::new(tool("qemu-io", "qemu-utils"))
        .args(["-f", format, "-c", &format!("write -P {byte} {offset} 64k")])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "qemu-io write: {out:?}");
}

/// Whether 64 KiB at `offset` hold `byte`.
fn holds(path: &Path, format: &str, offset: u64, byte: u8) -> bool {
    let out = std::process::Command::new(tool("qemu-io", "qemu-utils"))
        .args([
            "-r",
            "-f",
            format,
            "-c",
            &format!("read -P {byte} {offset} 64k"),
        ])
        .arg(path)
        .output()
        .unwrap();
    out.status.success() && !String::from_utf8_lossy(&out.stdout).contains("verification failed")
}

fn check(path: &Path) {
    let out = std::process::Command::new(tool("qemu-img", "qemu-utils"))
        .args(["check", "-f", "qcow2"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "qemu-img check {}: {out:?}",
        path.display()
    );
}

async fn vdi_file(c: &RpcClient, sr_dir: &Path, vdi: &str) -> PathBuf {
    let v = ok(c, "vdi.get", json!({"vdi": vdi})).await;
    sr_dir.join(v["location"].as_str().unwrap())
}

async fn wait_task(c: &RpcClient, task: &str) -> Value {
    let t0 = Instant::now();
    loop {
        let t = ok(c, "task.get", json!({"task": task})).await;
        if ["success", "failure", "cancelled"].contains(&t["status"].as_str().unwrap()) {
            return t;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "task {t:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Bed {
    d: Xenithd,
    c: RpcClient,
    root: tempfile::TempDir,
}

async fn bed(extra: &[&str]) -> Bed {
    tool("qemu-img", "qemu-utils");
    let d = Xenithd::start(XENITHD, extra);
    let c = RpcClient::connect(&d.socket).await.unwrap();
    Bed {
        d,
        c,
        root: tempfile::tempdir().unwrap(),
    }
}

async fn file_sr(c: &RpcClient, name: &str, dir: &Path) -> String {
    ok(
        c,
        "sr.create",
        json!({"name": name, "type": "file", "config": {"path": dir}}),
    )
    .await["uuid"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "current_thread")]
async fn srs_are_made_listed_and_refused_when_they_would_clash() {
    let b = bed(&[]).await;
    let c = &b.c;
    let dir = b.root.path().join("sr1");
    let uuid = file_sr(c, "local", &dir).await;
    assert!(dir.is_dir(), "made if missing");
    let list = ok(c, "sr.list", json!({})).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["name"], "local");
    assert_eq!(list[0]["type"], "file");
    assert!(list[0]["size_mib"].as_u64().unwrap() > 0);
    let got = ok(c, "sr.get", json!({"sr": uuid})).await;
    assert_eq!(got["config"]["path"], dir.to_str().unwrap());
    assert_eq!(got["vdis"], json!([]));

    let refused = [
        json!({"name": "local", "type": "file", "config": {"path": b.root.path().join("other")}}),
        json!({"name": "inner", "type": "file", "config": {"path": dir.join("sub")}}),
        json!({"name": "outer", "type": "file", "config": {"path": b.root.path()}}),
        json!({"name": "state", "type": "file", "config": {"path": b.d.state_dir.join("x")}}),
        json!({"name": "a/b", "type": "file", "config": {"path": b.root.path().join("x")}}),
        json!({"name": "..", "type": "file", "config": {"path": b.root.path().join("y")}}),
        json!({"name": "rel", "type": "file", "config": {"path": "relative/dir"}}),
        json!({"name": "nopath", "type": "file", "config": {}}),
        json!({"name": "t", "type": "nfs", "config": {}}),
        json!({"name": "t", "type": "file", "config": {"path": "/x", "colour": 1}}),
    ];
    for p in refused {
        let (code, _) = error(call(c, "sr.create", p.clone()).await);
        assert!(
            ["INVALID_PARAMS", "ALREADY_EXISTS"].contains(&code.as_str()),
            "{p}: {code}"
        );
    }
    // An LVM SR on a group that does not exist: lvm's own message.
    let (code, details) = error(
        call(
            c,
            "sr.create",
            json!({"name": "thin", "type": "lvm", "config": {"vg": "xenith-no-such-vg"}}),
        )
        .await,
    );
    assert_eq!(code, "SR_BACKEND_ERROR", "{details:?}");
    assert_eq!(
        ok(c, "sr.list", json!({})).await.as_array().unwrap().len(),
        1
    );
    let (code, _) = error(call(c, "sr.get", json!({"sr": "nope"})).await);
    assert_eq!(code, "NOT_FOUND");
}

#[tokio::test(flavor = "current_thread")]
async fn vdis_snapshot_clone_and_keep_their_data() {
    let b = bed(&[]).await;
    let c = &b.c;
    let dir = b.root.path().join("sr");
    let sr = file_sr(c, "local", &dir).await;

    let a = ok(
        c,
        "vdi.create",
        json!({"sr": "local", "name": "root", "size_mib": 64}),
    )
    .await;
    let a = a["uuid"].as_str().unwrap().to_owned();
    let got = ok(c, "vdi.get", json!({"vdi": "root"})).await;
    assert_eq!(got["format"], "qcow2", "the file SR's default");
    assert_eq!(
        (got["size_mib"].as_u64(), got["sr"].as_str()),
        (Some(64), Some(sr.as_str()))
    );
    assert_eq!(got["read_only"], false);
    let live = vdi_file(c, &dir, &a).await;
    write(&live, "qcow2", 0, 0x11);

    let t0 = Instant::now();
    let snap = ok(c, "vdi.snapshot", json!({"vdi": a, "name": "before"})).await;
    let snap = snap["uuid"].as_str().unwrap().to_owned();
    eprintln!("snapshot of a 64 MiB VDI: {:?}", t0.elapsed());
    write(&live, "qcow2", 0, 0x22);
    let s = ok(c, "vdi.get", json!({"vdi": snap})).await;
    assert_eq!(
        (s["read_only"].as_bool(), s["snapshot_of"].as_str()),
        (Some(true), Some(a.as_str()))
    );
    let l = ok(c, "vdi.get", json!({"vdi": a})).await;
    assert_eq!(
        l["parent"],
        snap.as_str(),
        "the live VDI is an overlay on its snapshot"
    );
    assert_eq!(
        vdi_file(c, &dir, &a).await,
        live,
        "the live VDI keeps its file"
    );

    let clone = ok(
        c,
        "vdi.clone",
        json!({"vdi": "before", "name": "copy-of-before"}),
    )
    .await;
    let clone = clone["uuid"].as_str().unwrap().to_owned();
    let cf = vdi_file(c, &dir, &clone).await;
    let sf = vdi_file(c, &dir, &snap).await;
    assert!(
        holds(&cf, "qcow2", 0, 0x11),
        "the clone starts as the snapshot"
    );
    write(&cf, "qcow2", 0, 0x33);
    assert!(holds(&sf, "qcow2", 0, 0x11));
    assert!(holds(&live, "qcow2", 0, 0x22));
    assert!(holds(&cf, "qcow2", 0, 0x33));
    for f in [&live, &sf, &cf] {
        check(f);
    }

    // A clone of a live VDI gets a read-only base first.
    let c2 = ok(c, "vdi.clone", json!({"vdi": a})).await;
    let c2 = c2["uuid"].as_str().unwrap().to_owned();
    let c2v = ok(c, "vdi.get", json!({"vdi": c2})).await;
    let base = ok(
        c,
        "vdi.get",
        json!({"vdi": c2v["parent"].as_str().unwrap()}),
    )
    .await;
    assert_eq!(
        (base["read_only"].as_bool(), base["snapshot_of"].as_str()),
        (Some(true), Some(a.as_str()))
    );
    assert!(holds(&vdi_file(c, &dir, &c2).await, "qcow2", 0, 0x22));

    // What cannot be done, refused with nothing changed.
    let before = ok(c, "vdi.list", json!({"sr": sr})).await;
    let refusals = [
        (
            "vdi.resize",
            json!({"vdi": a, "size_mib": 32}),
            "INVALID_PARAMS",
        ),
        (
            "vdi.resize",
            json!({"vdi": a, "size_mib": 64}),
            "INVALID_PARAMS",
        ),
        (
            "vdi.resize",
            json!({"vdi": snap, "size_mib": 128}),
            "NOT_ALLOWED",
        ),
        ("vdi.snapshot", json!({"vdi": snap}), "NOT_ALLOWED"),
        ("vdi.destroy", json!({"vdi": snap}), "NOT_ALLOWED"),
        (
            "vdi.create",
            json!({"sr": sr, "name": "z", "size_mib": 0}),
            "INVALID_PARAMS",
        ),
        (
            "vdi.create",
            json!({"sr": sr, "name": "a/b", "size_mib": 1}),
            "INVALID_PARAMS",
        ),
        (
            "vdi.create",
            json!({"sr": sr, "name": "..", "size_mib": 1}),
            "INVALID_PARAMS",
        ),
        (
            "vdi.create",
            json!({"sr": sr, "name": "z", "size_mib": 1, "format": "vhd"}),
            "INVALID_PARAMS",
        ),
        (
            "vdi.create",
            json!({"sr": "nope", "name": "z", "size_mib": 1}),
            "NOT_FOUND",
        ),
        ("vdi.get", json!({"vdi": "nope"}), "NOT_FOUND"),
        (
            "vdi.destroy",
            json!({"vdi": uuid::Uuid::new_v4().to_string()}),
            "NOT_FOUND",
        ),
    ];
    for (m, p, want) in refusals {
        let (code, details) = error(call(c, m, p.clone()).await);
        assert_eq!(code, want, "{m} {p}: {details:?}");
    }
    let (code, details) = error(
        call(
            c,
            "vdi.create",
            json!({"sr": sr, "name": "huge", "size_mib": 60u64 << 20}),
        )
        .await,
    );
    assert_eq!(code, "SR_FULL");
    assert_eq!(details[0], sr);
    assert_eq!(details[1], (60u64 << 20).to_string());
    assert_eq!(
        ok(c, "vdi.list", json!({"sr": sr})).await,
        before,
        "nothing changed"
    );

    // Two VDIs of one name: by name it is ambiguous, by uuid or SR/name not.
    ok(
        c,
        "vdi.create",
        json!({"sr": sr, "name": "twin", "size_mib": 1, "format": "raw"}),
    )
    .await;
    ok(
        c,
        "vdi.create",
        json!({"sr": sr, "name": "twin", "size_mib": 1}),
    )
    .await;
    let (code, _) = error(call(c, "vdi.get", json!({"vdi": "twin"})).await);
    assert_eq!(code, "INVALID_PARAMS");

    // Growing, then destroying leaves first.
    ok(c, "vdi.resize", json!({"vdi": clone, "size_mib": 128})).await;
    assert_eq!(
        ok(c, "vdi.get", json!({"vdi": clone})).await["size_mib"],
        128
    );
    ok(c, "vdi.destroy", json!({"vdi": clone})).await;
    assert!(!cf.exists());
}

#[tokio::test(flavor = "current_thread")]
async fn copies_imports_and_exports_are_tasks_that_can_be_cancelled() {
    let b = bed(&[]).await;
    let c = &b.c;
    let (d1, d2) = (b.root.path().join("a"), b.root.path().join("b"));
    file_sr(c, "a", &d1).await;
    let sr_b = file_sr(c, "b", &d2).await;
    let v = ok(
        c,
        "vdi.create",
        json!({"sr": "a", "name": "data", "size_mib": 32}),
    )
    .await;
    let v = v["uuid"].as_str().unwrap().to_owned();
    let f = vdi_file(c, &d1, &v).await;
    write(&f, "qcow2", 1 << 20, 0x5a);

    // A synchronous copy into another SR, as raw; it shows as a task.
    let copy = ok(
        c,
        "vdi.copy",
        json!({"vdi": v, "sr": "b", "format": "raw", "name": "raw copy"}),
    )
    .await;
    let copy = copy["uuid"].as_str().unwrap().to_owned();
    let cv = ok(c, "vdi.get", json!({"vdi": copy})).await;
    assert_eq!(
        (cv["format"].as_str(), cv["sr"].as_str()),
        (Some("raw"), Some(sr_b.as_str()))
    );
    assert!(holds(&vdi_file(c, &d2, &copy).await, "raw", 1 << 20, 0x5a));
    let tasks = ok(c, "task.list", json!({})).await;
    assert!(tasks
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["method"] == "vdi.copy" && t["status"] == "success" && t["progress"] == 1.0));

    // An asynchronous one answers a task at once.
    let t = ok(c, "vdi.copy", json!({"vdi": v, "sr": "a", "async": true})).await;
    let done = wait_task(c, t["task"].as_str().unwrap()).await;
    assert_eq!(done["status"], "success", "{done:#}");
    assert_eq!(done["progress"], 1.0);
    let made = done["result"]["uuid"].as_str().unwrap().to_owned();
    assert!(holds(
        &vdi_file(c, &d1, &made).await,
        "qcow2",
        1 << 20,
        0x5a
    ));
    assert!(done["created"].as_str().unwrap().ends_with('Z'));
    assert!(done["finished"].is_string());

    // Import a raw image, export it as qcow2.
    let img = b.root.path().join("disk.img");
    std::fs::write(&img, vec![0x42u8; 2 << 20]).unwrap();
    let imp = ok(c, "vdi.import", json!({"sr": "b", "path": img})).await;
    let imp = imp["uuid"].as_str().unwrap().to_owned();
    let iv = ok(c, "vdi.get", json!({"vdi": imp})).await;
    assert_eq!(
        (
            iv["name"].as_str(),
            iv["format"].as_str(),
            iv["size_mib"].as_u64()
        ),
        (Some("disk"), Some("raw"), Some(2))
    );
    let out = b.root.path().join("out.qcow2");
    ok(
        c,
        "vdi.export",
        json!({"vdi": imp, "path": out, "format": "qcow2"}),
    )
    .await;
    check(&out);
    assert!(holds(&out, "qcow2", 0, 0x42));
    let refusals = [
        (
            "vdi.export",
            json!({"vdi": imp, "path": out}),
            "INVALID_PARAMS",
        ),
        (
            "vdi.export",
            json!({"vdi": imp, "path": "rel.img"}),
            "INVALID_PARAMS",
        ),
        (
            "vdi.export",
            json!({"vdi": imp, "path": d1.join("x.qcow2")}),
            "INVALID_PARAMS",
        ),
        (
            "vdi.export",
            json!({"vdi": imp, "path": b.d.state_dir.join("x")}),
            "INVALID_PARAMS",
        ),
        (
            "vdi.import",
            json!({"sr": "b", "path": b.root.path().join("none.img")}),
            "SR_BACKEND_ERROR",
        ),
        (
            "vdi.import",
            json!({"sr": "b", "path": b.root.path()}),
            "SR_BACKEND_ERROR",
        ),
        ("vdi.copy", json!({"vdi": v, "sr": "nope"}), "NOT_FOUND"),
        (
            "vdi.copy",
            json!({"vdi": v, "sr": "a", "async": "yes"}),
            "INVALID_PARAMS",
        ),
    ];
    for (m, p, want) in refusals {
        let (code, details) = error(call(c, m, p.clone()).await);
        assert_eq!(code, want, "{m} {p}: {details:?}");
    }

    // A cancelled copy leaves no VDI and no file, and the source as it was.
    let big = ok(
        c,
        "vdi.create",
        json!({"sr": "a", "name": "big", "size_mib": 1024, "format": "raw"}),
    )
    .await;
    let big = big["uuid"].as_str().unwrap().to_owned();
    let bf = vdi_file(c, &d1, &big).await;
    let chunk = vec![0x77u8; 1 << 20];
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut fh = std::fs::OpenOptions::new().write(true).open(&bf).unwrap();
        for i in 0..1024u64 {
            fh.seek(SeekFrom::Start(i << 20)).unwrap();
            fh.write_all(&chunk).unwrap();
        }
    }
    let before: Vec<_> = std::fs::read_dir(&d2)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let vdis_before = ok(c, "vdi.list", json!({"sr": "b"})).await;
    let t = ok(
        c,
        "vdi.copy",
        json!({"vdi": big, "sr": "b", "format": "qcow2", "async": true}),
    )
    .await;
    let task = t["task"].as_str().unwrap().to_owned();
    let cancelled = ok(c, "task.cancel", json!({"task": task})).await;
    assert!(
        ["cancelling", "cancelled"].contains(&cancelled["status"].as_str().unwrap()),
        "{cancelled:#}"
    );
    let end = wait_task(c, &task).await;
    assert_eq!(end["status"], "cancelled", "{end:#}");
    assert_eq!(end["error"]["code"], "TASK_CANCELLED");
    assert_eq!(ok(c, "vdi.list", json!({"sr": "b"})).await, vdis_before);
    let after: Vec<_> = std::fs::read_dir(&d2)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(before, after, "no partial copy");
    assert!(
        holds(&bf, "raw", 512 << 20, 0x77),
        "the source is untouched"
    );
    let (code, _) = error(call(c, "task.cancel", json!({"task": task})).await);
    assert_eq!(code, "NOT_ALLOWED", "it has finished");
    let (code, _) = error(call(c, "task.get", json!({"task": "nope"})).await);
    assert_eq!(code, "NOT_FOUND");

    // Any method may run as a task.
    let t = ok(c, "vdi.snapshot", json!({"vdi": v, "async": true})).await;
    let done = wait_task(c, t["task"].as_str().unwrap()).await;
    assert_eq!(
        (done["status"].as_str(), done["method"].as_str()),
        (Some("success"), Some("vdi.snapshot"))
    );
    let (code, _) = error(call(c, "task.cancel", json!({"task": t["task"]})).await);
    assert_eq!(code, "NOT_ALLOWED");
    let t = ok(c, "vdi.get", json!({"vdi": "nope", "async": true})).await;
    let done = wait_task(c, t["task"].as_str().unwrap()).await;
    assert_eq!(
        (done["status"].as_str(), done["error"]["code"].as_str()),
        (Some("failure"), Some("NOT_FOUND"))
    );
}

#[tokio::test(flavor = "current_thread")]
async fn scans_adopt_flag_and_report_and_records_survive_a_restart() {
    let b = bed(&[]).await;
    let dir = b.root.path().join("sr");
    let sr = file_sr(&b.c, "local", &dir).await;
    let c = &b.c;
    let keep = ok(
        c,
        "vdi.create",
        json!({"sr": sr, "name": "keep", "size_mib": 8}),
    )
    .await;
    let keep = keep["uuid"].as_str().unwrap().to_owned();
    let snap = ok(c, "vdi.snapshot", json!({"vdi": keep})).await["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let lost = ok(
        c,
        "vdi.create",
        json!({"sr": sr, "name": "lost", "size_mib": 8}),
    )
    .await;
    let lost = lost["uuid"].as_str().unwrap().to_owned();
    let touched = ok(
        c,
        "vdi.create",
        json!({"sr": sr, "name": "touched", "size_mib": 8}),
    )
    .await;
    let touched = touched["uuid"].as_str().unwrap().to_owned();

    // What an operator does behind xenith's back.
    let foreign = dir.join("debian.qcow2");
    let s = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&foreign)
        .arg("16M")
        .status()
        .unwrap();
    assert!(s.success());
    std::fs::remove_file(vdi_file(c, &dir, &lost).await).unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    write(&vdi_file(c, &dir, &touched).await, "qcow2", 0, 1);

    let r = ok(c, "sr.scan", json!({"sr": "local"})).await;
    let names = |k: &str| -> Vec<String> {
        r[k].as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names("added"), ["debian"]);
    assert_eq!(names("missing"), ["lost"]);
    assert_eq!(names("changed"), ["touched"]);
    let deb = ok(c, "vdi.get", json!({"vdi": "debian"})).await;
    assert_eq!(
        (deb["adopted"].as_bool(), deb["size_mib"].as_u64()),
        (Some(true), Some(16))
    );
    assert_eq!(
        ok(c, "vdi.get", json!({"vdi": lost})).await["missing"],
        true
    );
    let again = ok(c, "sr.scan", json!({"sr": "local"})).await;
    assert_eq!(again["added"], json!([]));
    assert_eq!(again["changed"], json!([]), "reported once");
    // A missing VDI's record goes with vdi.destroy.
    ok(c, "vdi.destroy", json!({"vdi": lost})).await;

    let listed = ok(c, "vdi.list", json!({})).await;
    let (code, dir_back) = b.d.stop();
    assert_eq!(code, Some(0));
    let d = Xenithd::start_in(XENITHD, dir_back, &[]);
    let c = RpcClient::connect(&d.socket).await.unwrap();
    assert_eq!(
        ok(&c, "vdi.list", json!({})).await,
        listed,
        "the records came back"
    );
    let k = ok(&c, "vdi.get", json!({"vdi": keep})).await;
    assert_eq!(k["parent"], snap.as_str());
    check(&vdi_file(&c, &dir, &keep).await);

    // sr.forget keeps the files; a new SR over them adopts them again.
    ok(&c, "sr.forget", json!({"sr": "local"})).await;
    assert!(dir.join(format!("{keep}.qcow2")).exists());
    file_sr(&c, "again", &dir).await;
    let r = ok(&c, "sr.scan", json!({"sr": "again"})).await;
    assert_eq!(r["added"].as_array().unwrap().len(), 4, "{r:#}");
    // sr.destroy removes them.
    ok(&c, "sr.destroy", json!({"sr": "again"})).await;
    assert!(!dir.exists(), "its directory held only its VDIs");
    assert_eq!(ok(&c, "sr.list", json!({})).await, json!([]));
}

#[tokio::test(flavor = "current_thread")]
async fn a_missing_tool_names_its_package() {
    let root = tempfile::tempdir().unwrap();
    let cfg = root.path().join("x.toml");
    std::fs::write(&cfg, "[storage]\nqemu_img = \"/nonexistent/qemu-img\"\n").unwrap();
    let b = bed(&["--config", cfg.to_str().unwrap()]).await;
    file_sr(&b.c, "local", &b.root.path().join("sr")).await;
    let (code, details) = error(
        call(
            &b.c,
            "vdi.create",
            json!({"sr": "local", "name": "x", "size_mib": 1}),
        )
        .await,
    );
    assert_eq!(code, "SR_BACKEND_ERROR");
    assert_eq!(details[0], "qemu-img");
    assert!(details[1].contains("qemu-utils"), "{details:?}");
    assert_eq!(ok(&b.c, "vdi.list", json!({})).await, json!([]));
    // Raw files need no tool.
    ok(
        &b.c,
        "vdi.create",
        json!({"sr": "local", "name": "x", "size_mib": 1, "format": "raw"}),
    )
    .await;
}
