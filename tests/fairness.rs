//! One client cannot starve the others: idle connections, and a client
//! that floods requests without reading its replies, leave another
//! client's calls answered. (A bound on liveness, not a speed figure: the
//! figures are in benches/rpc.rs.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::daemon::Xenithd;
use common::rpc::call;
use serde_json::json;
use xenith::proto::rpc::RpcClient;

const XENITHD: &str = env!("CARGO_BIN_EXE_xenithd");

fn host_info_frame(id: u32) -> Vec<u8> {
    let mut f = Vec::new();
    rmp::encode::write_array_len(&mut f, 4).unwrap();
    rmp::encode::write_uint(&mut f, 0).unwrap();
    rmp::encode::write_uint(&mut f, u64::from(id)).unwrap();
    rmp::encode::write_str(&mut f, "host.info").unwrap();
    rmp::encode::write_array_len(&mut f, 0).unwrap();
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_flooding_clients_do_not_starve_others() {
    let d = Xenithd::start(XENITHD, &[]);
    // 200 connections that send nothing.
    let idle: Vec<UnixStream> = (0..200)
        .map(|_| UnixStream::connect(&d.socket).unwrap())
        .collect();
    // One that writes requests as fast as it can and never reads a reply:
    // its socket fills, xenithd stops reading it (back-pressure).
    let socket = d.socket.clone();
    let flooder = std::thread::spawn(move || {
        let mut s = UnixStream::connect(&socket).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut sent = 0u32;
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(3) {
            if s.write_all(&host_info_frame(sent)).is_err() {
                break; // blocked: the daemon stopped reading this one
            }
            sent += 1;
        }
        (s, sent)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let c = RpcClient::connect(&d.socket).await.unwrap();
    for _ in 0..100 {
        let r = tokio::time::timeout(Duration::from_secs(5), call(&c, "host.info", json!({})))
            .await
            .expect("starved: a call took more than 5 s");
        r.unwrap();
    }
    let (_s, sent) = flooder.join().unwrap();
    assert!(sent > 1000, "the flooder only managed {sent} requests");
    drop(idle);
}
