//! HVM VMs and their device model: a real QEMU (qemu-system-x86_64, from
//! Debian's qemu-system-x86; scripts/test installs it) started with -S on
//! the simulated host, spoken to over QMP, through the RPC socket.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::daemon::Xenithd;
use common::rpc::{call, need_qemu};
use serde_json::{json, Value};
use xenith::drivers::xenstore::XsClient;
use xenith::proto::rpc::{ClientError, RpcClient};

const XENITHD: &str = env!("CARGO_BIN_EXE_xenithd");

fn hvm(name: &str, on_crash: &str) -> Value {
    json!({"name": name, "type": "hvm", "memory_mib": 256, "on_crash": on_crash,
           "disks": [{"path": format!("/images/{name}.img"), "device": "xvda"}], "nics": [{}]})
}

async fn until(c: &RpcClient, vm: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    common::rpc::until(c, vm, what, Duration::from_secs(20), pred).await
}

fn alive(pid: i64) -> bool {
    // A zombie (exited, not yet reaped by init) does not count.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit_once(')').unwrap().1.trim_start().starts_with('Z'))
        .unwrap_or(false)
}

async fn wait_gone(pid: i64) {
    let t0 = Instant::now();
    while alive(pid) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "QEMU {pid} still runs"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn inject(c: &RpcClient, vm: &str, part: &str, kind: &str) {
    call(
        c,
        "fault.inject",
        json!({"vm": vm, "part": part, "kind": kind}),
    )
    .await
    .unwrap();
}

fn emulator_pid(v: &Value) -> i64 {
    v["emulator"]["pid"]
        .as_i64()
        .unwrap_or_else(|| panic!("no emulator: {v:#}"))
}

/// The VM's supervisor's child `id`: its restarts.
async fn restarts_of(c: &RpcClient, uuid: &str, id: &str) -> Option<u64> {
    let tree = call(c, "supervisor.tree", json!({})).await.unwrap();
    let vm = common::rpc::vm_node(&tree, uuid)?;
    common::rpc::child_restarts(&vm)
        .into_iter()
        .find(|(c, _)| c == id)
        .map(|(_, n)| n)
}

#[tokio::test(flavor = "current_thread")]
async fn an_hvm_vm_runs_its_device_model_and_survives_its_faults_by_policy() {
    need_qemu();
    common::quiet_injected_panics();
    let d = Xenithd::start(XENITHD, &["--allow-fault-injection"]);
    let c = RpcClient::connect(&d.socket).await.unwrap();
    let xs = XsClient::connect_socket(&d.xenstored_socket())
        .await
        .unwrap();
    let uuid = call(&c, "vm.create", json!({"spec": hvm("hvm1", "restart")}))
        .await
        .unwrap()["uuid"]
        .as_str()
        .unwrap()
        .to_owned();

    // Started: QEMU runs stopped before the first instruction, answers QMP,
    // and is recorded where libxl and QEMU record it.
    call(&c, "vm.start", json!({"vm": "hvm1"})).await.unwrap();
    let v = call(&c, "vm.get", json!({"vm": "hvm1"})).await.unwrap();
    assert_eq!(v["power_state"], "Running");
    assert_eq!(v["emulator"]["status"], "prelaunch", "{v:#}");
    let pid = emulator_pid(&v);
    assert!(alive(pid));
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(cmdline.contains(&uuid), "{cmdline}");
    let domid = v["domid"].as_u64().unwrap();
    assert_eq!(
        xs.read_opt(&format!("/local/domain/0/device-model/{domid}/state"))
            .await
            .unwrap(),
        Some("running".to_owned())
    );
    assert_eq!(
        xs.read_opt(&format!("/local/domain/{domid}/image/device-model-pid"))
            .await
            .unwrap(),
        Some(pid.to_string())
    );

    // The emulator actor panics: restarted alone, it reconnects to the same
    // QEMU; the domain does not notice.
    inject(&c, "hvm1", "emulator", "panic").await;
    let t0 = Instant::now();
    while restarts_of(&c, &uuid, "emulator").await != Some(1) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the emulator actor was not restarted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let v = until(&c, "hvm1", "the emulator answers again", |v| {
        v["emulator"]["status"] == "prelaunch"
    })
    .await;
    assert_eq!(
        (emulator_pid(&v), v["domid"].as_u64().unwrap()),
        (pid, domid)
    );
    assert_eq!(v["power_state"], "Running");
    assert_eq!(restarts_of(&c, &uuid, "domain").await, Some(0));

    // QEMU is killed: the domain crashes, and on_crash = restart starts it
    // again with a new domain and a new QEMU.
    inject(&c, "hvm1", "emulator", "kill").await;
    wait_gone(pid).await;
    let v = until(&c, "hvm1", "restarted after the crash", |v| {
        v["power_state"] == "Running"
            && v["domid"].as_u64() != Some(domid)
            && v["emulator"]["pid"].is_i64()
    })
    .await;
    let pid2 = emulator_pid(&v);
    assert_ne!(pid2, pid);
    assert!(xs
        .read_opt(&format!("/local/domain/0/device-model/{domid}"))
        .await
        .unwrap()
        .is_none());

    // A clean shutdown quits QEMU and leaves nothing behind.
    call(&c, "vm.shutdown", json!({"vm": "hvm1"}))
        .await
        .unwrap();
    wait_gone(pid2).await;
    let run_dir = d.socket.parent().unwrap();
    let left: Vec<_> = std::fs::read_dir(run_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("qemu-dm-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // on_crash = preserve: the domain stays, Crashed; kill cleans up.
    call(&c, "vm.create", json!({"spec": hvm("hvm2", "preserve")}))
        .await
        .unwrap();
    call(&c, "vm.start", json!({"vm": "hvm2"})).await.unwrap();
    let pid3 = emulator_pid(&call(&c, "vm.get", json!({"vm": "hvm2"})).await.unwrap());
    inject(&c, "hvm2", "emulator", "kill").await;
    until(&c, "hvm2", "preserved after the crash", |v| {
        v["power_state"] == "Crashed"
    })
    .await;
    call(&c, "vm.kill", json!({"vm": "hvm2"})).await.unwrap();
    let v = call(&c, "vm.get", json!({"vm": "hvm2"})).await.unwrap();
    assert_eq!(
        (v["power_state"].clone(), v["emulator"].clone()),
        (json!("Halted"), Value::Null)
    );
    wait_gone(pid3).await;
}

#[tokio::test(flavor = "current_thread")]
async fn an_hvm_start_without_qemu_fails_naming_it_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("xenith.toml");
    std::fs::write(
        &config,
        "[emulator]\nqemu = \"/nonexistent/qemu-system-x86_64\"\n",
    )
    .unwrap();
    let d = Xenithd::start_in(XENITHD, dir, &["--config", config.to_str().unwrap()]);
    let c = RpcClient::connect(&d.socket).await.unwrap();
    let free = call(&c, "host.info", json!({})).await.unwrap()["free_mib"].clone();
    call(&c, "vm.create", json!({"spec": hvm("noqemu", "destroy")}))
        .await
        .unwrap();
    match call(&c, "vm.start", json!({"vm": "noqemu"})).await {
        Err(ClientError::Remote(e)) => {
            assert!(e.message.contains("install qemu-system-x86"), "{e:?}");
            assert!(e.message.contains("start emulator"), "{e:?}");
        }
        other => panic!("expected an error, got {other:?}"),
    }
    let v = call(&c, "vm.get", json!({"vm": "noqemu"})).await.unwrap();
    assert_eq!(v["power_state"], "Halted");
    assert_eq!(
        call(&c, "host.info", json!({})).await.unwrap()["free_mib"],
        free
    );
    assert!(!Path::new(&d.xenstored_socket()).as_os_str().is_empty());
    let xs = XsClient::connect_socket(&d.xenstored_socket())
        .await
        .unwrap();
    let domains = xs.directory("/local/domain").await.unwrap();
    assert_eq!(domains, vec!["0".to_owned()], "nothing left in xenstore");
}

/// What a user did: started a second xenithd by mistake, while the first
/// runs an HVM VM, once on the same socket and once on the same state
/// directory. What must hold: each is refused, exit 2, one line naming the
/// running daemon; the VM still runs, with the same QEMU, and answers.
#[tokio::test(flavor = "current_thread")]
async fn a_second_daemon_touches_neither_the_vms_nor_their_device_models() {
    need_qemu();
    let d = Xenithd::start(XENITHD, &[]);
    let c = RpcClient::connect(&d.socket).await.unwrap();
    call(&c, "vm.create", json!({"spec": hvm("keep", "destroy")}))
        .await
        .unwrap();
    call(&c, "vm.start", json!({"vm": "keep"})).await.unwrap();
    let before = call(&c, "vm.get", json!({"vm": "keep"})).await.unwrap();
    let pid = emulator_pid(&before);

    let other = tempfile::tempdir().unwrap();
    let second = |socket: &Path, state: &Path| {
        std::process::Command::new(XENITHD)
            .arg("--socket")
            .arg(socket)
            .arg("--state-dir")
            .arg(state)
            .args(["--hypervisor", "sim", "--xenstore", "embedded"])
            .output()
            .unwrap()
    };
    for (socket, state, held) in [
        (d.socket.clone(), other.path().join("s"), d.socket.clone()),
        (
            other.path().join("run/x.sock"),
            d.state_dir.clone(),
            d.state_dir.join("xenithd.lock"),
        ),
    ] {
        let out = second(&socket, &state);
        assert_eq!(out.status.code(), Some(2));
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            format!(
                "xenithd is already running (pid {}, {})\n",
                d.child.id(),
                held.display()
            )
        );
    }
    // Nothing was touched: the same domain, the same QEMU, still answering.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(alive(pid), "QEMU {pid} was killed");
    let after = call(&c, "vm.get", json!({"vm": "keep"})).await.unwrap();
    assert_eq!(after["power_state"], "Running");
    assert_eq!(after["domid"], before["domid"]);
    assert_eq!(emulator_pid(&after), pid);
    assert_eq!(after["emulator"]["status"], "prelaunch");

    // SIGTERM on the simulated host: its domains end with the daemon, and
    // so do their device models.
    let (code, _dir) = d.stop();
    assert_eq!(code, Some(0));
    wait_gone(pid).await;
}
