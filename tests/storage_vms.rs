//! VMs on VDIs, on the simulated host: a disk names a VDI by uuid, name or
//! SR/NAME; one writer per VDI (VDI_IN_USE); an attached VDI is not
//! destroyed; a running VM's VDIs are active and its backends connect;
//! unplug, remove and a restart keep the SRs' records right.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::daemon::Xenithd;
use common::rpc::{call, error, ok};
use serde_json::{json, Value};
use xenith::proto::rpc::RpcClient;

const XENITHD: &str = env!("CARGO_BIN_EXE_xenithd");

fn spec(name: &str, disks: Value) -> Value {
    json!({"spec": {"name": name, "type": "pv", "memory_mib": 64,
        "kernel": "/boot/vmlinuz", "disks": disks}})
}

async fn attached(c: &RpcClient, vdi: &str) -> Vec<(String, String, String)> {
    let v = ok(c, "vdi.get", json!({"vdi": vdi})).await;
    let mut a: Vec<_> = v["attached"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let s = |k: &str| a[k].as_str().unwrap().to_owned();
            (s("vm"), s("device"), s("mode"))
        })
        .collect();
    a.sort();
    a
}

async fn vm_count(c: &RpcClient) -> usize {
    ok(c, "vm.list", json!({})).await.as_array().unwrap().len()
}

