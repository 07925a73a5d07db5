//! The host side of devices, on the simulated host, through the RPC socket:
//! disk images get loop devices (released again), NICs get netback's
//! interface on their bridge (created only when the configuration says
//! so), and nothing is left behind when the VM stops or a start fails.
//! The Xen bed (tests/xen) checks the same on a real dom0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::daemon::Xenithd;
use common::rpc::{call, error, until};
use serde_json::{json, Value};
use xenith::drivers::xenstore::XsClient;
use xenith::proto::rpc::RpcClient;

const XENITHD: &str = env!("CARGO_BIN_EXE_xenithd");

fn spec(name: &str, bridge: &str) -> Value {
    json!({
        "name": name, "type": "pv", "memory_mib": 128, "kernel": "/boot/vmlinuz",
        "disks": [
            {"path": "/images/root.img", "device": "xvda"},
            {"path": "/images/data.img", "device": "xvdb", "mode": "ro"},
            {"path": "/dev/vg0/scratch", "device": "xvdc"},
        ],
        "nics": [{"bridge": bridge}],
    })
}

fn connected(v: &Value) -> bool {
    ["vbds", "vifs"].iter().all(|k| {
        v[k].as_array()
            .unwrap()
            .iter()
            .all(|d| d["state"] == "Connected")
    })
}

/// Starts a VM and waits for its devices; returns its domid.
async fn start_connected(c: &RpcClient, vm: &str) -> u64 {
    call(c, "vm.start", json!({"vm": vm})).await.unwrap();
    let v = until(c, vm, "devices connect", Duration::from_secs(10), connected).await;
    v["domid"].as_u64().unwrap()
}

/// The loop devices' backing files and the interfaces, as host.devices says.
async fn held(c: &RpcClient) -> (Vec<String>, Vec<Value>) {
    let v = call(c, "host.devices", json!({})).await.unwrap();
    let loops = v["loop_devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["backing"].as_str().unwrap().to_owned())
        .collect();
    (loops, v["interfaces"].as_array().unwrap().clone())
}

async fn backend_nodes(xs: &XsClient, domid: u64) -> Vec<String> {
    let mut left = Vec::new();
    for kind in ["vbd", "vif"] {
        let path = format!("/local/domain/0/backend/{kind}/{domid}");
        if let Ok(ids) = xs.directory(&path).await {
            left.extend(ids.into_iter().map(|id| format!("{path}/{id}")));
        }
    }
    left
}

#[tokio::test(flavor = "current_thread")]
async fn disks_get_loop_devices_nics_their_bridge_and_nothing_is_left() {
    let d = Xenithd::start(XENITHD, &[]);
    let c = RpcClient::connect(&d.socket).await.unwrap();
    let xs = XsClient::connect_socket(&d.xenstored_socket())
        .await
        .unwrap();
    call(&c, "vm.create", json!({"spec": spec("dev", "xenbr0")}))
        .await
        .unwrap();
    let domid = start_connected(&c, "dev").await;

    // The two images are on loop devices, the block device is used as it is.
    let (loops, ifaces) = held(&c).await;
    assert_eq!(loops, ["/images/root.img", "/images/data.img"]);
    let back = |dev: &str, key: &str| format!("/local/domain/0/backend/vbd/{domid}/{dev}/{key}");
    let ro_node = xs
        .read_opt(&back("51728", "physical-device-path"))
        .await
        .unwrap()
        .unwrap();
    assert!(ro_node.starts_with("/dev/loop"), "{ro_node}");
    assert_eq!(
        xs.read_opt(&back("51728", "mode"))
            .await
            .unwrap()
            .as_deref(),
        Some("r")
    );
    assert!(xs
        .read_opt(&back("51712", "physical-device"))
        .await
        .unwrap()
        .unwrap()
        .starts_with("7:"));
    assert_eq!(
        xs.read_opt(&back("51744", "physical-device-path"))
            .await
            .unwrap()
            .as_deref(),
        Some("/dev/vg0/scratch")
    );
    // netback's interface is up on the NIC's bridge.
    assert_eq!(
        ifaces,
        vec![json!({"name": format!("vif{domid}.0"), "up": true, "bridge": "xenbr0"})]
    );
    let vif = format!("/local/domain/0/backend/vif/{domid}/0/hotplug-status");
    assert_eq!(
        xs.read_opt(&vif).await.unwrap().as_deref(),
        Some("connected")
    );

    // A disk hot-plugged and unplugged: its loop device comes and goes.
    call(
        &c,
        "vbd.plug",
        json!({"vm": "dev", "disk": {"path": "/images/extra.img", "device": "xvdd"}}),
    )
    .await
    .unwrap();
    until(
        &c,
        "dev",
        "xvdd connects",
        Duration::from_secs(10),
        connected,
    )
    .await;
    assert_eq!(held(&c).await.0.len(), 3);
    call(&c, "vbd.unplug", json!({"vm": "dev", "device": "xvdd"}))
        .await
        .unwrap();
    assert_eq!(held(&c).await.0, ["/images/root.img", "/images/data.img"]);

    // A clean shutdown: no loop device, interface or backend node left.
    call(&c, "vm.shutdown", json!({"vm": "dev", "timeout_s": 10}))
        .await
        .unwrap();
    assert_eq!(held(&c).await, (Vec::new(), Vec::new()));
    assert_eq!(backend_nodes(&xs, domid).await, Vec::<String>::new());

    // Killed while running: the same.
    let domid = start_connected(&c, "dev").await;
    assert_eq!(held(&c).await.0.len(), 2);
    call(&c, "vm.kill", json!({"vm": "dev"})).await.unwrap();
    assert_eq!(held(&c).await, (Vec::new(), Vec::new()));
    assert_eq!(backend_nodes(&xs, domid).await, Vec::<String>::new());
}

#[tokio::test(flavor = "current_thread")]
async fn a_missing_bridge_fails_the_start_cleanly_unless_xenith_may_create_it() {
    let d = Xenithd::start(XENITHD, &[]);
    let c = RpcClient::connect(&d.socket).await.unwrap();
    call(&c, "vm.create", json!({"spec": spec("nobr", "br-missing")}))
        .await
        .unwrap();
    let r = call(&c, "vm.start", json!({"vm": "nobr"})).await;
    let msg = format!("{r:?}");
    let (code, details) = error(r);
    assert_eq!(code, "INVALID_PARAMS");
    assert_eq!(details, ["spec"]);
    assert!(msg.contains("bridge br-missing does not exist"), "{msg}");
    let v = call(&c, "vm.get", json!({"vm": "nobr"})).await.unwrap();
    assert_eq!(v["power_state"], "Halted");
    assert_eq!(held(&c).await, (Vec::new(), Vec::new()));
    drop(c);
    drop(d);

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("xenith.toml");
    std::fs::write(&config, "[network]\ncreate_bridges = true\n").unwrap();
    let d = Xenithd::start(XENITHD, &["--config", config.to_str().unwrap()]);
    let c = RpcClient::connect(&d.socket).await.unwrap();
    call(&c, "vm.create", json!({"spec": spec("br", "br-new")}))
        .await
        .unwrap();
    start_connected(&c, "br").await;
    let (_, ifaces) = held(&c).await;
    assert_eq!(ifaces[0]["bridge"], "br-new");
}
