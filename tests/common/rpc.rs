//! Helpers for tests that drive xenithd through its RPC socket.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use xenith::proto::rpc::{ClientError, RpcClient};

pub async fn call(c: &RpcClient, method: &str, params: Value) -> Result<Value, ClientError> {
    c.call::<Value, Value>(method, params).await
}

/// The reply of a call that must succeed (fails naming the call).
pub async fn ok(c: &RpcClient, method: &str, params: Value) -> Value {
    call(c, method, params.clone())
        .await
        .unwrap_or_else(|e| panic!("{method} {params}: {e}"))
}

/// The code and details of an error reply (fails on success).
pub fn error(r: Result<Value, ClientError>) -> (String, Vec<String>) {
    match r {
        Err(ClientError::Remote(e)) => (e.code, e.details),
        other => panic!("expected an error, got {other:?}"),
    }
}

/// Polls `vm.get` until `pred` holds; fails with `what` and the last reply
/// after `limit`.
pub async fn until(
    c: &RpcClient,
    vm: &str,
    what: &str,
    limit: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let t0 = Instant::now();
    loop {
        let v = call(c, "vm.get", json!({"vm": vm})).await.unwrap();
        if pred(&v) {
            return v;
        }
        assert!(t0.elapsed() < limit, "{what}: {v:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The node with this id in a `supervisor.tree` reply (or below it).
pub fn find_node<'a>(tree: &'a Value, id: &str) -> Option<&'a Value> {
    if tree["id"] == id {
        return Some(tree);
    }
    tree["children"]
        .as_array()?
        .iter()
        .find_map(|n| find_node(n, id))
}

/// A VM supervisor's node in a `supervisor.tree` reply (under root/vms/domains).
pub fn vm_node(tree: &Value, uuid: &str) -> Option<Value> {
    let domains = find_node(tree, "domains")?;
    domains["children"]
        .as_array()?
        .iter()
        .find(|n| n["id"] == uuid)
        .cloned()
}

/// The (id, restarts) of a VM supervisor node's children.
pub fn child_restarts(vm: &Value) -> Vec<(String, u64)> {
    vm["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["id"].as_str().unwrap().to_owned(),
                n["restarts"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Fails, saying what to install, when QEMU is missing.
pub fn need_qemu() {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("qemu-system-x86_64").is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "qemu-system-x86_64 is not installed: install Debian's qemu-system-x86 (scripts/test does)"
    );
}