async fn wait_connected(c: &RpcClient, vm: &str, n: usize) -> Value {
    let t0 = Instant::now();
    loop {
        let v = ok(c, "vm.get", json!({"vm": vm})).await;
        let vbds = v["vbds"].as_array().unwrap();
        if vbds.len() == n && vbds.iter().all(|d| d["state"] == "Connected") {
            return v;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "{v:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn make_sr(c: &RpcClient, dir: &Path) -> (String, String) {
    let sr = ok(
        c,
        "sr.create",
        json!({"name": "sr1", "type": "file", "config": {"path": dir}}),
    )
    .await["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let root = ok(
        c,
        "vdi.create",
        json!({"sr": "sr1", "name": "root", "size_mib": 64}),
    )
    .await["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    (sr, root)
}

#[tokio::test(flavor = "current_thread")]
async fn vms_use_vdis_with_one_writer_each() {
    let d = Xenithd::start(XENITHD, &[]);
    let c = RpcClient::connect(&d.socket).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_sr, root) = make_sr(&c, &dir.path().join("sr")).await;
    let data = ok(
        &c,
        "vdi.create",
        json!({"sr": "sr1", "name": "data", "size_mib": 16, "format": "raw"}),
    )
    .await["uuid"]
        .as_str()
        .unwrap()
        .to_owned();

    // A VDI by name, another as SR/NAME, read-only.
    let web = ok(
        &c,
        "vm.create",
        spec(
            "web",
            json!([{"vdi": "root", "device": "xvda"},
                   {"vdi": "sr1/data", "device": "xvdb", "mode": "ro"}]),
        ),
    )
    .await["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let v = ok(&c, "vm.get", json!({"vm": "web"})).await;
    assert_eq!(v["vbds"][0]["vdi"], root.as_str(), "{v:#}");
    assert_eq!(v["vbds"][1]["vdi"], data.as_str(), "{v:#}");
    assert_eq!(
        attached(&c, &root).await,
        [(web.clone(), "xvda".into(), "rw".into())]
    );

    // A second writer, or a reader beside the writer: refused, nothing made.
    for mode in ["rw", "ro"] {
        let (code, details) = error(
            call(
                &c,
                "vm.create",
                spec("db", json!([{"vdi": root, "device": "xvda", "mode": mode}])),
            )
            .await,
        );
        assert_eq!(code, "VDI_IN_USE", "{mode}: {details:?}");
        assert_eq!(details, [root.clone(), web.clone()]);
    }
    // Nor a VDI that does not exist, nor both a path and a VDI.
    let (code, _) = error(
        call(
            &c,
            "vm.create",
            spec("db", json!([{"vdi": "nope", "device": "xvda"}])),
        )
        .await,
    );
    assert_eq!(code, "NOT_FOUND");
    let (code, details) = error(
        call(
            &c,
            "vm.create",
            spec(
                "db",
                json!([{"vdi": "data", "path": "/x", "device": "xvda"}]),
            ),
        )
        .await,
    );
    assert_eq!(code, "INVALID_PARAMS", "{details:?}");
    // A refused spec attaches nothing: its first, good, disk is let go.
    let (code, _) = error(
        call(
            &c,
            "vm.create",
            spec(
                "db",
                json!([{"vdi": "data", "device": "xvda", "mode": "ro"},
                       {"vdi": "root", "device": "xvdb"}]),
            ),
        )
        .await,
    );
    assert_eq!(code, "VDI_IN_USE");
    assert_eq!(vm_count(&c).await, 1);
    assert_eq!(
        attached(&c, &data).await,
        [(web.clone(), "xvdb".into(), "ro".into())]
    );
    // Readers share.
    let db = ok(
        &c,
        "vm.create",
        spec("db", json!([{"vdi": data, "device": "xvda", "mode": "ro"}])),
    )
    .await["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(attached(&c, &data).await.len(), 2);

    // An attached VDI, or an SR with one, is not destroyed.
    let (code, _) = error(call(&c, "vdi.destroy", json!({"vdi": root})).await);
    assert_eq!(code, "VDI_IN_USE");
    let (code, _) = error(call(&c, "sr.destroy", json!({"sr": "sr1"})).await);
    assert_eq!(code, "VDI_IN_USE");

    // Running: its VDIs are active, its backends connected.
    ok(&c, "vm.start", json!({"vm": "web"})).await;
    wait_connected(&c, "web", 2).await;
    let r = ok(&c, "vdi.get", json!({"vdi": root})).await;
    assert_eq!(r["active"], 1, "{r:#}");
    // A copy of what it writes would be torn: refused.
    let (code, details) = error(call(&c, "vdi.copy", json!({"vdi": root, "sr": "sr1"})).await);
    assert_eq!(code, "VDI_IN_USE", "{details:?}");
    // A disk plugged into the running VM: a VDI it may write; not one
    // another VM reads.
    let scratch = ok(
        &c,
        "vdi.create",
        json!({"sr": "sr1", "name": "scratch", "size_mib": 8}),
    )
    .await["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    ok(
        &c,
        "vbd.plug",
        json!({"vm": "web", "disk": {"vdi": "scratch", "device": "xvdc"}}),
    )
    .await;
    wait_connected(&c, "web", 3).await;
    assert_eq!(
        ok(&c, "vdi.get", json!({"vdi": scratch})).await["active"],
        1
    );
    let (code, _) = error(
        call(
            &c,
            "vbd.plug",
            json!({"vm": "db", "disk": {"vdi": "scratch", "device": "xvdb"}}),
        )
        .await,
    );
    assert_eq!(code, "VDI_IN_USE");
    ok(&c, "vbd.unplug", json!({"vm": "web", "device": "xvdc"})).await;
    let s = ok(&c, "vdi.get", json!({"vdi": scratch})).await;
    assert_eq!(
        (s["active"].clone(), s["attached"].clone()),
        (json!(0), json!([]))
    );
    ok(&c, "vdi.destroy", json!({"vdi": scratch})).await;

    ok(&c, "vm.kill", json!({"vm": "web"})).await;
    assert_eq!(ok(&c, "vdi.get", json!({"vdi": root})).await["active"], 0);

    // Across a restart, the SRs still know which VM names which VDI.
    let (_, state) = d.stop();
    let d = Xenithd::start_in(XENITHD, state, &[]);
    let c = RpcClient::connect(&d.socket).await.unwrap();
    assert_eq!(
        attached(&c, &root).await,
        [(web.clone(), "xvda".into(), "rw".into())]
    );
    assert_eq!(attached(&c, &data).await.len(), 2);

    // Removing a VM lets its VDIs go.
    ok(&c, "vm.remove", json!({"vm": "web"})).await;
    assert_eq!(attached(&c, &root).await, []);
    assert_eq!(
        attached(&c, &data).await,
        [(db.clone(), "xvda".into(), "ro".into())]
    );
    ok(&c, "vdi.destroy", json!({"vdi": root})).await;
    ok(&c, "vbd.unplug", json!({"vm": "db", "device": "xvda"})).await;
    assert_eq!(attached(&c, &data).await, []);
    ok(&c, "sr.destroy", json!({"sr": "sr1"})).await;
}
