//! `xs.*` through the RPC socket: dom0's view of xenstore, and its errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::daemon::Xenithd;
use common::rpc::call;
use serde_json::{json, Value};
use xenith::proto::rpc::{ClientError, RpcClient};

const XENITHD: &str = env!("CARGO_BIN_EXE_xenithd");

fn error(r: Result<Value, ClientError>) -> (String, Vec<String>) {
    match r {
        Err(ClientError::Remote(e)) => (e.code, e.details),
        other => panic!("expected an error, got {other:?}"),
    }
}

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
