//! Soak (issue: hardening under faults and hostile input): one xenithd on
//! the simulated host, 20 VMs with a disk and a NIC each, and for a bounded
//! time all at once:
//!
//! - operations on the VMs from several clients (start, clean and hard
//!   shutdown, kill, pause, unpause, plug and unplug), whose refusals are
//!   expected (a VM busy or in another state) and counted;
//! - fault injection (panics in every kind of actor, crashes, kills);
//! - slow readers (pipelined RPC and xenstore requests never read);
//! - dribblers (a 512 KiB frame sent 200 bytes at a time);
//! - mutated frames (valid requests with bytes flipped, on short connections);
//! - kill -9 of xenithd, which is started again on the same state.
//!
//! Afterwards the hostile load stops and it checks: every VM created is
//! still there (lost: 0) and answers a start, a clean shutdown and a kill;
//! no call ever answered INTERNAL_ERROR; memory is back near its baseline.
//!
//! `cargo bench --bench soak [-- SECONDS]` (60 s by default); under
//! `cargo test` it runs for 6 s.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

#[path = "../tests/common/daemon.rs"]
#[allow(dead_code)]
mod daemon;

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use xenith::proto::rpc::{ClientError, RpcClient};

const XENITHD: &str = env!("CARGO_BIN_EXE_xenithd");
const VMS: usize = 20;

#[derive(Default)]
struct Tally {
    ops: AtomicU64,
    refused: AtomicU64,
    unexpected: AtomicU64,
    interrupted: AtomicU64,
    faults: AtomicU64,
    frames: AtomicU64,
    slow: AtomicU64,
    dribbled: AtomicU64,
    kills: AtomicU64,
    peak_mib: AtomicU64,
}

fn rss_mib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024)
}

/// A tiny deterministic generator (no dependency for a load tool).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n).unwrap()).unwrap()
    }
}

fn name(i: usize) -> String {
    format!("soak{i:02}")
}

