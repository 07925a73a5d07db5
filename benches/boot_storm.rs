//! Boot storm (issue: domains): N simulated VMs, each with 1 VBD, 1 VIF,
//! console and agent, all started at once through the RPC socket; the time
//! from the first vm.start to every VM Running with every device Connected,
//! and xenithd's peak RSS.
//!
//! `cargo bench --bench boot_storm` runs N = 100, 1,000 and 10,000 (each in
//! a fresh xenithd); `-- N...` picks sizes. Under `cargo test` it runs a
//! small storm so that it stays working.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

#[path = "../tests/common/daemon.rs"]
#[allow(dead_code)]
mod daemon;

use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use serde_json::{json, Value};
use xenith::proto::rpc::RpcClient;

const XENITHD: &str = env!("CARGO_BIN_EXE_xenithd");

fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib / 1024
}

/// Runs `f` over `items` with at most `width` in flight.
async fn bounded<T, F, Fut>(items: Vec<T>, width: usize, f: F)
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut inflight = FuturesUnordered::new();
    for item in items {
        inflight.push(f(item));
        if inflight.len() >= width {
            inflight.next().await;
        }
    }
    while inflight.next().await.is_some() {}
}

async fn storm(n: usize) -> (Duration, Duration, u64) {
    // Enough simulated memory for every VM (64 MiB each).
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("xenith.toml");
    std::fs::write(
        &config,
        format!("[sim]\ntotal_mib = {}\ncpus = 64\n", 4096 + n as u64 * 64),
    )
    .unwrap();
    let d = daemon::Xenithd::start_in(XENITHD, dir, &["--config", config.to_str().unwrap()]);
    let c = RpcClient::connect(&d.socket).await.unwrap();
    let names: Vec<String> = (0..n).map(|i| format!("vm{i:05}")).collect();
    bounded(names.clone(), 64, |name| {
        let c = c.clone();
        async move {
            let spec = json!({
                "name": name, "type": "pv", "memory_mib": 64, "kernel": "/boot/vmlinuz",
                // One disk each: a disk has one writer.
                "disks": [{"path": format!("/var/lib/xenith/{name}.img"), "device": "xvda"}],
                "nics": [{"bridge": "xenbr0"}],
            });
            c.call::<Value, Value>("vm.create", json!({"spec": spec}))
                .await
                .unwrap();
        }
    })
    .await;
    let t0 = Instant::now();
    // All at once: every vm.start in flight together.
    let starts: FuturesUnordered<_> = names
        .iter()
        .map(|name| {
            let c = c.clone();
            async move {
                c.call::<Value, Value>("vm.start", json!({"vm": name}))
                    .await
                    .unwrap()
            }
        })
        .collect();
    let started: Vec<Value> = starts.collect().await;
    assert!(started.iter().all(|v| v["power_state"] == "Running"));
    let running = t0.elapsed();
    // Then until every device is Connected.
    let mut pending = names.clone();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for chunk in pending.chunks(256) {
            let gets: FuturesUnordered<_> = chunk
                .iter()
                .map(|name| {
                    let c = c.clone();
                    async move {
                        (
                            name.clone(),
                            c.call::<Value, Value>("vm.get", json!({"vm": name}))
                                .await
                                .unwrap(),
                        )
                    }
                })
                .collect();
            for (name, v) in gets.collect::<Vec<_>>().await {
                if !(v["vbds"][0]["state"] == "Connected" && v["vifs"][0]["state"] == "Connected") {
                    still.push(name);
                }
            }
        }
        pending = still;
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "{} VMs never connected",
            pending.len()
        );
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    (running, t0.elapsed(), peak_rss_mib(d.child.id()))
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let full = std::env::args().any(|a| a == "--bench");
    let sizes: Vec<usize> = if !args.is_empty() {
        args.iter().filter_map(|a| a.parse().ok()).collect()
    } else if full {
        vec![100, 1000, 10_000]
    } else {
        vec![20]
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("| VMs | all vm.start returned | all devices Connected | xenithd peak RSS |");
    println!("|---|---|---|---|");
    for n in sizes {
        let (running, connected, rss) = rt.block_on(storm(n));
        println!(
            "| {n} | {:.2} s | {:.2} s | {rss} MiB |",
            running.as_secs_f64(),
            connected.as_secs_f64()
        );
    }
}
