//! Storage load tool, against a xenithd with file SRs and real qemu-img:
//! - vdi.copy against `qemu-img convert` of the same qcow2 with data in it
//!   (throughput ratio, same run, alternated, best of each);
//! - vdi.snapshot and vdi.clone of a large VDI with data written and of a
//!   small one (O(1) in the disk's size);
//! - N VDIs in one SR: vdi.list, sr.scan, and a xenithd restart with their
//!   records;
//! - M concurrent vdi.snapshot calls on M VDIs: none lost, every chain
//!   intact (`qemu-img check` and `qemu-img info --backing-chain`).
//!
//! `cargo bench --bench storage` runs the sizes (a 2 GiB copy with
//! 1 GiB of data, a 10 GiB VDI with 1 GiB written, 1,000 VDIs, 100
//! concurrent snapshots) and says of each goal whether it is met; under
//! `cargo test` it runs small sizes so that it stays working (no timing is
//! judged there).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::cast_precision_loss
)]

#[path = "../tests/common/daemon.rs"]
#[allow(dead_code)]
mod daemon;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::{json, Value};
use xenith::proto::rpc::RpcClient;

const XENITHD: &str = env!("CARGO_BIN_EXE_xenithd");

struct Sizes {
    copy_mib: u64,
    copy_data_mib: u64,
    big_mib: u64,
    big_written_mib: u64,
    many: usize,
    concurrent: usize,
}

const FULL: Sizes = Sizes {
    copy_mib: 2048,
    copy_data_mib: 1024,
    big_mib: 10240,
    big_written_mib: 1024,
    many: 1000,
    concurrent: 100,
};

const QUICK: Sizes = Sizes {
    copy_mib: 64,
    copy_data_mib: 16,
    big_mib: 1024,
    big_written_mib: 8,
    many: 40,
    concurrent: 10,
};

