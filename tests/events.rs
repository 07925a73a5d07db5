//! event.subscribe through the RPC socket: VM, device, supervisor and host
//! events in sequence; class filters; unsubscribe; a subscriber that does
//! not read falls behind alone and is told how many events it lost.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::daemon::Xenithd;
use common::rpc::call;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc::UnboundedReceiver;
use xenith::proto::rpc::{ClientError, Notification, RpcClient};

const XENITHD: &str = env!("CARGO_BIN_EXE_xenithd");

fn spec(name: &str) -> Value {
    json!({"name": name, "type": "pv", "memory_mib": 64, "kernel": "/boot/vmlinuz",
           "disks": [{"path": format!("/images/{name}.img"), "device": "xvda"}], "nics": [{}]})
}

fn json_of(n: &Notification) -> Value {
    let v: Value = xenith::proto::rpc::wire::from_named_value(&n.params).unwrap();
    v
}

/// Collects events until `done` holds for one of them (bounded).
async fn until_event(
    rx: &mut UnboundedReceiver<Notification>,
    seen: &mut Vec<Value>,
    what: &str,
    done: impl Fn(&Value) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = tokio::time::timeout_at(deadline.into(), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no event {what}; saw {seen:#?}"))
            .unwrap();
        assert_eq!(n.method, "event");
        let e = json_of(&n);
        let hit = done(&e);
        seen.push(e);
        if hit {
            return;
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn vm_device_supervisor_and_host_events_arrive_in_sequence() {
    common::quiet_injected_panics();
    let d = Xenithd::start(XENITHD, &["--allow-fault-injection"]);
    let (c, mut rx) = RpcClient::connect_with_notifications(&d.socket)
        .await
        .unwrap();
    let sub = call(&c, "event.subscribe", json!({})).await.unwrap();
    let sub_id = sub["subscription"].as_u64().unwrap();
    let (hosts, mut host_rx) = RpcClient::connect_with_notifications(&d.socket)
        .await
        .unwrap();
    call(&hosts, "event.subscribe", json!({"classes": ["host"]}))
        .await
        .unwrap();

    let uuid = call(&c, "vm.create", json!({"spec": spec("ev1")}))
        .await
        .unwrap()["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut seen = Vec::new();
    until_event(&mut rx, &mut seen, "vm add", |e| {
        e["class"] == "vm" && e["kind"] == "add" && e["id"] == uuid.as_str()
    })
    .await;
    call(&c, "vm.start", json!({"vm": "ev1"})).await.unwrap();
    until_event(&mut rx, &mut seen, "vm Running", |e| {
        e["class"] == "vm" && e["snapshot"]["power_state"] == "Running"
    })
    .await;
    let vbd_id = format!("{uuid}/xvda");
    until_event(&mut rx, &mut seen, "vbd Connected", |e| {
        e["class"] == "vbd" && e["id"] == vbd_id.as_str() && e["snapshot"]["state"] == "Connected"
    })
    .await;
    assert!(
        seen.iter()
            .any(|e| e["class"] == "vbd" && e["kind"] == "add"),
        "{seen:#?}"
    );
    until_event(&mut rx, &mut seen, "vif Connected", |e| {
        e["class"] == "vif" && e["snapshot"]["state"] == "Connected"
    })
    .await;

    // A backend's panic and restart: supervisor events.
    call(
        &c,
        "fault.inject",
        json!({"vm": "ev1", "part": "vbd:xvda", "kind": "panic"}),
    )
    .await
    .unwrap();
    until_event(&mut rx, &mut seen, "vbd restarted", |e| {
        e["class"] == "supervisor"
            && e["id"] == format!("{uuid}/vbd:xvda").as_str()
            && e["snapshot"]["state"] == "restarted"
            && e["snapshot"]["restarts"] == 1
    })
    .await;
    assert!(
        seen.iter().any(|e| e["class"] == "supervisor"
            && e["snapshot"]["state"] == "exited"
            && e["snapshot"]["last_exit"]
                .as_str()
                .unwrap_or("")
                .starts_with("panic")),
        "{seen:#?}"
    );

    // Sequence numbers only go up.
    let seqs: Vec<u64> = seen.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    // The host subscriber saw only host events, with the memory now used.
    let free = call(&c, "host.info", json!({})).await.unwrap()["free_mib"].clone();
    let mut host_seen = Vec::new();
    until_event(&mut host_rx, &mut host_seen, "host free memory", |e| {
        e["snapshot"]["free_mib"] == free
    })
    .await;
    assert!(host_seen
        .iter()
        .all(|e| e["class"] == "host" && e["kind"] == "mod"));

    // Unsubscribed: nothing more; an unknown subscription is NOT_FOUND.
    call(&c, "event.unsubscribe", json!({"subscription": sub_id}))
        .await
        .unwrap();
    match call(&c, "event.unsubscribe", json!({"subscription": sub_id})).await {
        Err(ClientError::Remote(e)) => assert_eq!(e.code, "NOT_FOUND"),
        other => panic!("{other:?}"),
    }
    match call(&c, "event.subscribe", json!({"classes": ["disk"]})).await {
        Err(ClientError::Remote(e)) => assert_eq!(e.code, "INVALID_PARAMS"),
        other => panic!("{other:?}"),
    }
    while rx.try_recv().is_ok() {}
    call(&c, "vm.kill", json!({"vm": "ev1"})).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(rx.try_recv().is_err(), "an event after unsubscribing");
}

#[tokio::test(flavor = "current_thread")]
async fn a_subscriber_that_does_not_read_falls_behind_alone_and_is_told() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("xenith.toml");
    std::fs::write(&config, "[rpc]\nevent_backlog = 16\n").unwrap();
    let d = Xenithd::start_in(XENITHD, dir, &["--config", config.to_str().unwrap()]);

    // A raw connection: subscribe, then read nothing for a while.
    let mut slow = tokio::net::UnixStream::connect(&d.socket).await.unwrap();
    let mut req = Vec::new();
    rmp::encode::write_array_len(&mut req, 4).unwrap();
    rmp::encode::write_uint(&mut req, 0).unwrap();
    rmp::encode::write_uint(&mut req, 1).unwrap();
    rmp::encode::write_str(&mut req, "event.subscribe").unwrap();
    rmp::encode::write_array_len(&mut req, 0).unwrap();
    slow.write_all(&req).await.unwrap();

    // Meanwhile, many events; the daemon answers others promptly.
    let c = RpcClient::connect(&d.socket).await.unwrap();
    for i in 0..150 {
        call(&c, "vm.create", json!({"spec": spec(&format!("flood{i}"))}))
            .await
            .unwrap();
        call(&c, "vm.start", json!({"vm": format!("flood{i}")}))
            .await
            .unwrap();
    }
    let t0 = Instant::now();
    call(&c, "host.info", json!({})).await.unwrap();
    // A liveness bound, not a speed figure (benches/rpc.rs has those).
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "the daemon was held up by a subscriber that does not read"
    );

    // Now read: the reply, some events, and an event.dropped with its count.
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    let deadline = Instant::now() + Duration::from_secs(10);
    let dropped = loop {
        let n = tokio::time::timeout_at(deadline.into(), slow.read(&mut chunk))
            .await
            .expect("no event.dropped notice")
            .unwrap();
        assert!(n > 0, "the connection closed");
        buf.extend_from_slice(&chunk[..n]);
        let mut cursor = buf.as_slice();
        let mut found = None;
        while let Ok(v) = rmpv::decode::read_value(&mut cursor) {
            if v[0].as_u64() == Some(2) && v[1].as_str() == Some("event.dropped") {
                found = Some(v[2][0].clone());
            }
        }
        if let Some(f) = found {
            break f;
        }
    };
    let count = dropped
        .as_map()
        .unwrap()
        .iter()
        .find(|(k, _)| k.as_str() == Some("count"))
        .and_then(|(_, v)| v.as_u64())
        .unwrap();
    assert!(count > 0);
}
