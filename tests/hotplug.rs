//! vbd.plug/unplug and vif.plug/unplug through the RPC socket: into a
//! running VM (the simulated guest's frontend connects; unplug closes and
//! removes both trees), into a halted one (kept for its next start), kept
//! across a daemon restart, and the errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::daemon::Xenithd;
use common::rpc::{call, error, until};
use serde_json::{json, Value};
use xenith::drivers::xenstore::XsClient;
use xenith::proto::rpc::{ClientError, RpcClient};

const XENITHD: &str = env!("CARGO_BIN_EXE_xenithd");

fn states(v: &Value, kind: &str) -> Vec<(String, String)> {
    v[kind]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["device"].as_str().unwrap().to_owned(),
                d["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn all_connected(v: &Value) -> bool {
    ["vbds", "vifs"]
        .iter()
        .all(|k| states(v, k).iter().all(|(_, s)| s == "Connected"))
}

#[tokio::test(flavor = "current_thread")]
async fn devices_plug_and_unplug_running_and_halted() {
    let d = Xenithd::start(XENITHD, &[]);
    let c = RpcClient::connect(&d.socket).await.unwrap();
    let xs = XsClient::connect_socket(&d.xenstored_socket())
        .await
        .unwrap();
    let spec = json!({"name": "hp", "type": "pv", "memory_mib": 128, "kernel": "/boot/vmlinuz",
                      "disks": [{"path": "/a.img", "device": "xvda"}], "nics": [{}]});
    call(&c, "vm.create", json!({"spec": spec})).await.unwrap();
    call(&c, "vm.start", json!({"vm": "hp"})).await.unwrap();
    let wait = Duration::from_secs(10);
    let v = until(&c, "hp", "connected", wait, all_connected).await;
    let domid = v["domid"].as_u64().unwrap();

    // Plug a disk and a NIC into the running VM: both connect.
    let r = call(
        &c,
        "vbd.plug",
        json!({"vm": "hp", "disk": {"path": "/b.img", "device": "xvdb", "mode": "ro"}}),
    )
    .await
    .unwrap();
    assert_eq!(r["device"], "xvdb");
    let r = call(
        &c,
        "vif.plug",
        json!({"vm": "hp", "nic": {"bridge": "xenbr1"}}),
    )
    .await
    .unwrap();
    assert_eq!(r["device"], "1");
    let v = until(&c, "hp", "hot-plugged devices connected", wait, |v| {
        all_connected(v) && states(v, "vbds").len() == 2 && states(v, "vifs").len() == 2
    })
    .await;
    assert_eq!(
        v["domid"].as_u64(),
        Some(domid),
        "the domain was not restarted"
    );
    let back = format!("/local/domain/0/backend/vbd/{domid}/51728");
    assert_eq!(
        xs.read_opt(&format!("{back}/mode"))
            .await
            .unwrap()
            .as_deref(),
        Some("r")
    );
    assert_eq!(
        xs.read_opt(&format!("/local/domain/0/backend/vif/{domid}/1/bridge"))
            .await
            .unwrap()
            .as_deref(),
        Some("xenbr1")
    );

    // Errors: a device in use, a bad one, one the VM does not have.
    assert_eq!(
        error(
            call(
                &c,
                "vbd.plug",
                json!({"vm": "hp", "disk": {"path": "/c.img", "device": "xvdb"}})
            )
            .await
        ),
        ("INVALID_PARAMS".into(), vec!["disk.device".into()])
    );
    assert_eq!(
        error(
            call(
                &c,
                "vbd.plug",
                json!({"vm": "hp", "disk": {"path": "rel.img", "device": "xvdc"}})
            )
            .await
        ),
        ("INVALID_PARAMS".into(), vec!["disk.path".into()])
    );
    assert_eq!(
        error(call(&c, "vbd.unplug", json!({"vm": "hp", "device": "xvdz"})).await).0,
        "NOT_FOUND"
    );
    assert_eq!(
        error(call(&c, "vif.unplug", json!({"vm": "hp", "device": "9"})).await).0,
        "NOT_FOUND"
    );

    // Unplug: Closing -> Closed with the guest, both trees gone.
    call(&c, "vbd.unplug", json!({"vm": "hp", "device": "xvdb"}))
        .await
        .unwrap();
    call(&c, "vif.unplug", json!({"vm": "hp", "device": "1"}))
        .await
        .unwrap();
    assert!(xs.read_opt(&back).await.unwrap().is_none());
    assert!(xs
        .read_opt(&format!("/local/domain/{domid}/device/vbd/51728"))
        .await
        .unwrap()
        .is_none());
    let v = call(&c, "vm.get", json!({"vm": "hp"})).await.unwrap();
    assert_eq!(
        states(&v, "vbds"),
        vec![("xvda".into(), "Connected".into())]
    );
    assert_eq!(states(&v, "vifs"), vec![("0".into(), "Connected".into())]);

    // Halted: the change is kept for the next start, and across a restart.
    call(&c, "vm.shutdown", json!({"vm": "hp"})).await.unwrap();
    call(
        &c,
        "vbd.plug",
        json!({"vm": "hp", "disk": {"path": "/d.img", "device": "xvdd"}}),
    )
    .await
    .unwrap();
    drop(c);
    let (code, dir) = d.stop();
    assert_eq!(code, Some(0));
    let d = Xenithd::start_in(XENITHD, dir, &[]);
    let c = RpcClient::connect(&d.socket).await.unwrap();
    call(&c, "vm.start", json!({"vm": "hp"})).await.unwrap();
    let v = until(&c, "hp", "the kept disk connects", wait, |v| {
        all_connected(v) && states(v, "vbds").len() == 2
    })
    .await;
    assert_eq!(states(&v, "vbds")[1].0, "xvdd");
}

fn remote(r: Result<Value, ClientError>) -> (String, Vec<String>, String) {
    match r {
        Err(ClientError::Remote(e)) => (e.code, e.details, e.message),
        other => panic!("expected an error, got {other:?}"),
    }
}

/// What users did: gave a second VM (and the same VM) a disk another VM
/// writes, under its own name, a symlink and a hard link, at create and at
/// plug. What must hold: each is refused, VDI_IN_USE naming the disk and
/// the VM that holds it, nothing is created or plugged; read-only sharing
/// works; once the writer is gone the disk is free.
#[tokio::test(flavor = "current_thread")]
async fn a_disk_has_one_writer() {
    let d = Xenithd::start(XENITHD, &[]);
    let c = RpcClient::connect(&d.socket).await.unwrap();
    let images = d.dir.path().join("images");
    std::fs::create_dir_all(&images).unwrap();
    let img = images.join("shared.img");
    std::fs::write(&img, b"disk").unwrap();
    let link = images.join("link.img");
    std::os::unix::fs::symlink(&img, &link).unwrap();
    let hard = images.join("hard.img");
    std::fs::hard_link(&img, &hard).unwrap();
    let spec = |name: &str, disks: Value| {
        json!({"spec": {"name": name, "type": "pv", "memory_mib": 64, "kernel": "/boot/vmlinuz",
                        "disks": disks, "nics": [{}]}})
    };
    let disk = |path: &std::path::Path, dev: &str, mode: &str| json!({"path": path, "device": dev, "mode": mode});
    call(
        &c,
        "vm.create",
        spec("writer", json!([disk(&img, "xvda", "rw")])),
    )
    .await
    .unwrap();
    call(&c, "vm.start", json!({"vm": "writer"})).await.unwrap();

    for (path, mode) in [(&img, "rw"), (&link, "rw"), (&hard, "ro")] {
        let (code, details, message) = remote(
            call(
                &c,
                "vm.create",
                spec("second", json!([disk(path, "xvda", mode)])),
            )
            .await,
        );
        assert_eq!(code, "VDI_IN_USE", "{message}");
        assert_eq!(
            details,
            vec![path.display().to_string(), "writer".to_owned()]
        );
        assert!(
            message.contains("attached read-write to VM writer (xvda)"),
            "{message}"
        );
    }
    let (code, ..) = remote(call(&c, "vm.get", json!({"vm": "second"})).await);
    assert_eq!(code, "NOT_FOUND", "nothing was created");

    // Twice in one VM, at plug: refused, and the VM has one disk still.
    let (code, details, _) = remote(
        call(
            &c,
            "vbd.plug",
            json!({"vm": "writer", "disk": disk(&link, "xvdb", "rw")}),
        )
        .await,
    );
    assert_eq!(
        (code.as_str(), details[1].as_str()),
        ("VDI_IN_USE", "writer")
    );
    let v = call(&c, "vm.get", json!({"vm": "writer"})).await.unwrap();
    assert_eq!(v["vbds"].as_array().unwrap().len(), 1);

    // Readers share a disk nobody writes.
    let ro = images.join("ro.img");
    std::fs::write(&ro, b"disk").unwrap();
    call(
        &c,
        "vm.create",
        spec("reader1", json!([disk(&ro, "xvda", "ro")])),
    )
    .await
    .unwrap();
    call(
        &c,
        "vm.create",
        spec(
            "reader2",
            json!([disk(&ro, "xvda", "ro"), disk(&ro, "xvdb", "ro")]),
        ),
    )
    .await
    .unwrap();
    call(
        &c,
        "vbd.plug",
        json!({"vm": "writer", "disk": disk(&ro, "xvdc", "ro")}),
    )
    .await
    .unwrap();
    let (code, _, message) = remote(
        call(
            &c,
            "vbd.plug",
            json!({"vm": "reader1", "disk": disk(&ro, "xvdb", "rw")}),
        )
        .await,
    );
    assert_eq!(code, "VDI_IN_USE");
    assert!(message.contains("attached read-only"), "{message}");

    // The writer is killed and removed: the disk is free for another writer.
    call(&c, "vm.kill", json!({"vm": "writer"})).await.unwrap();
    call(&c, "vm.remove", json!({"vm": "writer"}))
        .await
        .unwrap();
    call(
        &c,
        "vm.create",
        spec("second", json!([disk(&hard, "xvda", "rw")])),
    )
    .await
    .unwrap();

    // And across a restart of xenithd, the rule holds for the VMs it takes back.
    let (code, dir) = d.stop();
    assert_eq!(code, Some(0));
    let d = Xenithd::start_in(XENITHD, dir, &[]);
    let c = RpcClient::connect(&d.socket).await.unwrap();
    let (code, details, _) = remote(
        call(
            &c,
            "vm.create",
            spec("third", json!([disk(&img, "xvda", "rw")])),
        )
        .await,
    );
    assert_eq!(
        (code.as_str(), details[1].as_str()),
        ("VDI_IN_USE", "second")
    );
}

/// What a user did: unplugged a disk and a NIC and plugged them again under
/// the same names, and plugged a disk into a guest whose frontends never
/// connect. What must hold: a plug answers once the device is Connected
/// (the re-plugged ones too); the one that cannot connect fails with the
/// state it reached, and is gone.
#[tokio::test(flavor = "current_thread")]
async fn a_plug_answers_once_connected_and_ids_can_be_used_again() {
    let d = Xenithd::start(XENITHD, &[]);
    let c = RpcClient::connect(&d.socket).await.unwrap();
    let spec = |name: &str, cmdline: &str| {
        json!({"spec": {"name": name, "type": "pv", "memory_mib": 64, "kernel": "/boot/vmlinuz",
                        "cmdline": cmdline, "disks": [{"path": format!("/images/{name}.img"), "device": "xvda"}],
                        "nics": [{}]}})
    };
    call(&c, "vm.create", spec("re", "")).await.unwrap();
    call(&c, "vm.start", json!({"vm": "re"})).await.unwrap();
    until(
        &c,
        "re",
        "connected",
        Duration::from_secs(10),
        all_connected,
    )
    .await;
    let state_of = |v: &Value, kind: &str, dev: &str| {
        states(v, kind)
            .into_iter()
            .find(|(d, _)| d == dev)
            .map(|(_, s)| s)
    };
    for round in 0..3 {
        let r = call(
            &c,
            "vbd.plug",
            json!({"vm": "re", "disk": {"path": "/images/re-e.img", "device": "xvde"}}),
        )
        .await
        .unwrap();
        assert_eq!(r["device"], "xvde");
        let r = call(&c, "vif.plug", json!({"vm": "re", "nic": {}}))
            .await
            .unwrap();
        assert_eq!(r["device"], "1");
        // Answered: connected already, the first time and every time after.
        let v = call(&c, "vm.get", json!({"vm": "re"})).await.unwrap();
        assert_eq!(
            state_of(&v, "vbds", "xvde").as_deref(),
            Some("Connected"),
            "round {round}: {v:#}"
        );
        assert_eq!(
            state_of(&v, "vifs", "1").as_deref(),
            Some("Connected"),
            "round {round}: {v:#}"
        );
        call(&c, "vbd.unplug", json!({"vm": "re", "device": "xvde"}))
            .await
            .unwrap();
        call(&c, "vif.unplug", json!({"vm": "re", "device": "1"}))
            .await
            .unwrap();
    }

    // Frontends that never connect: the plug fails, saying how far it got,
    // and the device is taken out again.
    call(&c, "vm.create", spec("stuck", "xenith.hang=1"))
        .await
        .unwrap();
    call(&c, "vm.start", json!({"vm": "stuck"})).await.unwrap();
    let t0 = std::time::Instant::now();
    let r = call(
        &c,
        "vbd.plug",
        json!({"vm": "stuck", "disk": {"path": "/images/stuck-b.img", "device": "xvdb"}}),
    )
    .await;
    let e = match r {
        Err(ClientError::Remote(e)) => e,
        other => panic!("expected an error, got {other:?}"),
    };
    assert_eq!(e.code, "OPERATION_TIMEOUT", "{}", e.message);
    assert_eq!(
        e.details,
        vec!["vbd:xvdb".to_owned(), "InitWait".to_owned()]
    );
    assert!(t0.elapsed() >= Duration::from_secs(10));
    let v = call(&c, "vm.get", json!({"vm": "stuck"})).await.unwrap();
    assert_eq!(state_of(&v, "vbds", "xvdb"), None, "{v:#}");
}
