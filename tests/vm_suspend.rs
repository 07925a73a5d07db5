//! vm.suspend and vm.resume on the simulated host, through the RPC socket:
//! the guest's memory into xenith's image (docs/migration.md) and back
//! into a new domain whose guest carries on (it resumes, it does not
//! boot); the image kept across a daemon restart; a guest that does not
//! suspend keeps running; a corrupt or truncated image is refused and
//! makes no domain; a hard stop throws the image away; a disk that fills
//! up mid-suspend leaves the VM running and no partial image.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::daemon::Xenithd;
use common::rpc::{call, error, ok, until};
use serde_json::{json, Value};
use xenith::proto::rpc::RpcClient;

const XENITHD: &str = env!("CARGO_BIN_EXE_xenithd");
const WAIT: Duration = Duration::from_secs(20);

fn spec(name: &str, memory_mib: u64) -> Value {
    json!({
        "name": name, "type": "pv", "memory_mib": memory_mib, "vcpus": 1,
        "kernel": "/boot/vmlinuz", "cmdline": "console=hvc0",
        "disks": [{"path": format!("/var/lib/xenith/{name}.img"), "device": "xvda", "mode": "rw"}],
        "nics": [{"bridge": "xenbr0", "mac": "00:16:3e:00:00:01"}],
    })
}