/// One call's result, counted: a refusal xenith gives on purpose (busy,
/// another state, a fault it does not take) is expected; INTERNAL_ERROR is
/// not.
fn count(t: &Tally, r: &Result<Value, ClientError>) {
    t.ops.fetch_add(1, Ordering::Relaxed);
    match r {
        Ok(_) => {}
        // A panic injected into a VM's domain actor while it ran this
        // operation: said as such, and expected of the fault.
        Err(ClientError::Remote(e))
            if e.code == "INTERNAL_ERROR" && e.message.contains("stopped during the operation") =>
        {
            t.interrupted.fetch_add(1, Ordering::Relaxed);
        }
        Err(ClientError::Remote(e)) if e.code == "INTERNAL_ERROR" => {
            eprintln!("soak: INTERNAL_ERROR: {}", e.message);
            t.unexpected.fetch_add(1, Ordering::Relaxed);
        }
        Err(_) => {
            t.refused.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn connect(socket: &std::path::Path) -> RpcClient {
    loop {
        if let Ok(c) = RpcClient::connect(socket).await {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Operations and faults from one client, until `stop`.
async fn operate(socket: std::path::PathBuf, seed: u64, t: Arc<Tally>, stop: Arc<AtomicBool>) {
    let mut rng = Rng(seed);
    let mut c = connect(&socket).await;
    while !stop.load(Ordering::Relaxed) {
        let vm = name(rng.below(VMS));
        let (method, params) = match rng.below(12) {
            0 | 1 => ("vm.start", json!({"vm": vm})),
            2 => (
                "vm.shutdown",
                json!({"vm": vm, "timeout_s": 2, "fallback": true}),
            ),
            3 => ("vm.shutdown", json!({"vm": vm, "force": true})),
            4 => ("vm.kill", json!({"vm": vm})),
            5 => ("vm.pause", json!({"vm": vm})),
            6 => ("vm.unpause", json!({"vm": vm})),
            7 => (
                "vbd.plug",
                json!({"vm": vm, "disk": {"path": format!("/images/{vm}-b.img"), "device": "xvdb"}}),
            ),
            8 => ("vbd.unplug", json!({"vm": vm, "device": "xvdb"})),
            9 => ("vm.get", json!({"vm": vm})),
            _ => {
                let part = ["domain", "console", "agent", "vbd:xvda", "vif:0"][rng.below(5)];
                let kind = ["panic", "panic", "crash", "kill"][rng.below(4)];
                t.faults.fetch_add(1, Ordering::Relaxed);
                (
                    "fault.inject",
                    json!({"vm": vm, "part": part, "kind": kind}),
                )
            }
        };
        let r = tokio::time::timeout(
            Duration::from_secs(30),
            c.call::<Value, Value>(method, params),
        )
        .await;
        match r {
            Ok(Err(ClientError::Closed | ClientError::Connect(..))) | Err(_) => {
                // xenithd was killed: connect again.
                c = connect(&socket).await;
            }
            Ok(r) => count(&t, &r),
        }
    }
}

/// Connections that send and never read, dribble big frames, or send
/// mutated frames, until `stop`.
fn hostile(
    socket: std::path::PathBuf,
    xs: std::path::PathBuf,
    t: Arc<Tally>,
    stop: Arc<AtomicBool>,
) {
    let mut rng = Rng(7);
    let valid = {
        let mut v = Vec::new();
        rmpv::encode::write_value(
            &mut v,
            &rmpv::Value::Array(vec![
                0.into(),
                1.into(),
                "vm.get".into(),
                rmpv::Value::Array(vec![rmpv::Value::Map(vec![("vm".into(), "soak00".into())])]),
            ]),
        )
        .unwrap();
        v
    };
    let mut slow = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match rng.below(3) {
            0 => {
                // A slow reader: requests pipelined, replies never read.
                let target = if rng.below(2) == 0 { &socket } else { &xs };
                if let Ok(mut s) = std::os::unix::net::UnixStream::connect(target) {
                    s.set_write_timeout(Some(Duration::from_millis(200)))
                        .unwrap();
                    let burst: Vec<u8> = if target == &xs {
                        let mut one = Vec::new();
                        xenith::xs::Packet::new(
                            xenith::xs::MsgType::Read,
                            1,
                            0,
                            b"/local\0".to_vec(),
                        )
                        .encode_into(&mut one);
                        one.repeat(2000)
                    } else {
                        valid.repeat(2000)
                    };
                    let _ = s.write_all(&burst);
                    slow.push(s);
                    t.slow.fetch_add(1, Ordering::Relaxed);
                }
                if slow.len() > 16 {
                    slow.remove(0);
                }
            }
            1 => {
                // A dribbler: a 512 KiB string, 200 bytes at a time, for a while.
                if let Ok(mut s) = std::os::unix::net::UnixStream::connect(&socket) {
                    let mut frame = vec![0xdb, 0x00, 0x08, 0x00, 0x00];
                    frame.extend(std::iter::repeat_n(b'x', 512 * 1024));
                    for chunk in frame.chunks(200).take(500) {
                        if s.write_all(chunk).is_err() || stop.load(Ordering::Relaxed) {
                            break;
                        }
                    }
                    t.dribbled.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ => {
                // A mutated frame on a connection of its own.
                if let Ok(mut s) = std::os::unix::net::UnixStream::connect(&socket) {
                    let mut f = valid.clone();
                    for _ in 0..1 + rng.below(3) {
                        let at = rng.below(f.len());
                        f[at] = u8::try_from(rng.next() & 0xff).unwrap();
                    }
                    let _ = s.write_all(&f);
                    t.frames.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn kill9(mut d: daemon::Xenithd) -> tempfile::TempDir {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(d.child.id()).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = d.child.wait();
    std::mem::replace(&mut d.dir, tempfile::tempdir().unwrap())
}

async fn soak(seconds: u64) {
    let args = ["--allow-fault-injection"];
    let mut d = daemon::Xenithd::start(XENITHD, &args);
    let (socket, xs) = (d.socket.clone(), d.xenstored_socket());
    let c = RpcClient::connect(&socket).await.unwrap();
    for i in 0..VMS {
        let vm = name(i);
        let spec = json!({"name": vm, "type": "pv", "memory_mib": 64, "kernel": "/boot/vmlinuz",
                          "on_crash": if i % 2 == 0 { "restart" } else { "destroy" },
                          "disks": [{"path": format!("/images/{vm}.img"), "device": "xvda"}], "nics": [{}]});
        c.call::<Value, Value>("vm.create", json!({"spec": spec}))
            .await
            .unwrap();
        c.call::<Value, Value>("vm.start", json!({"vm": vm}))
            .await
            .unwrap();
    }
    drop(c);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = rss_mib(d.child.id());
    let t = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for seed in 1..=4 {
        workers.push(tokio::spawn(operate(
            socket.clone(),
            seed * 7919,
            t.clone(),
            stop.clone(),
        )));
    }
    let hostile = {
        let (socket, xs, t, stop) = (socket.clone(), xs.clone(), t.clone(), stop.clone());
        std::thread::spawn(move || hostile(socket, xs, t, stop))
    };
    let t0 = Instant::now();
    let total = Duration::from_secs(seconds);
    // kill -9 twice: at a third and at two thirds of the run.
    let mut kills_at = vec![total / 3, total * 2 / 3];
    while t0.elapsed() < total {
        t.peak_mib
            .fetch_max(rss_mib(d.child.id()), Ordering::Relaxed);
        if kills_at.first().is_some_and(|k| t0.elapsed() >= *k) {
            kills_at.remove(0);
            let dir = kill9(d);
            t.kills.fetch_add(1, Ordering::Relaxed);
            d = daemon::Xenithd::start_in(XENITHD, dir, &args);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    hostile.join().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_load = rss_mib(d.child.id());

    // Nothing lost, everything manageable.
    let c = RpcClient::connect(&socket).await.unwrap();
    let list: Value = c.call("vm.list", json!({})).await.unwrap();
    let lost = VMS - list.as_array().unwrap().len();
    let mut unmanageable = Vec::new();
    for i in 0..VMS {
        let vm = name(i);
        // Let an operation under way (a restart after a crash) finish.
        let t1 = Instant::now();
        while c
            .call::<Value, Value>("vm.get", json!({"vm": vm}))
            .await
            .unwrap()["operation"]
            .is_string()
            && t1.elapsed() < Duration::from_secs(30)
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = c.call::<Value, Value>("vm.kill", json!({"vm": vm})).await;
        let started = c.call::<Value, Value>("vm.start", json!({"vm": vm})).await;
        let stopped = c
            .call::<Value, Value>(
                "vm.shutdown",
                json!({"vm": vm, "timeout_s": 10, "fallback": true}),
            )
            .await;
        if !(started.is_ok() && stopped.as_ref().is_ok_and(|v| v["power_state"] == "Halted")) {
            unmanageable.push((vm, started.err(), stopped.err()));
        }
    }
    let final_mib = rss_mib(d.child.id());
    println!("| figure | value |");
    println!("|---|---|");
    println!("| duration | {seconds} s |");
    println!(
        "| operations (refused on purpose) | {} ({}) |",
        t.ops.load(Ordering::Relaxed),
        t.refused.load(Ordering::Relaxed)
    );
    println!(
        "| INTERNAL_ERROR answers (but operations cut short by a panic injected into their domain actor) | {} |",
        t.unexpected.load(Ordering::Relaxed)
    );
    println!(
        "| operations cut short by a panic injected into their domain actor | {} |",
        t.interrupted.load(Ordering::Relaxed)
    );
    println!("| faults injected | {} |", t.faults.load(Ordering::Relaxed));
    println!("| mutated frames | {} |", t.frames.load(Ordering::Relaxed));
    println!(
        "| slow readers / dribblers | {} / {} |",
        t.slow.load(Ordering::Relaxed),
        t.dribbled.load(Ordering::Relaxed)
    );
    println!(
        "| kill -9 of xenithd | {} |",
        t.kills.load(Ordering::Relaxed)
    );
    println!("| RSS: baseline / peak / after the load / final | {baseline} / {} / {after_load} / {final_mib} MiB |", t.peak_mib.load(Ordering::Relaxed));
    println!("| VMs lost | {lost} |");
    println!("| VMs not manageable after | {} |", unmanageable.len());
    assert_eq!(lost, 0, "VMs lost");
    assert!(unmanageable.is_empty(), "{unmanageable:?}");
    assert_eq!(
        t.unexpected.load(Ordering::Relaxed),
        0,
        "INTERNAL_ERROR answers"
    );
    assert!(
        final_mib < baseline + 64,
        "RSS {baseline} -> {final_mib} MiB"
    );
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let seconds = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .find_map(|a| a.parse().ok())
        .unwrap_or(if full { 60 } else { 6 });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(soak(seconds));
}