async fn ok(c: &RpcClient, method: &str, params: Value) -> Value {
    c.call::<Value, Value>(method, params.clone())
        .await
        .unwrap_or_else(|e| panic!("{method} {params}: {e}"))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("{cmd:?}: {e} (qemu-img and qemu-io come with Debian's qemu-utils)")
    });
    assert!(out.status.success(), "{cmd:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Writes `mib` MiB of data that does not compress or dedupe (qemu-io's
/// pattern writes are one byte repeated; this is a random file converted
/// into the image) at the start of a `format` image.
fn fill(path: &Path, format: &str, mib: u64) {
    let data = path.with_extension("data");
    run(Command::new("dd")
        .arg("if=/dev/urandom")
        .arg(format!("of={}", data.display()))
        .args(["bs=1M", &format!("count={mib}"), "status=none"]));
    // Into the existing image (-n), which is at least as large.
    run(Command::new("qemu-img")
        .args(["convert", "-n", "-f", "raw", "-O", format])
        .arg(&data)
        .arg(path));
    std::fs::remove_file(data).unwrap();
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Whether a goal is met; a quick run's small sizes judge nothing.
fn verdict(full: bool, met: bool) -> &'static str {
    if !full {
        "not judged (quick run)"
    } else if met {
        "met"
    } else {
        "MISSED"
    }
}

async fn timed(c: &RpcClient, method: &str, params: Value) -> (Duration, Value) {
    let t0 = Instant::now();
    let v = ok(c, method, params).await;
    (t0.elapsed(), v)
}

async fn file_of(c: &RpcClient, dir: &Path, vdi: &str) -> PathBuf {
    let v = ok(c, "vdi.get", json!({"vdi": vdi})).await;
    dir.join(v["location"].as_str().unwrap())
}

async fn copy_ratio(c: &RpcClient, root: &Path, s: &Sizes) -> (f64, f64, f64) {
    let dir = root.join("copy");
    ok(
        c,
        "sr.create",
        json!({"name": "copy", "type": "file", "config": {"path": dir}}),
    )
    .await;
    let src = ok(
        c,
        "vdi.create",
        json!({"sr": "copy", "name": "src", "size_mib": s.copy_mib}),
    )
    .await;
    let src = src["uuid"].as_str().unwrap().to_owned();
    let src_file = file_of(c, &dir, &src).await;
    fill(&src_file, "qcow2", s.copy_data_mib);
    let direct = root.join("direct.qcow2");
    let (mut best_tool, mut best_vdi) = (Duration::MAX, Duration::MAX);
    // Alternated, each first in turn, each from a clean page cache (the
    // dirty pages one leaves would slow the next down).
    for round in 0..4 {
        for tool_turn in [round % 2 == 0, round % 2 != 0] {
            run(&mut Command::new("sync"));
            if tool_turn {
                let _ = std::fs::remove_file(&direct);
                let t0 = Instant::now();
                run(Command::new("qemu-img")
                    .args(["convert", "-p", "-f", "qcow2", "-O", "qcow2"])
                    .arg(&src_file)
                    .arg(&direct));
                best_tool = best_tool.min(t0.elapsed());
                continue;
            }
            let (took, v) = timed(
                c,
                "vdi.copy",
                json!({"vdi": src, "sr": "copy", "name": format!("copy{round}")}),
            )
            .await;
            best_vdi = best_vdi.min(took);
            let copied = file_of(c, &dir, v["uuid"].as_str().unwrap()).await;
            run(Command::new("qemu-img")
                .args(["compare", "-q"])
                .arg(&src_file)
                .arg(&copied));
            ok(c, "vdi.destroy", json!({"vdi": v["uuid"]})).await;
        }
    }
    let _ = std::fs::remove_file(&direct);
    let mib = s.copy_data_mib as f64;
    let (tool_mibs, vdi_mibs) = (mib / best_tool.as_secs_f64(), mib / best_vdi.as_secs_f64());
    (tool_mibs, vdi_mibs, vdi_mibs / tool_mibs)
}

/// The slowest of `n` snapshots and of `n` clones (of the live VDI: a
/// base snapshot and an overlay) of a VDI of `size_mib` with `written_mib`
/// of data.
async fn snapshot_clone(
    c: &RpcClient,
    dir: &Path,
    size_mib: u64,
    written_mib: u64,
) -> (Duration, Duration) {
    let name = format!("v{size_mib}");
    let v = ok(
        c,
        "vdi.create",
        json!({"sr": "snap", "name": name, "size_mib": size_mib}),
    )
    .await;
    let uuid = v["uuid"].as_str().unwrap().to_owned();
    fill(&file_of(c, dir, &uuid).await, "qcow2", written_mib);
    let (mut snap, mut clone) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..5 {
        snap = snap.max(timed(c, "vdi.snapshot", json!({"vdi": uuid})).await.0);
        clone = clone.max(timed(c, "vdi.clone", json!({"vdi": uuid})).await.0);
    }
    (snap, clone)
}

fn check_chain(file: &Path, backing: &Path) {
    run(Command::new("qemu-img")
        .args(["check", "-q", "-f", "qcow2"])
        .arg(file));
    let info: Value = serde_json::from_str(&run(Command::new("qemu-img")
        .args(["info", "--output=json", "--backing-chain", "-f", "qcow2"])
        .arg(file)))
    .unwrap();
    let chain = info.as_array().unwrap();
    assert_eq!(
        chain[1]["filename"].as_str().map(PathBuf::from).as_deref(),
        Some(backing),
        "{info:#}"
    );
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let s = if full { FULL } else { QUICK };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let root = tempfile::tempdir_in(std::env::var_os("BENCH_DIR").unwrap_or_else(|| "/var/tmp".into())).unwrap();
        let d = daemon::Xenithd::start(XENITHD, &[]);
        let c = RpcClient::connect(&d.socket).await.unwrap();

        let (tool, vdi, ratio) = copy_ratio(&c, root.path(), &s).await;
        println!("| figure | value | goal | |");
        println!("|---|---|---|---|");
        println!(
            "| vdi.copy of a {} MiB qcow2 with {} MiB of data | {vdi:.0} MiB/s (qemu-img convert: {tool:.0} MiB/s), ratio {ratio:.2} | >= 0.9 | {} |",
            s.copy_mib, s.copy_data_mib, verdict(full, ratio >= 0.9)
        );

        let snap_dir = root.path().join("snap");
        ok(&c, "sr.create", json!({"name": "snap", "type": "file", "config": {"path": snap_dir}})).await;
        for (size, written) in [(s.big_mib, s.big_written_mib), (100, 1)] {
            let (snap, clone) = snapshot_clone(&c, &snap_dir, size, written).await;
            for (what, t) in [("vdi.snapshot", snap), ("vdi.clone", clone)] {
                println!(
                    "| {what} of a {size} MiB VDI with {written} MiB written (slowest of 5) | {:.1} ms | < 100 ms | {} |",
                    ms(t),
                    verdict(full, t < Duration::from_millis(100))
                );
            }
        }

        // Many VDIs in one SR.
        let many_dir = root.path().join("many");
        ok(&c, "sr.create", json!({"name": "many", "type": "file", "config": {"path": many_dir}})).await;
        let t0 = Instant::now();
        let mut uuids = Vec::with_capacity(s.many);
        for chunk in (0..s.many).collect::<Vec<_>>().chunks(16) {
            let made = join_all(chunk.iter().map(|i| {
                ok(&c, "vdi.create", json!({"sr": "many", "name": format!("d{i}"), "size_mib": 1}))
            }))
            .await;
            uuids.extend(made.into_iter().map(|v| v["uuid"].as_str().unwrap().to_owned()));
        }
        let made_in = t0.elapsed();
        let (list_t, list) = timed(&c, "vdi.list", json!({"sr": "many"})).await;
        assert_eq!(list.as_array().unwrap().len(), s.many);
        let (scan_t, scan) = timed(&c, "sr.scan", json!({"sr": "many"})).await;
        assert_eq!(scan, json!({"added": [], "missing": [], "changed": []}), "a clean scan");
        println!("| {} VDIs made (16 at a time) | {:.2} s | | |", s.many, made_in.as_secs_f64());
        for (what, t) in [("vdi.list", list_t), ("sr.scan", scan_t)] {
            println!(
                "| {what} of {} VDIs | {:.1} ms | < 1 s | {} |",
                s.many,
                ms(t),
                verdict(full, t < Duration::from_secs(1))
            );
        }

        // Concurrent snapshots of as many VDIs.
        let targets = &uuids[..s.concurrent];
        let t0 = Instant::now();
        let snaps = join_all(targets.iter().map(|u| ok(&c, "vdi.snapshot", json!({"vdi": u})))).await;
        let conc_t = t0.elapsed();
        let after = ok(&c, "vdi.list", json!({"sr": "many"})).await;
        assert_eq!(after.as_array().unwrap().len(), s.many + s.concurrent, "none lost");
        for (live, snap) in targets.iter().zip(&snaps) {
            let snap = snap["uuid"].as_str().unwrap();
            let got = ok(&c, "vdi.get", json!({"vdi": snap})).await;
            assert_eq!(got["snapshot_of"], live.as_str());
            check_chain(&file_of(&c, &many_dir, live).await, &file_of(&c, &many_dir, snap).await);
        }
        println!(
            "| {} concurrent vdi.snapshot on {} VDIs | all done in {:.0} ms, none lost, chains intact (qemu-img check) | complete | met |",
            s.concurrent,
            s.concurrent,
            ms(conc_t)
        );

        // A restart with every record.
        drop(c);
        let records = s.many + s.concurrent + 30;
        let (_, dir) = d.stop();
        let t0 = Instant::now();
        let d = daemon::Xenithd::start_in(XENITHD, dir, &[]);
        let c = RpcClient::connect(&d.socket).await.unwrap();
        let back = ok(&c, "vdi.list", json!({})).await;
        let restart = t0.elapsed();
        assert!(back.as_array().unwrap().len() >= s.many + s.concurrent);
        println!(
            "| xenithd restart with ~{records} VDI records, until vdi.list answers them all | {:.0} ms | < 1 s | {} |",
            ms(restart),
            verdict(full, restart < Duration::from_secs(1))
        );
    });
}