async fn running_vm(c: &RpcClient, name: &str, mib: u64) -> String {
    let uuid = ok(c, "vm.create", json!({"spec": spec(name, mib)})).await["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    ok(c, "vm.start", json!({"vm": name})).await;
    until(c, name, "devices connected", WAIT, |v| {
        v["vbds"][0]["state"] == "Connected" && v["vifs"][0]["state"] == "Connected"
    })
    .await;
    uuid
}

fn image(d: &Xenithd, uuid: &str) -> std::path::PathBuf {
    d.state_dir.join("suspend").join(format!("{uuid}.xsi"))
}

fn suspend_dir_names(d: &Xenithd) -> Vec<String> {
    std::fs::read_dir(d.state_dir.join("suspend"))
        .map(|r| {
            r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

async fn free_mib(c: &RpcClient) -> u64 {
    ok(c, "host.info", json!({})).await["free_mib"]
        .as_u64()
        .unwrap()
}

async fn console(c: &RpcClient, vm: &str) -> String {
    ok(c, "vm.console", json!({"vm": vm})).await["text"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "current_thread")]
async fn a_suspended_vm_resumes_where_it_was() {
    let d = Xenithd::start(XENITHD, &[]);
    let c = RpcClient::connect(&d.socket).await.unwrap();
    let free = free_mib(&c).await;
    let uuid = running_vm(&c, "s1", 64).await;
    let domid = ok(&c, "vm.get", json!({"vm": "s1"})).await["domid"]
        .as_u64()
        .unwrap();

    // As a task, with its progress.
    let task = ok(&c, "vm.suspend", json!({"vm": "s1", "async": true})).await["task"]
        .as_str()
        .unwrap()
        .to_owned();
    let t = loop {
        let t = ok(&c, "task.get", json!({"task": task})).await;
        if t["status"] != "pending" {
            break t;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(t["status"], "success", "{t:#}");
    assert_eq!(t["progress"], 1.0);
    assert_eq!(t["result"]["power_state"], "Suspended");
    let v = ok(&c, "vm.get", json!({"vm": "s1"})).await;
    assert_eq!(
        (v["power_state"].as_str(), v["domid"].as_u64()),
        (Some("Suspended"), None)
    );
    // The domain is gone, its memory back; the image holds the guest.
    assert_eq!(free_mib(&c).await, free);
    let size = std::fs::metadata(image(&d, &uuid)).unwrap().len();
    assert!(size > 64 << 20, "an image of {size} bytes for 64 MiB");
    let domains = ok(&c, "xs.ls", json!({"path": "/local/domain"})).await;
    assert!(
        !domains
            .as_array()
            .unwrap()
            .contains(&json!(domid.to_string())),
        "{domains}"
    );

    // Suspended: no start, no second suspend; resume.
    assert_eq!(
        error(call(&c, "vm.start", json!({"vm": "s1"})).await).0,
        "VM_BAD_POWER_STATE"
    );
    assert_eq!(
        error(call(&c, "vm.suspend", json!({"vm": "s1"})).await).0,
        "VM_BAD_POWER_STATE"
    );
    let r = ok(&c, "vm.resume", json!({"vm": "s1"})).await;
    assert_eq!(r["power_state"], "Running");
    assert!(r["domid"].as_u64().is_some());
    until(&c, "s1", "devices reconnected", WAIT, |v| {
        v["vbds"][0]["state"] == "Connected"
            && v["vifs"][0]["state"] == "Connected"
            && v["guest"]["agent"] == true
    })
    .await;
    let text = console(&c, "s1").await;
    assert!(text.contains("PM: resume from suspend"), "{text}");
    assert!(!image(&d, &uuid).exists(), "the image goes once resumed");
    assert_eq!(free_mib(&c).await, free - 64);
    // And it suspends and resumes again, paused this time.
    ok(&c, "vm.suspend", json!({"vm": "s1"})).await;
    let r = ok(&c, "vm.resume", json!({"vm": "s1", "paused": true})).await;
    assert_eq!(r["power_state"], "Paused");
    ok(&c, "vm.unpause", json!({"vm": "s1"})).await;
    ok(&c, "vm.shutdown", json!({"vm": "s1"})).await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_suspended_vm_stays_suspended_across_a_restart_and_a_kill_discards_it() {
    let d = Xenithd::start(XENITHD, &[]);
    let c = RpcClient::connect(&d.socket).await.unwrap();
    let uuid = running_vm(&c, "s2", 32).await;
    ok(&c, "vm.suspend", json!({"vm": "s2"})).await;
    drop(c);
    let (exit, dir) = d.stop();
    assert_eq!(exit, Some(0));
    let d = Xenithd::start_in(XENITHD, dir, &[]);
    let c = RpcClient::connect(&d.socket).await.unwrap();
    let v = ok(&c, "vm.get", json!({"vm": "s2"})).await;
    assert_eq!(v["power_state"], "Suspended");
    ok(&c, "vm.resume", json!({"vm": "s2"})).await;
    ok(&c, "vm.suspend", json!({"vm": "s2"})).await;
    // A hard stop of a Suspended VM throws its image away: Halted, and it
    // boots afresh.
    let k = ok(&c, "vm.kill", json!({"vm": "s2"})).await;
    assert_eq!(k["power_state"], "Halted");
    assert!(!image(&d, &uuid).exists());
    ok(&c, "vm.start", json!({"vm": "s2"})).await;
    let text = console(&c, "s2").await;
    assert!(text.contains("Linux version"), "a fresh boot: {text}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_guest_that_does_not_suspend_keeps_running() {
    let d = Xenithd::start(XENITHD, &["--allow-fault-injection"]);
    let c = RpcClient::connect(&d.socket).await.unwrap();
    running_vm(&c, "s3", 32).await;
    ok(
        &c,
        "fault.inject",
        json!({"vm": "s3", "part": "domain", "kind": "hang"}),
    )
    .await;
    let (code, _) = error(call(&c, "vm.suspend", json!({"vm": "s3", "timeout_s": 1})).await);
    assert_eq!(code, "OPERATION_TIMEOUT");
    let v = ok(&c, "vm.get", json!({"vm": "s3"})).await;
    assert_eq!(v["power_state"], "Running");
    assert!(
        suspend_dir_names(&d).is_empty(),
        "{:?}",
        suspend_dir_names(&d)
    );
    // The request was withdrawn.
    let domid = v["domid"].as_u64().unwrap();
    let key = ok(
        &c,
        "xs.read",
        json!({"path": format!("/local/domain/{domid}/control/shutdown")}),
    )
    .await;
    assert_eq!(key, "");
    let (code, _) = error(call(&c, "vm.suspend", json!({"vm": "s3", "timeout_s": 0})).await);
    assert_eq!(code, "INVALID_PARAMS");
}

#[tokio::test(flavor = "current_thread")]
async fn a_corrupt_or_truncated_image_is_refused_and_makes_no_domain() {
    let d = Xenithd::start(XENITHD, &[]);
    let c = RpcClient::connect(&d.socket).await.unwrap();
    let uuid = running_vm(&c, "s4", 16).await;
    ok(&c, "vm.suspend", json!({"vm": "s4"})).await;
    let path = image(&d, &uuid);
    let good = std::fs::read(&path).unwrap();
    let free = free_mib(&c).await;
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x01;
    for (what, bytes, says) in [
        ("flipped", flipped, "digest"),
        ("truncated", good[..good.len() - 5000].to_vec(), "truncated"),
        ("empty", Vec::new(), "truncated"),
    ] {
        std::fs::write(&path, &bytes).unwrap();
        let r = call(&c, "vm.resume", json!({"vm": "s4"})).await;
        let Err(xenith::proto::rpc::ClientError::Remote(e)) = r else {
            panic!("{what}: resumed from a bad image: {r:?}");
        };
        assert_eq!(e.code, "NOT_ALLOWED", "{what}: {}", e.message);
        assert!(e.message.contains(says), "{what}: {}", e.message);
        let v = ok(&c, "vm.get", json!({"vm": "s4"})).await;
        assert_eq!(v["power_state"], "Suspended", "{what}");
        assert_eq!(free_mib(&c).await, free, "{what}: a domain was left");
    }
    std::fs::write(&path, &good).unwrap();
    assert_eq!(
        ok(&c, "vm.resume", json!({"vm": "s4"})).await["power_state"],
        "Running"
    );
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs root: the state directory on a small tmpfs; scripts/test runs it (cargo test --tests -- --ignored)"]
async fn a_disk_full_while_suspending_leaves_the_vm_running_and_no_partial_image() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "needs root to mount a tmpfs (run as root, as scripts/test does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=24m", "xenith-suspend-full"])
        .arg(&state)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount a tmpfs on {}", state.display());
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _unmount = Unmount(state.clone());
    let d = Xenithd::start_in(XENITHD, dir, &[]);
    let c = RpcClient::connect(&d.socket).await.unwrap();
    running_vm(&c, "s5", 64).await;
    let (code, _) = error(call(&c, "vm.suspend", json!({"vm": "s5"})).await);
    assert_eq!(code, "INTERNAL_ERROR");
    let v = ok(&c, "vm.get", json!({"vm": "s5"})).await;
    assert_eq!(v["power_state"], "Running", "{v:#}");
    assert!(
        suspend_dir_names(&d).is_empty(),
        "{:?}",
        suspend_dir_names(&d)
    );
    // The guest runs on: it answers a clean shutdown.
    until(&c, "s5", "devices connected again", WAIT, |v| {
        v["vbds"][0]["state"] == "Connected"
    })
    .await;
    let s = ok(&c, "vm.shutdown", json!({"vm": "s5", "timeout_s": 10})).await;
    assert_eq!(s["power_state"], "Halted");
}
