//! `xs.*` through the RPC socket: dom0's view of xenstore, and its errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::daemon::Xenithd;
use common::rpc::{call, error};
use serde_json::{json, Value};
use xenith::proto::rpc::RpcClient;

const XENITHD: &str = env!("CARGO_BIN_EXE_xenithd");

#[tokio::test(flavor = "current_thread")]
async fn xs_methods_read_write_list_remove_and_set_permissions() {
    let d = Xenithd::start(XENITHD, &[]);
    let c = RpcClient::connect(&d.socket).await.unwrap();
    call(&c, "xs.mkdir", json!({"path": "/test/a"}))
        .await
        .unwrap();
    call(
        &c,
        "xs.write",
        json!({"path": "/test/a/b", "value": "hello"}),
    )
    .await
    .unwrap();
    assert_eq!(
        call(&c, "xs.read", json!({"path": "/test/a/b"}))
            .await
            .unwrap(),
        "hello"
    );
    assert_eq!(
        call(&c, "xs.ls", json!({"path": "/test/a"})).await.unwrap(),
        json!(["b"])
    );
    assert_eq!(
        call(&c, "xs.getperms", json!({"path": "/test/a/b"}))
            .await
            .unwrap(),
        json!(["n0"])
    );
    call(
        &c,
        "xs.setperms",
        json!({"path": "/test/a/b", "perms": ["n0", "r5"]}),
    )
    .await
    .unwrap();
    assert_eq!(
        call(&c, "xs.getperms", json!({"path": "/test/a/b"}))
            .await
            .unwrap(),
        json!(["n0", "r5"])
    );
    // The daemon's xenstore really changed: the xenstore socket sees it.
    let xs = xenith::drivers::xenstore::XsClient::connect_socket(&d.xenstored_socket())
        .await
        .unwrap();
    assert_eq!(
        xs.read_opt("/test/a/b").await.unwrap().as_deref(),
        Some("hello")
    );

    call(&c, "xs.rm", json!({"path": "/test"})).await.unwrap();
    assert_eq!(
        error(call(&c, "xs.read", json!({"path": "/test/a/b"})).await),
        ("XENSTORE_ERROR".into(), vec!["ENOENT".into()])
    );
    assert_eq!(
        error(call(&c, "xs.ls", json!({"path": "relative/path"})).await),
        ("INVALID_PARAMS".into(), vec!["path".into()])
    );
    assert_eq!(
        error(
            call(
                &c,
                "xs.setperms",
                json!({"path": "/local", "perms": ["x1"]})
            )
            .await
        ),
        ("INVALID_PARAMS".into(), vec!["perms".into()])
    );
    assert_eq!(
        error(call(&c, "xs.setperms", json!({"path": "/local", "perms": []})).await).0,
        "INVALID_PARAMS"
    );
    assert_eq!(
        error(call(&c, "xs.read", json!({"path": 5})).await).0,
        "INVALID_PARAMS"
    );
    assert_eq!(
        error(call(&c, "xs.write", json!({"path": "/x"})).await).0,
        "INVALID_PARAMS"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn xs_watch_fires_as_notifications_until_unsubscribed() {
    let d = Xenithd::start(XENITHD, &[]);
    let (c, mut rx) = RpcClient::connect_with_notifications(&d.socket)
        .await
        .unwrap();
    let sub = call(&c, "xs.watch", json!({"path": "/watched"}))
        .await
        .unwrap()["subscription"]
        .as_u64()
        .unwrap();
    let next = |rx: &mut tokio::sync::mpsc::UnboundedReceiver<xenith::proto::rpc::Notification>| {
        let n = rx.try_recv().ok()?;
        let v: Value = xenith::proto::rpc::wire::from_named_value(&n.params).unwrap();
        Some((n.method, v))
    };
    call(&c, "xs.write", json!({"path": "/watched/a", "value": "1"}))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut fired = Vec::new();
    while let Some((method, v)) = next(&mut rx) {
        assert_eq!(
            (method.as_str(), v["subscription"].as_u64()),
            ("xs.watch", Some(sub))
        );
        fired.push(v["path"].as_str().unwrap().to_owned());
    }
    // Once when set (as xenstored does), then for the write.
    assert_eq!(fired, vec!["/watched".to_owned(), "/watched/a".to_owned()]);
    call(&c, "event.unsubscribe", json!({"subscription": sub}))
        .await
        .unwrap();
    call(&c, "xs.write", json!({"path": "/watched/b", "value": "2"}))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(next(&mut rx).is_none());
    assert_eq!(
        error(call(&c, "xs.watch", json!({"path": "nope"})).await).0,
        "INVALID_PARAMS"
    );
}
