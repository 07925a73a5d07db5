//! Supervision-tree benchmarks (issue: foundation).
//!
//! - `crash_to_replacement`: from a child's handler panicking to its
//!   replacement answering a message (goal: median under 100 µs).
//! - `one_actor`: messages per second through one actor, one at a time
//!   (request/reply) and pipelined.
//! - `supervisor_10k`: messages per second to the children of a supervisor
//!   with 10,000 children, directly and routed through the supervisor
//!   (look the child up by id, then message it).
//!
//! Run: `cargo bench --bench supervisor`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use actix::{Addr, System};
use common::{new_log, worker, Panic, Ping, Worker};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures_util::future::join_all;
use xenith::actors::supervisor::{RootSupervisor, Strategy, SupervisorFlags};

fn flags() -> SupervisorFlags {
    // A bench crashes its child many thousand times a second: never escalate.
    SupervisorFlags::new(Strategy::OneForOne, u32::MAX, Duration::from_secs(1))
}

/// A system running a root supervisor with one worker, `id`.
fn one_worker(id: &str) -> (actix::SystemRunner, RootSupervisor) {
    let sys = System::new();
    let root = sys
        .block_on(RootSupervisor::start(
            "root",
            flags(),
            vec![worker(id, &new_log())],
        ))
        .unwrap();
    (sys, root)
}

fn crash_to_replacement(c: &mut Criterion) {
    // Intentional panics, thousands of them: keep the output clean.
    std::panic::set_hook(Box::new(|_| {}));
    let (sys, root) = one_worker("victim");
    let h = root.handle();
    c.bench_function("crash_to_replacement", |b| {
        b.iter_custom(|iters| {
            sys.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let old = h.child::<Worker>("victim").await.unwrap().unwrap();
                    let t0 = Instant::now();
                    let _ = old.send(Panic).await; // the panic: its sender sees a mailbox error
                    let new: Addr<Worker> = loop {
                        // Until the supervisor has put the replacement in place.
                        if let Some(a) = h.child::<Worker>("victim").await.unwrap() {
                            if a.connected() {
                                break a;
                            }
                        }
                        tokio::task::yield_now().await;
                    };
                    new.send(Ping).await.unwrap();
                    total += t0.elapsed();
                }
                total
            })
        })
    });
    let _ = std::panic::take_hook();
    sys.block_on(root.shutdown());
}

fn one_actor(c: &mut Criterion) {
    let (sys, root) = one_worker("w");
    let addr = sys
        .block_on(root.handle().child::<Worker>("w"))
        .unwrap()
        .unwrap();
    let mut g = c.benchmark_group("one_actor");
    const N: u64 = 10_000;
    g.throughput(Throughput::Elements(N));
    g.bench_function("request_reply", |b| {
        b.iter(|| {
            sys.block_on(async {
                for _ in 0..N {
                    addr.send(Ping).await.unwrap();
                }
            })
        })
    });
    g.bench_function("pipelined", |b| {
        b.iter(|| {
            sys.block_on(async {
                let replies = join_all((0..N).map(|_| addr.send(Ping))).await;
                assert!(replies.iter().all(Result::is_ok));
            })
        })
    });
    g.finish();
    sys.block_on(root.shutdown());
}

fn supervisor_10k(c: &mut Criterion) {
    const CHILDREN: usize = 10_000;
    let sys = System::new();
    let log = new_log();
    let root = sys
        .block_on(RootSupervisor::start("root", flags(), vec![]))
        .unwrap();
    let h = root.handle();
    let addrs: Vec<Addr<Worker>> = sys.block_on(async {
        for i in 0..CHILDREN {
            h.start_child(worker(&format!("vm-{i}"), &log))
                .await
                .unwrap();
        }
        let mut addrs = Vec::with_capacity(CHILDREN);
        for i in 0..CHILDREN {
            addrs.push(h.child::<Worker>(format!("vm-{i}")).await.unwrap().unwrap());
        }
        addrs
    });
    let ids: Vec<String> = (0..CHILDREN).map(|i| format!("vm-{i}")).collect();
    let mut g = c.benchmark_group("supervisor_10k");
    g.throughput(Throughput::Elements(CHILDREN as u64));
    g.sample_size(20);
    g.bench_with_input(BenchmarkId::new("direct", CHILDREN), &addrs, |b, addrs| {
        b.iter(|| {
            sys.block_on(async {
                let replies = join_all(addrs.iter().map(|a| a.send(Ping))).await;
                assert!(replies.iter().all(Result::is_ok));
            })
        })
    });
    g.bench_with_input(
        BenchmarkId::new("routed_by_id", CHILDREN),
        &ids,
        |b, ids| {
            b.iter(|| {
                sys.block_on(async {
                    let replies = join_all(ids.iter().map(|id| {
                        let h = h.clone();
                        async move {
                            h.child::<Worker>(id.as_str())
                                .await
                                .unwrap()
                                .unwrap()
                                .send(Ping)
                                .await
                        }
                    }))
                    .await;
                    assert!(replies.iter().all(Result::is_ok));
                })
            })
        },
    );
    g.finish();
    sys.block_on(root.shutdown());
}

criterion_group!(benches, crash_to_replacement, one_actor, supervisor_10k);
criterion_main!(benches);
