//! A disk that fills up in the middle of a copy: the task fails with the
//! tool's message, the partial copy is removed (file and record), the
//! source is untouched. The destination SR is a small tmpfs, filled by
//! another writer once the copy is under way; mounting it needs root, so
//! the test is ignored by a plain `cargo test` and scripts/test runs it
//! (`cargo test --tests -- --ignored`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::daemon::Xenithd;
use common::rpc::ok;
use serde_json::json;
use xenith::proto::rpc::RpcClient;

const XENITHD: &str = env!("CARGO_BIN_EXE_xenithd");
const DATA_MIB: u64 = 1024;

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {out:?}");
    out
}

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs root: mounts a small tmpfs; scripts/test runs it (cargo test --tests -- --ignored)"]
async fn a_disk_full_mid_copy_fails_the_task_and_leaves_nothing() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "needs root to mount a tmpfs (run as root, as scripts/test does)"
    );
    let root = tempfile::tempdir().unwrap();
    let (src_dir, small) = (root.path().join("src"), root.path().join("small"));
    std::fs::create_dir_all(&small).unwrap();
    run(Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={}m", DATA_MIB + 64),
            "xenith-full",
        ])
        .arg(&small));
    let _mount = Mount(small.clone());

    let d = Xenithd::start(XENITHD, &[]);
    let c = RpcClient::connect(&d.socket).await.unwrap();
    for (name, dir) in [("src", &src_dir), ("small", &small)] {
        ok(
            &c,
            "sr.create",
            json!({"name": name, "type": "file", "config": {"path": dir}}),
        )
        .await;
    }
    // A raw source full of data that does not compress.
    let src = ok(
        &c,
        "vdi.create",
        json!({"sr": "src", "name": "data", "size_mib": DATA_MIB, "format": "raw"}),
    )
    .await["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let src_file = src_dir.join(
        ok(&c, "vdi.get", json!({"vdi": src})).await["location"]
            .as_str()
            .unwrap(),
    );
    run(Command::new("dd")
        .arg("if=/dev/urandom")
        .arg(format!("of={}", src_file.display()))
        .args([
            "bs=1M",
            &format!("count={DATA_MIB}"),
            "conv=notrunc",
            "status=none",
        ]));
    let sum = |p: &std::path::Path| {
        String::from_utf8(run(Command::new("md5sum").arg(p)).stdout).unwrap()[..32].to_owned()
    };
    let before = sum(&src_file);

    // The copy fits when it starts; once it is under way, another writer
    // takes the rest of the disk.
    let task = ok(
        &c,
        "vdi.copy",
        json!({"vdi": src, "sr": "small", "format": "raw", "name": "copy", "async": true}),
    )
    .await["task"]
        .as_str()
        .unwrap()
        .to_owned();
    let t0 = Instant::now();
    loop {
        let t = ok(&c, "task.get", json!({"task": task})).await;
        if t["progress"].as_f64().unwrap() > 0.0 || t["status"] != "pending" {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "{t:#}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", small.join("filler").display()))
        .args(["bs=1M", "status=none"])
        .status();
    let t = loop {
        let t = ok(&c, "task.get", json!({"task": task})).await;
        if t["status"] != "pending" {
            break t;
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "{t:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(t["status"], "failure", "the copy had room to finish: {t:#}");
    let e = t["error"].to_string();
    assert!(
        e.contains("No space left on device"),
        "the tool's message: {e}"
    );

    // Nothing of the copy is left; the source is as it was.
    let left: Vec<_> = std::fs::read_dir(&small)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left, ["filler"], "the partial copy is removed");
    let vdis = ok(&c, "vdi.list", json!({"sr": "small"})).await;
    assert_eq!(vdis, json!([]));
    assert_eq!(sum(&src_file), before);
    assert_eq!(
        ok(&c, "vdi.list", json!({"sr": "src"}))
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
}
