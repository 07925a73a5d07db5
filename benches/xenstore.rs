//! xenstore load tool (issue: xenstore). Runs `xenithd xenstored` as its own
//! process (one core for it, one for the clients) and measures, over the
//! Unix socket with xenith's client:
//!
//! - ops/s, p50 and p99 latency of read, write, directory and transaction
//!   (start, read, write, commit), with 1, 16 and 64 clients, one request
//!   at a time per client and pipelined (32 in flight per client);
//! - a watch event delivered to 1,000 watchers (1,000 connections);
//! - the daemon's memory per node at 1,000,000 small nodes.
//!
//! `cargo bench --bench xenstore` runs it in full; under `cargo test` it runs
//! a small smoke version so that it stays working.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::cast_possible_truncation
)]

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use xenith::drivers::xenstore::XsClient;

const XENITHD: &str = env!("CARGO_BIN_EXE_xenithd");

#[derive(Clone, Copy)]
struct Scale {
    seconds: f64,
    clients: &'static [usize],
    watchers: usize,
    nodes: usize,
}

const FULL: Scale = Scale {
    seconds: 1.0,
    clients: &[1, 16, 64],
    watchers: 1000,
    nodes: 1_000_000,
};
const SMOKE: Scale = Scale {
    seconds: 0.05,
    clients: &[1, 4],
    watchers: 20,
    nodes: 2000,
};

#[allow(dead_code)]
#[path = "../tests/common/xenstored.rs"]
mod xenstored;

/// The daemon's resident memory.
fn rss_kib(server: &xenstored::Xenstored) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Read,
    Write,
    Directory,
    Transaction,
}

async fn one(c: &XsClient, op: Op, client: usize, i: u64) {
    match op {
        Op::Read => {
            c.read(&format!("/bench/r/{client}")).await.unwrap();
        }
        Op::Write => c
            .write(&format!("/bench/w/{client}/{}", i % 16), "value")
            .await
            .unwrap(),
        Op::Directory => {
            c.directory("/bench/d").await.unwrap();
        }
        Op::Transaction => {
            // Its own node per in-flight transaction: this measures
            // throughput, not contention on one node.
            let path = format!("/bench/t/{client}/{}", i % 32);
            c.transaction(|tx| {
                let path = path.clone();
                async move {
                    let v = tx.read(&path).await?;
                    tx.write(&path, v).await
                }
            })
            .await
            .unwrap();
        }
    }
}

/// Runs `clients` clients for `seconds`, each with `depth` requests in
/// flight; returns (ops/s, p50 µs, p99 µs).
async fn load(
    socket: &Path,
    op: Op,
    clients: usize,
    depth: usize,
    seconds: f64,
) -> (f64, f64, f64) {
    let mut conns = Vec::new();
    for _ in 0..clients {
        conns.push(XsClient::connect_socket(socket).await.unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let t0 = Instant::now();
    let tasks = conns.into_iter().enumerate().map(|(client, c)| {
        tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut inflight = FuturesUnordered::new();
            let mut i = 0u64;
            loop {
                while inflight.len() < depth && Instant::now() < deadline {
                    let c = c.clone();
                    i += 1;
                    inflight.push(async move {
                        let s = Instant::now();
                        one(&c, op, client, i).await;
                        s.elapsed()
                    });
                }
                match inflight.next().await {
                    Some(d) => lat.push(d.as_nanos() as u64),
                    None => break,
                }
            }
            lat
        })
    });
    let mut all: Vec<u64> = Vec::new();
    for t in tasks.collect::<Vec<_>>() {
        all.extend(t.await.unwrap());
    }
    let elapsed = t0.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| all[((all.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
    (all.len() as f64 / elapsed, pct(0.5), pct(0.99))
}

async fn prepare(c: &XsClient, clients: usize) {
    for i in 0..clients {
        c.write(&format!("/bench/r/{i}"), "some value")
            .await
            .unwrap();
        for slot in 0..32 {
            c.write(&format!("/bench/t/{i}/{slot}"), "0").await.unwrap();
        }
    }
    for i in 0..10 {
        c.write(&format!("/bench/d/child{i}"), "").await.unwrap();
    }
}

/// Time from a write to its event reaching the last of `n` watchers.
async fn watch_fanout(socket: &Path, n: usize, rounds: usize) -> (f64, f64) {
    let writer = XsClient::connect_socket(socket).await.unwrap();
    let mut streams = Vec::new();
    for _ in 0..n {
        let c = XsClient::connect_socket(socket).await.unwrap();
        let mut w = c.watch("/fan").await.unwrap();
        assert_eq!(w.next().await.as_deref(), Some("/fan"));
        streams.push((c, w));
    }
    let mut times = Vec::new();
    for r in 0..rounds {
        let t0 = Instant::now();
        writer.write("/fan/x", r.to_string()).await.unwrap();
        for (_, w) in streams.iter_mut() {
            assert_eq!(w.next().await.as_deref(), Some("/fan/x"));
        }
        times.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], times[(times.len() - 1) * 99 / 100])
}

async fn memory_per_node(server: &xenstored::Xenstored, nodes: usize) -> (f64, u64) {
    let c = XsClient::connect_socket(&server.socket).await.unwrap();
    let before = rss_kib(server);
    let mut inflight = FuturesUnordered::new();
    for i in 0..nodes {
        let c = c.clone();
        inflight.push(async move {
            c.write(&format!("/mem/{}/{}", i / 1000, i % 1000), "v")
                .await
        });
        if inflight.len() >= 256 {
            inflight.next().await.unwrap().unwrap();
        }
    }
    while let Some(r) = inflight.next().await {
        r.unwrap();
    }
    let after = rss_kib(server);
    ((after - before) as f64 * 1024.0 / nodes as f64, after)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let scale = if full { FULL } else { SMOKE };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let server = xenstored::Xenstored::start(XENITHD);
        let admin = XsClient::connect_socket(&server.socket).await.unwrap();
        prepare(&admin, 64).await;
        println!("| op | clients | mode | ops/s | p50 µs | p99 µs |");
        println!("|---|---|---|---|---|---|");
        for op in [Op::Read, Op::Write, Op::Directory, Op::Transaction] {
            for &clients in scale.clients {
                for (mode, depth) in [("one at a time", 1), ("pipelined x32", 32)] {
                    let (ops, p50, p99) =
                        load(&server.socket, op, clients, depth, scale.seconds).await;
                    println!("| {op:?} | {clients} | {mode} | {ops:.0} | {p50:.1} | {p99:.1} |");
                }
            }
        }
        let (p50, p99) = watch_fanout(&server.socket, scale.watchers, 50).await;
        println!(
            "\nwatch event to {} watchers: p50 {p50:.2} ms, p99 {p99:.2} ms",
            scale.watchers
        );
        let (per_node, rss) = memory_per_node(&server, scale.nodes).await;
        println!(
            "memory: {per_node:.0} bytes per node at {} nodes (daemon RSS {} MiB)",
            scale.nodes,
            rss / 1024
        );
    });
}
