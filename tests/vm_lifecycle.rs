//! VMs end to end through the RPC socket, on the simulated host: create,
//! start (devices connect, the guest's agent reports), pause, clean
//! shutdown, reboot, kill, memory admission, records across a restart,
//! remove; errors with their codes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::daemon::Xenithd;
use serde_json::{json, Value};
use xenith::proto::rpc::{ClientError, RpcClient};

const XENITHD: &str = env!("CARGO_BIN_EXE_xenithd");

fn spec(name: &str, memory_mib: u64) -> Value {
    json!({
        "name": name, "type": "pv", "memory_mib": memory_mib, "vcpus": 1,
        "kernel": "/boot/vmlinuz", "cmdline": "console=hvc0",
        "disks": [{"path": format!("/var/lib/xenith/{name}.img"), "device": "xvda", "mode": "rw"}],
        "nics": [{"bridge": "xenbr0", "mac": "00:16:3e:00:00:01"}],
    })
}

async fn call(c: &RpcClient, method: &str, params: Value) -> Result<Value, ClientError> {
    c.call::<Value, Value>(method, params).await
}

fn code(r: Result<Value, ClientError>) -> (String, Vec<String>) {
    match r {
        Err(ClientError::Remote(e)) => (e.code, e.details),
        other => panic!("expected an error, got {other:?}"),
    }
}

