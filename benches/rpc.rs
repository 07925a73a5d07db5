//! RPC load tool: requests per second and latency (p50/p99) for host.info
//! and vm.get, with 1 and 32 connections, one request at a time per
//! connection ("unpipelined") and with many in flight ("pipelined").
//!
//! `cargo bench --bench rpc` runs the full set (each case for a few
//! seconds, against a release xenithd with one running VM); under `cargo
//! test` it runs each case briefly so that it stays working. The client is
//! lean on purpose (pre-encoded requests, the library's frame codec): it
//! shares the machine's cores with the daemon.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::cast_possible_truncation
)]

#[path = "../tests/common/daemon.rs"]
#[allow(dead_code)]
mod daemon;

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::UnixStream;
use tokio_util::codec::{FramedRead, FramedWrite};
use xenith::proto::rpc::{MsgpackCodec, RpcClient};

const XENITHD: &str = env!("CARGO_BIN_EXE_xenithd");

/// Requests in flight per connection when pipelined (the daemon's default
/// per-connection limit is 128).
const DEPTH: usize = 64;

fn request(id: u32, method: &str, params: &[(&str, &str)]) -> rmpv::Value {
    let map = params
        .iter()
        .map(|(k, v)| (rmpv::Value::from(*k), rmpv::Value::from(*v)))
        .collect::<Vec<_>>();
    let params = if map.is_empty() {
        rmpv::Value::Array(vec![])
    } else {
        rmpv::Value::Array(vec![rmpv::Value::Map(map)])
    };
    rmpv::Value::Array(vec![0.into(), id.into(), method.into(), params])
}

fn msgid(v: &rmpv::Value) -> u32 {
    let items = v.as_array().unwrap();
    assert!(items[2].is_nil(), "error reply: {v}");
    items[1].as_u64().unwrap() as u32
}

/// One connection for `dur`: returns the latencies of its requests.
async fn connection(
    socket: std::path::PathBuf,
    method: &'static str,
    params: Vec<(&'static str, String)>,
    depth: usize,
    dur: Duration,
) -> Vec<Duration> {
    let stream = UnixStream::connect(&socket).await.unwrap();
    let (rd, wr) = stream.into_split();
    let mut reader = FramedRead::new(rd, MsgpackCodec::new(1 << 20));
    let mut writer = FramedWrite::new(wr, MsgpackCodec::new(1 << 20));
    let p: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut sent_at = vec![Instant::now(); depth];
    let mut lat = Vec::with_capacity(200_000);
    let end = Instant::now() + dur;
    let mut next: u32 = 0;
    let mut in_flight = 0usize;
    loop {
        // Fill the window, then flush once.
        while in_flight < depth && Instant::now() < end {
            sent_at[next as usize % depth] = Instant::now();
            writer.feed(request(next, method, &p)).await.unwrap();
            next = next.wrapping_add(1);
            in_flight += 1;
        }
        SinkExt::<rmpv::Value>::flush(&mut writer).await.unwrap();
        if in_flight == 0 {
            break;
        }
        let reply = reader.next().await.unwrap().unwrap();
        let id = msgid(&reply);
        lat.push(sent_at[id as usize % depth].elapsed());
        in_flight -= 1;
    }
    lat
}

struct Figures {
    rps: f64,
    p50: Duration,
    p99: Duration,
}

async fn case(
    socket: &std::path::Path,
    method: &'static str,
    params: Vec<(&'static str, String)>,
    conns: usize,
    depth: usize,
    dur: Duration,
) -> Figures {
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..conns)
        .map(|_| {
            tokio::spawn(connection(
                socket.to_owned(),
                method,
                params.clone(),
                depth,
                dur,
            ))
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = t0.elapsed();
    all.sort();
    let pick = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    Figures {
        rps: all.len() as f64 / elapsed.as_secs_f64(),
        p50: pick(0.50),
        p99: pick(0.99),
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let dur = if full {
        Duration::from_secs(3)
    } else {
        Duration::from_millis(200)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let d = daemon::Xenithd::start(XENITHD, &[]);
        let c = RpcClient::connect(&d.socket).await.unwrap();
        let spec = json!({"name": "bench", "type": "pv", "memory_mib": 256, "kernel": "/boot/vmlinuz",
                          "disks": [{"path": "/d.img", "device": "xvda"}], "nics": [{}]});
        let uuid: Value = c.call("vm.create", json!({"spec": spec})).await.unwrap();
        let _: Value = c.call("vm.start", json!({"vm": "bench"})).await.unwrap();
        let uuid = uuid["uuid"].as_str().unwrap().to_owned();
        println!("| method | connections | mode | requests/s | p50 | p99 |");
        println!("|---|---|---|---|---|---|");
        for (method, params) in [("host.info", vec![]), ("vm.get", vec![("vm", uuid.clone())])] {
            for conns in [1, 32] {
                for (mode, depth) in [("unpipelined", 1), ("pipelined", DEPTH)] {
                    let f = case(&d.socket, method, params.clone(), conns, depth, dur).await;
                    println!(
                        "| {method} | {conns} | {mode} | {:.0} | {:.0} µs | {:.0} µs |",
                        f.rps,
                        f.p50.as_secs_f64() * 1e6,
                        f.p99.as_secs_f64() * 1e6
                    );
                }
            }
        }
    });
}
