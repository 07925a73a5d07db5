//! The embedded xenstored under clients that do not read: its memory stays
//! bounded (a reader that does not read its replies is not read from; a
//! watcher that falls too far behind is dropped) and comes back once they
//! leave. Measured on `xenithd xenstored`, through its socket.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::xenstored::Xenstored;
use xenith::xs::{MsgType, Packet};

const XENITHD: &str = env!("CARGO_BIN_EXE_xenithd");

fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib / 1024
}

fn frame(ty: MsgType, req_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    Packet::new(ty, req_id, 0, payload.to_vec()).encode_into(&mut out);
    out
}

/// A request and its reply.
fn ask(s: &mut UnixStream, ty: MsgType, payload: &[u8]) -> Vec<u8> {
    s.write_all(&frame(ty, 1, payload)).unwrap();
    let mut header = [0u8; 16];
    s.read_exact(&mut header).unwrap();
    let len = u32::from_le_bytes(header[12..16].try_into().unwrap()) as usize;
    let mut body = vec![0; len];
    s.read_exact(&mut body).unwrap();
    body
}

/// Writes as much of `bytes` as the socket takes within `within`; returns
/// how much it took (a server that stops reading takes only so much).
fn push(s: &mut UnixStream, bytes: &[u8], within: Duration) -> usize {
    s.set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let t0 = Instant::now();
    let mut sent = 0;
    while sent < bytes.len() && t0.elapsed() < within {
        if let Ok(n) = s.write(&bytes[sent..]) {
            sent += n;
        }
    }
    sent
}

#[test]
fn clients_that_do_not_read_cost_bounded_memory() {
    let xsd = Xenstored::start(XENITHD);
    let pid = xsd.child.id();
    let mut admin = UnixStream::connect(&xsd.socket).unwrap();
    let mut payload = b"/big\0".to_vec();
    payload.extend(std::iter::repeat_n(b'v', 4000));
    ask(&mut admin, MsgType::Write, &payload);
    let baseline = rss_mib(pid);

    // Pipelined reads of a 4 KB value, replies never read: without a
    // bound this took xenstored past 1 GiB in under a second.
    let mut slow = UnixStream::connect(&xsd.socket).unwrap();
    let one = frame(MsgType::Read, 7, b"/big\0");
    let many: Vec<u8> = one
        .iter()
        .copied()
        .cycle()
        .take(one.len() * 300_000)
        .collect();
    let taken = push(&mut slow, &many, Duration::from_secs(3));
    assert!(taken < many.len(), "the server stopped reading it");
    let peak = rss_mib(pid);
    assert!(peak < baseline + 64, "RSS {baseline} -> {peak} MiB");
    // Others are still served meanwhile.
    assert_eq!(&ask(&mut admin, MsgType::Read, b"/big\0")[..4], b"vvvv");

    // 100 watches firing on every write, events never read: the watcher is
    // dropped once it falls too far behind.
    let mut watcher = UnixStream::connect(&xsd.socket).unwrap();
    for i in 0..100 {
        watcher
            .write_all(&frame(MsgType::Watch, i, format!("/w\0t{i}\0").as_bytes()))
            .unwrap();
    }
    for i in 0..5000 {
        ask(
            &mut admin,
            MsgType::Write,
            format!("/w/k{}\0{i}", i % 10).as_bytes(),
        );
        if i % 500 == 0 {
            assert!(rss_mib(pid) < baseline + 64, "RSS {} MiB", rss_mib(pid));
        }
    }
    watcher
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut sink = vec![0u8; 1 << 20];
    let mut total = 0usize;
    loop {
        match watcher.read(&mut sink) {
            Ok(0) => break, // dropped by xenstored
            Ok(n) => total += n,
            Err(e) => panic!("the watcher was not dropped ({total} bytes read): {e}"),
        }
    }
    assert!(rss_mib(pid) < baseline + 64);

    // They leave: the memory is back near where it started.
    drop(slow);
    drop(watcher);
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_mib(pid);
    assert!(
        after < baseline + 16,
        "RSS {baseline} -> {after} MiB after they left"
    );
    assert_eq!(&ask(&mut admin, MsgType::Read, b"/big\0")[..4], b"vvvv");
}