async fn wait_for(c: &RpcClient, vm: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let t0 = Instant::now();
    loop {
        let v = call(c, "vm.get", json!({"vm": vm})).await.unwrap();
        if pred(&v) {
            return v;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{what} never happened: {v:#}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn xs_read(d: &Xenithd, path: &str) -> Option<String> {
    let tool = std::path::Path::new("/usr/bin/xenstore-read");
    assert!(
        tool.exists(),
        "xenstore-read is missing: run ./scripts/test (installs xenstore-utils)"
    );
    let out = std::process::Command::new(tool)
        .arg(path)
        .env("XENSTORED_PATH", d.xenstored_socket())
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim_end().to_owned())
}

#[tokio::test(flavor = "current_thread")]
async fn a_vm_lives_and_dies_as_asked() {
    let d = Xenithd::start(XENITHD, &[]);
    let c = RpcClient::connect(&d.socket).await.unwrap();
    let created = call(&c, "vm.create", json!({"spec": spec("web", 256)}))
        .await
        .unwrap();
    let uuid = created["uuid"].as_str().unwrap().to_owned();
    assert_eq!(
        code(call(&c, "vm.create", json!({"spec": spec("web", 256)})).await).0,
        "ALREADY_EXISTS"
    );
    let mut bad = spec("bad", 256);
    bad["disks"][0]["device"] = json!("sda");
    let (code_, details) = code(call(&c, "vm.create", json!({"spec": bad})).await);
    assert_eq!(
        (code_.as_str(), details),
        ("INVALID_PARAMS", vec!["spec.disks[0].device".to_owned()])
    );
    assert_eq!(
        code(call(&c, "vm.get", json!({"vm": "nope"})).await).0,
        "NOT_FOUND"
    );

    let list = call(&c, "vm.list", json!({})).await.unwrap();
    assert_eq!(
        list,
        // Labelled: a simulated VM is never passed off as real.
        json!([{"uuid": uuid, "name": "web", "power_state": "Halted", "domid": null, "hypervisor": "sim"}])
    );
    let host = call(&c, "host.info", json!({})).await.unwrap();
    assert_eq!(host["vms"], 1);
    let free_before = host["free_mib"].as_u64().unwrap();

    // Start: Running; the devices connect; the guest's agent reports its address.
    let started = call(&c, "vm.start", json!({"vm": "web"})).await.unwrap();
    assert_eq!(started["power_state"], "Running");
    let domid = started["domid"].as_u64().unwrap();
    let v = wait_for(&c, &uuid, "devices connected and agent reporting", |v| {
        v["vbds"][0]["state"] == "Connected"
            && v["vifs"][0]["state"] == "Connected"
            && v["guest"]["agent"] == true
            && v["guest"]["ips"]["0/ipv4/0"].is_string()
    })
    .await;
    assert_eq!(v["guest"]["os_distro"], "debian");
    assert_eq!(v["hypervisor"], "sim");
    assert_eq!(v["vifs"][0]["mac"], "00:16:3e:00:00:01");
    assert_eq!(
        xs_read(&d, &format!("/local/domain/{domid}/name")).as_deref(),
        Some("web")
    );
    assert_eq!(
        xs_read(&d, &format!("/vm/{uuid}/name")).as_deref(),
        Some("web")
    );
    let host = call(&c, "host.info", json!({})).await.unwrap();
    assert_eq!(host["free_mib"].as_u64().unwrap(), free_before - 256);

    // A wrong state is refused, with the states named.
    let (c2, details) = code(call(&c, "vm.start", json!({"vm": "web"})).await);
    assert_eq!(
        (c2.as_str(), details),
        (
            "VM_BAD_POWER_STATE",
            vec![uuid.clone(), "Halted".into(), "Running".into()]
        )
    );

    // Pause and unpause.
    assert_eq!(
        call(&c, "vm.pause", json!({"vm": "web"})).await.unwrap()["power_state"],
        "Paused"
    );
    assert_eq!(
        code(call(&c, "vm.pause", json!({"vm": "web"})).await).0,
        "VM_BAD_POWER_STATE"
    );
    assert_eq!(
        call(&c, "vm.unpause", json!({"vm": "web"})).await.unwrap()["power_state"],
        "Running"
    );

    // A clean shutdown: the guest acknowledges; everything is cleaned up.
    let halted = call(&c, "vm.shutdown", json!({"vm": "web"})).await.unwrap();
    assert_eq!(halted["power_state"], "Halted");
    assert_eq!(halted["domid"], Value::Null);
    for path in [
        format!("/local/domain/{domid}"),
        format!("/vm/{uuid}"),
        format!("/local/domain/0/backend/vbd/{domid}"),
    ] {
        assert_eq!(xs_read(&d, &path), None, "{path} left behind");
    }
    let host = call(&c, "host.info", json!({})).await.unwrap();
    assert_eq!(host["free_mib"].as_u64().unwrap(), free_before);

    // Start again, reboot (a new domain), kill.
    call(&c, "vm.start", json!({"vm": uuid})).await.unwrap();
    let first = call(&c, "vm.get", json!({"vm": "web"})).await.unwrap()["domid"].clone();
    let rebooted = call(&c, "vm.reboot", json!({"vm": "web"})).await.unwrap();
    assert_eq!(rebooted["power_state"], "Running");
    assert_ne!(rebooted["domid"], first);
    wait_for(&c, "web", "devices connected after reboot", |v| {
        v["vbds"][0]["state"] == "Connected"
    })
    .await;
    assert_eq!(
        call(&c, "vm.kill", json!({"vm": "web"})).await.unwrap()["power_state"],
        "Halted"
    );

    // A VM that does not fit: refused, and nothing is left behind.
    call(&c, "vm.create", json!({"spec": spec("huge", 1 << 20)}))
        .await
        .unwrap();
    assert_eq!(
        code(call(&c, "vm.start", json!({"vm": "huge"})).await).0,
        "HOST_NOT_ENOUGH_FREE_MEMORY"
    );
    assert_eq!(
        call(&c, "vm.get", json!({"vm": "huge"})).await.unwrap()["power_state"],
        "Halted"
    );
    assert_eq!(
        call(&c, "host.info", json!({})).await.unwrap()["free_mib"]
            .as_u64()
            .unwrap(),
        free_before
    );

    // Records survive a restart (the simulated domains do not: Halted).
    call(&c, "vm.start", json!({"vm": "web"})).await.unwrap();
    drop(c);
    let (exit, dir) = d.stop();
    assert_eq!(exit, Some(0));
    let d = Xenithd::start_in(XENITHD, dir, &[]);
    let c = RpcClient::connect(&d.socket).await.unwrap();
    let names: Vec<String> = call(&c, "vm.list", json!({}))
        .await
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["huge", "web"]);

    // Remove: only Halted VMs; then gone, record and all.
    assert_eq!(
        call(&c, "vm.remove", json!({"vm": "huge"})).await.unwrap()["name"],
        "huge"
    );
    assert_eq!(
        code(call(&c, "vm.get", json!({"vm": "huge"})).await).0,
        "NOT_FOUND"
    );
    assert_eq!(
        std::fs::read_dir(d.state_dir.join("vms")).unwrap().count(),
        1
    );
}

/// The socket is claimed early at start, but a call waits until every VM
/// record has been taken back: the first `vm.list` sees them all.
#[tokio::test(flavor = "current_thread")]
async fn the_first_call_after_a_restart_sees_every_vm() {
    const N: usize = 400;
    let d = Xenithd::start(XENITHD, &[]);
    let c = RpcClient::connect(&d.socket).await.unwrap();
    let created = futures_util::future::join_all((0..N).map(|i| {
        call(
            &c,
            "vm.create",
            json!({"spec": spec(&format!("vm{i:03}"), 64)}),
        )
    }))
    .await;
    assert!(created.iter().all(Result::is_ok));
    drop(c);
    let (exit, dir) = d.stop();
    assert_eq!(exit, Some(0));
    let d = Xenithd::start_in(XENITHD, dir, &[]);
    let c = RpcClient::connect(&d.socket).await.unwrap();
    let listed = call(&c, "vm.list", json!({})).await.unwrap();
    assert_eq!(listed.as_array().unwrap().len(), N);
}

/// vm.set_memory_target (extension): the guest's memory/target, which the
/// simulated balloon driver follows (its agent then reports the new total).
#[tokio::test(flavor = "current_thread")]
async fn a_memory_target_is_what_the_guest_balloons_to() {
    let d = Xenithd::start(XENITHD, &[]);
    let c = RpcClient::connect(&d.socket).await.unwrap();
    call(&c, "vm.create", json!({"spec": spec("web", 256)}))
        .await
        .unwrap();
    assert_eq!(
        code(call(&c, "vm.set_memory_target", json!({"vm": "web", "mib": 128})).await).0,
        "VM_BAD_POWER_STATE"
    );
    call(&c, "vm.start", json!({"vm": "web"})).await.unwrap();
    wait_for(&c, "web", "the agent's first report", |v| {
        v["guest"]["memory_total_kib"] == 256 * 1024
    })
    .await;
    let domid = call(&c, "vm.get", json!({"vm": "web"})).await.unwrap()["domid"].clone();
    call(&c, "vm.set_memory_target", json!({"vm": "web", "mib": 128}))
        .await
        .unwrap();
    assert_eq!(
        xs_read(&d, &format!("/local/domain/{domid}/memory/target")).as_deref(),
        Some("131072")
    );
    wait_for(&c, "web", "the balloon down to 128 MiB", |v| {
        v["guest"]["memory_total_kib"] == 128 * 1024
    })
    .await;
    for bad in [0, 15, 257] {
        assert_eq!(
            code(call(&c, "vm.set_memory_target", json!({"vm": "web", "mib": bad})).await),
            ("INVALID_PARAMS".to_owned(), vec!["mib".to_owned()])
        );
    }
    // Up again, to the VM's memory.
    call(&c, "vm.set_memory_target", json!({"vm": "web", "mib": 256}))
        .await
        .unwrap();
    wait_for(&c, "web", "the balloon back up", |v| {
        v["guest"]["memory_total_kib"] == 256 * 1024
    })
    .await;
}

/// What happened: xenithd was killed while two creations of one name were
/// under way (before names were reserved), or someone copied a record by
/// hand: two records share a name. What must hold after a restart: both
/// VMs are taken back, the older record keeps the name, the other is
/// flagged and named by its uuid, and can be removed; a record edited into
/// something vm.create refuses is not loaded at all.
#[tokio::test(flavor = "current_thread")]
async fn records_that_share_a_name_are_reported_and_can_be_removed() {
    let d = Xenithd::start(XENITHD, &[]);
    let c = RpcClient::connect(&d.socket).await.unwrap();
    let first = call(&c, "vm.create", json!({"spec": spec("twin", 64)}))
        .await
        .unwrap()["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    drop(c);
    let (code, dir) = d.stop();
    assert_eq!(code, Some(0));
    let vms = dir.path().join("state/vms");
    let text = std::fs::read_to_string(vms.join(format!("{first}.toml"))).unwrap();
    // A copy with another uuid, written later; and one with a name that is a path.
    std::thread::sleep(Duration::from_millis(20));
    let second = uuid::Uuid::new_v4().to_string();
    std::fs::write(
        vms.join(format!("{second}.toml")),
        text.replace(&first, &second),
    )
    .unwrap();
    let evil = uuid::Uuid::new_v4().to_string();
    let evil_text = text
        .replace(&first, &evil)
        .replace("name = \"twin\"", "name = \"../../evil/name\"");
    std::fs::write(vms.join(format!("{evil}.toml")), evil_text).unwrap();

    let d = Xenithd::start_in(XENITHD, dir, &[]);
    let c = RpcClient::connect(&d.socket).await.unwrap();
    let list = call(&c, "vm.list", json!({})).await.unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    let flagged: Vec<&Value> = list.iter().filter(|v| v["name_conflict"] == true).collect();
    assert_eq!(flagged.len(), 1);
    assert_eq!(
        flagged[0]["uuid"], second,
        "the newer record is the one flagged"
    );
    assert_eq!(
        call(&c, "vm.get", json!({"vm": "twin"})).await.unwrap()["uuid"],
        first
    );
    let v = call(&c, "vm.get", json!({"vm": second})).await.unwrap();
    assert_eq!(v["name_conflict"], true);
    call(&c, "vm.remove", json!({"vm": second})).await.unwrap();
    let list = call(&c, "vm.list", json!({})).await.unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(
        call(&c, "vm.get", json!({"vm": "twin"})).await.unwrap()["uuid"],
        first
    );
}

/// What happened (issue: duplicate records): many clients created a VM of
/// one name at once. What must hold: exactly one is created (its name is
/// reserved before its record is written), the others are refused with
/// ALREADY_EXISTS, and one record is on disk.
#[tokio::test(flavor = "current_thread")]
async fn concurrent_creations_of_one_name_make_one_vm() {
    let d = Xenithd::start(XENITHD, &[]);
    let clients: Vec<RpcClient> =
        futures_util::future::join_all((0..8).map(|_| RpcClient::connect(&d.socket)))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    let results = futures_util::future::join_all(clients.iter().flat_map(|c| {
        (0..4).map(move |_| call(c, "vm.create", json!({"spec": spec("once", 64)})))
    }))
    .await;
    let made = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(made, 1, "{results:?}");
    for r in results.into_iter().filter(Result::is_err) {
        assert_eq!(code(r).0, "ALREADY_EXISTS");
    }
    let records = std::fs::read_dir(d.state_dir.join("vms"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "toml")
        })
        .count();
    assert_eq!(records, 1);
}
