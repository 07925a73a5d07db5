//! fault.inject through the RPC socket: refused without the flag; with it,
//! each fault is followed by exactly what the VM's policy says, and the
//! other VM is not disturbed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::daemon::Xenithd;
use common::rpc::call;
use serde_json::{json, Value};
use xenith::proto::rpc::{ClientError, RpcClient};

const XENITHD: &str = env!("CARGO_BIN_EXE_xenithd");

fn code(r: Result<Value, ClientError>) -> String {
    match r {
        Err(ClientError::Remote(e)) => e.code,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn spec(name: &str, on_crash: &str) -> Value {
    json!({"name": name, "type": "pv", "memory_mib": 128, "kernel": "/boot/vmlinuz", "on_crash": on_crash,
           "disks": [{"path": format!("/images/{name}.img"), "device": "xvda"}], "nics": [{}]})
}

async fn until(c: &RpcClient, vm: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    common::rpc::until(c, vm, what, Duration::from_secs(10), pred).await
}

fn connected(v: &Value) -> bool {
    v["power_state"] == "Running"
        && v["vbds"][0]["state"] == "Connected"
        && v["vifs"][0]["state"] == "Connected"
}

/// Restarts of the VM's supervisor's children, by id, and its own as "<vm>".
async fn restarts(c: &RpcClient, uuid: &str) -> Vec<(String, u64)> {
    let tree = call(c, "supervisor.tree", json!({})).await.unwrap();
    let vm = common::rpc::vm_node(&tree, uuid).unwrap();
    let mut out = common::rpc::child_restarts(&vm);
    out.push(("<vm>".into(), vm["restarts"].as_u64().unwrap()));
    out.sort();
    out
}

async fn inject(c: &RpcClient, vm: &str, part: &str, kind: &str) -> Result<Value, ClientError> {
    call(
        c,
        "fault.inject",
        json!({"vm": vm, "part": part, "kind": kind}),
    )
    .await
}

/// Waits (bounded) until the VM's child `id` shows `n` restarts.
async fn wait_restarts(c: &RpcClient, uuid: &str, id: &str, n: u64) {
    let t0 = Instant::now();
    while !restarts(c, uuid).await.contains(&(id.into(), n)) {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{id} never showed {n} restarts"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn faults_are_refused_without_the_flag() {
    let d = Xenithd::start(XENITHD, &[]);
    let c = RpcClient::connect(&d.socket).await.unwrap();
    call(&c, "vm.create", json!({"spec": spec("a", "destroy")}))
        .await
        .unwrap();
    let r = inject(&c, "a", "domain", "panic").await;
    assert_eq!(code(r), "NOT_ALLOWED");
}

#[tokio::test(flavor = "current_thread")]
async fn each_fault_is_handled_by_policy_and_the_other_vm_is_untouched() {
    common::quiet_injected_panics();
    let d = Xenithd::start(XENITHD, &["--allow-fault-injection"]);
    let c = RpcClient::connect(&d.socket).await.unwrap();
    let victim = call(&c, "vm.create", json!({"spec": spec("victim", "destroy")}))
        .await
        .unwrap()["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let bystander = call(
        &c,
        "vm.create",
        json!({"spec": spec("bystander", "preserve")}),
    )
    .await
    .unwrap()["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    for vm in ["victim", "bystander"] {
        call(&c, "vm.start", json!({"vm": vm})).await.unwrap();
        until(&c, vm, "connected", connected).await;
    }
    let calm = restarts(&c, &bystander).await;
    assert!(calm.iter().all(|(_, n)| *n == 0), "{calm:?}");

    // A backend panics: restarted alone, the device stays Connected.
    inject(&c, "victim", "vbd:xvda", "panic").await.unwrap();
    wait_restarts(&c, &victim, "vbd:xvda", 1).await;
    assert!(connected(
        &call(&c, "vm.get", json!({"vm": "victim"})).await.unwrap()
    ));
    assert!(restarts(&c, &victim).await.contains(&("domain".into(), 0)));

    // The console actor panics: restarted alone; the log goes on, nothing lost.
    let before = call(&c, "vm.console", json!({"vm": "victim"}))
        .await
        .unwrap()["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(before.contains("Linux version"), "{before}");
    inject(&c, "victim", "console", "panic").await.unwrap();
    wait_restarts(&c, &victim, "console", 1).await;
    let after = call(&c, "vm.console", json!({"vm": "victim"}))
        .await
        .unwrap()["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(after, before, "the log is kept across the restart");

    // The guest-agent actor panics: restarted alone, it reads the metrics again.
    inject(&c, "victim", "agent", "panic").await.unwrap();
    wait_restarts(&c, &victim, "agent", 1).await;
    let v = until(&c, "victim", "agent metrics back", |v| {
        v["guest"]["agent"] == true && v["guest"]["ips"]["0/ipv4/0"].is_string()
    })
    .await;
    assert!(connected(&v), "{v:#}");

    // The domain actor panics: restarted, it re-syncs with the running domain.
    let domid = call(&c, "vm.get", json!({"vm": "victim"})).await.unwrap()["domid"].clone();
    inject(&c, "victim", "domain", "panic").await.unwrap();
    wait_restarts(&c, &victim, "domain", 1).await;
    let v = call(&c, "vm.get", json!({"vm": "victim"})).await.unwrap();
    assert_eq!(
        (v["power_state"].clone(), v["domid"].clone()),
        (json!("Running"), domid)
    );
    // ...and still drives it: a clean shutdown works.
    assert_eq!(
        call(&c, "vm.shutdown", json!({"vm": "victim"}))
            .await
            .unwrap()["power_state"],
        "Halted"
    );

    // A crash: on_crash = destroy → Halted; on_crash = preserve → Crashed.
    call(&c, "vm.start", json!({"vm": "victim"})).await.unwrap();
    inject(&c, "victim", "domain", "crash").await.unwrap();
    until(&c, "victim", "destroyed after its crash", |v| {
        v["power_state"] == "Halted"
    })
    .await;
    inject(&c, "bystander", "domain", "crash").await.unwrap();
    until(&c, "bystander", "preserved after its crash", |v| {
        v["power_state"] == "Crashed"
    })
    .await;
    assert_eq!(
        call(&c, "vm.kill", json!({"vm": "bystander"}))
            .await
            .unwrap()["power_state"],
        "Halted"
    );

    // The domain destroyed behind the toolstack's back: noticed and cleaned up.
    call(&c, "vm.start", json!({"vm": "victim"})).await.unwrap();
    inject(&c, "victim", "domain", "kill").await.unwrap();
    until(&c, "victim", "cleaned up after the kill", |v| {
        v["power_state"] == "Halted"
    })
    .await;

    // The guest hangs: a clean shutdown times out naming the step; force works.
    call(&c, "vm.start", json!({"vm": "victim"})).await.unwrap();
    until(&c, "victim", "connected", connected).await;
    inject(&c, "victim", "domain", "hang").await.unwrap();
    let r = call(&c, "vm.shutdown", json!({"vm": "victim", "timeout_s": 1})).await;
    assert_eq!(code(r), "OPERATION_TIMEOUT");
    assert_eq!(
        call(&c, "vm.shutdown", json!({"vm": "victim", "force": true}))
            .await
            .unwrap()["power_state"],
        "Halted"
    );
    // The same with the fallback: hard once the timeout has passed.
    call(&c, "vm.start", json!({"vm": "victim"})).await.unwrap();
    until(&c, "victim", "connected", connected).await;
    inject(&c, "victim", "domain", "hang").await.unwrap();
    let t0 = std::time::Instant::now();
    let r = call(
        &c,
        "vm.shutdown",
        json!({"vm": "victim", "timeout_s": 1, "fallback": true}),
    )
    .await
    .unwrap();
    assert_eq!(r["power_state"], "Halted");
    assert!(
        t0.elapsed() >= std::time::Duration::from_secs(1),
        "waited for the guest first"
    );

    // A frontend hangs before it connects: that device stays InitWait, the
    // other connects.
    call(&c, "vm.start", json!({"vm": "victim", "paused": true}))
        .await
        .unwrap();
    inject(&c, "victim", "vif:0", "hang").await.unwrap();
    assert_eq!(
        code(inject(&c, "victim", "vif:7", "hang").await),
        "NOT_FOUND"
    );
    call(&c, "vm.unpause", json!({"vm": "victim"}))
        .await
        .unwrap();
    let v = until(&c, "victim", "the vbd connected", |v| {
        v["vbds"][0]["state"] == "Connected"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let v2 = call(&c, "vm.get", json!({"vm": "victim"})).await.unwrap();
    assert_eq!(v2["vifs"][0]["state"], "InitWait", "{v:#}");
    call(&c, "vm.kill", json!({"vm": "victim"})).await.unwrap();

    // Parts a PV VM does not have, faults that need a running domain, and
    // kinds a part does not take.
    assert_eq!(
        code(inject(&c, "victim", "emulator", "kill").await),
        "NOT_FOUND"
    );
    assert_eq!(
        code(inject(&c, "victim", "domain", "hang").await),
        "VM_BAD_POWER_STATE"
    );
    assert_eq!(
        code(inject(&c, "victim", "console", "kill").await),
        "INVALID_PARAMS"
    );
    assert_eq!(
        code(inject(&c, "victim", "domain", "melt").await),
        "INVALID_PARAMS"
    );
    // None of it restarted any of the bystander's actors (its own crash is
    // a guest event, not an actor failure; its kill removed its devices).
    let after = restarts(&c, &bystander).await;
    assert!(after.iter().all(|(_, n)| *n == 0), "{after:?}");
}

/// What users did: one asked a guest that does not answer to shut down
/// (waiting up to a minute); meanwhile another tried to pause it, reboot it,
/// start it, and then killed it. What must hold: the conflicting calls are
/// refused at once (OTHER_OPERATION_IN_PROGRESS, or VM_BAD_POWER_STATE),
/// never queued; the kill pre-empts the wait and returns at once; the
/// waiting shutdown returns as soon as the VM halts, saying why. The same
/// when the domain is destroyed behind xenith's back.
#[tokio::test(flavor = "current_thread")]
async fn a_waiting_shutdown_returns_when_the_vm_halts_and_conflicts_are_refused() {
    let d = Xenithd::start(XENITHD, &["--allow-fault-injection"]);
    let a = RpcClient::connect(&d.socket).await.unwrap();
    let b = RpcClient::connect(&d.socket).await.unwrap();
    let uuid = call(&a, "vm.create", json!({"spec": spec("mute", "destroy")}))
        .await
        .unwrap()["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    for how in ["kill", "destroyed"] {
        call(&a, "vm.start", json!({"vm": "mute"})).await.unwrap();
        until(&a, "mute", "connected", connected).await;
        inject(&a, "mute", "domain", "hang").await.unwrap();
        let t0 = Instant::now();
        let waiting = tokio::spawn({
            let a = a.clone();
            async move { call(&a, "vm.shutdown", json!({"vm": "mute", "timeout_s": 60})).await }
        });
        until(&b, "mute", "the shutdown waiting", |v| {
            v["operation"] == "shutdown"
        })
        .await;
        for (method, params) in [
            ("vm.pause", json!({"vm": "mute"})),
            ("vm.reboot", json!({"vm": "mute", "force": true})),
            ("vm.set_memory_target", json!({"vm": "mute", "mib": 64})),
        ] {
            match call(&b, method, params).await {
                Err(ClientError::Remote(e)) => {
                    assert_eq!(
                        e.code, "OTHER_OPERATION_IN_PROGRESS",
                        "{method}: {}",
                        e.message
                    );
                    assert_eq!(e.details, vec![uuid.clone(), "shutdown".to_owned()]);
                }
                other => panic!("{method}: expected a refusal, got {other:?}"),
            }
        }
        assert_eq!(
            code(call(&b, "vm.start", json!({"vm": "mute"})).await),
            "VM_BAD_POWER_STATE"
        );
        let expect = match how {
            "kill" => {
                let killed = call(&b, "vm.kill", json!({"vm": "mute"})).await.unwrap();
                assert_eq!(killed["power_state"], "Halted");
                "killed (vm.kill) while the guest was asked to poweroff"
            }
            _ => {
                inject(&b, "mute", "domain", "kill").await.unwrap();
                "the domain was destroyed"
            }
        };
        let done = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the waiting shutdown returned")
            .unwrap()
            .unwrap();
        assert!(t0.elapsed() < Duration::from_secs(10));
        assert_eq!(done["power_state"], "Halted");
        assert_eq!(done["reason"], expect, "{done}");
        let v = call(&a, "vm.get", json!({"vm": "mute"})).await.unwrap();
        assert_eq!(
            (v["power_state"].clone(), v["operation"].clone()),
            (json!("Halted"), Value::Null)
        );
    }
    // A timeout beyond an hour is refused.
    assert_eq!(
        code(
            call(
                &a,
                "vm.shutdown",
                json!({"vm": "mute", "timeout_s": 1_000_000_000u64})
            )
            .await
        ),
        "INVALID_PARAMS"
    );
}

/// What happened (issue: an escalation that orphans every VM): the
/// `domains` supervisor gave up (here after one VM's supervisor gave up
/// twice, with `[supervisor] domains_max_restarts = 1`). What must hold:
/// `domains` comes back with every VM taken back from the records and the
/// hypervisor: running VMs still run (same domain) and answer kill and
/// shutdown, halted ones start, and a domain destroyed meanwhile shows.
#[tokio::test(flavor = "current_thread")]
async fn a_restarted_domains_supervisor_takes_every_vm_back() {
    common::quiet_injected_panics();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("xenith.toml");
    std::fs::write(&config, "[supervisor]\ndomains_max_restarts = 1\n").unwrap();
    let d = Xenithd::start_in(
        XENITHD,
        dir,
        &[
            "--allow-fault-injection",
            "--config",
            config.to_str().unwrap(),
        ],
    );
    let c = RpcClient::connect(&d.socket).await.unwrap();
    for name in ["flaky", "steady", "idle"] {
        call(&c, "vm.create", json!({"spec": spec(name, "destroy")}))
            .await
            .unwrap();
    }
    for name in ["flaky", "steady"] {
        call(&c, "vm.start", json!({"vm": name})).await.unwrap();
        until(&c, name, "connected", connected).await;
    }
    let steady = call(&c, "vm.get", json!({"vm": "steady"})).await.unwrap();
    // Panics until flaky's supervisor has given up twice: `domains` gives up.
    let t0 = Instant::now();
    let vms_restarts = |tree: &Value| {
        common::rpc::find_node(tree, "vms").unwrap()["children"][0]["restarts"]
            .as_u64()
            .unwrap()
    };
    loop {
        let tree = call(&c, "supervisor.tree", json!({})).await.unwrap();
        if vms_restarts(&tree) >= 1 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "domains never gave up"
        );
        let _ = inject(&c, "flaky", "domain", "panic").await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Every VM is known and manageable again.
    let t0 = Instant::now();
    let listed = loop {
        if let Ok(list) = call(&c, "vm.list", json!({})).await {
            if list.as_array().map(Vec::len) == Some(3) {
                break list;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the VMs did not come back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["flaky", "idle", "steady"]);
    let v = until(&c, "steady", "re-synced", connected).await;
    assert_eq!(
        v["domid"], steady["domid"],
        "the same domain, not a new one"
    );
    assert_eq!(
        call(&c, "vm.shutdown", json!({"vm": "steady"}))
            .await
            .unwrap()["power_state"],
        "Halted"
    );
    assert_eq!(
        call(&c, "vm.start", json!({"vm": "idle"})).await.unwrap()["power_state"],
        "Running"
    );
    // A domain destroyed behind xenith's back is seen as such.
    until(&c, "flaky", "re-synced", connected).await;
    inject(&c, "flaky", "domain", "kill").await.unwrap();
    until(&c, "flaky", "cleaned up", |v| v["power_state"] == "Halted").await;
    assert_eq!(
        call(&c, "vm.kill", json!({"vm": "idle"})).await.unwrap()["power_state"],
        "Halted"
    );
}
