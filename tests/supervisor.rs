//! The supervision tree's properties: strategies, restart types, intensity
//! escalation, panic isolation, ordered start and shutdown, dynamic children.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Arbiter;
use common::*;
use xenith::actors::supervisor::{
    ChildKind, ChildSpec, ExitReason, Restart, RootSupervisor, Shutdown, Strategy, SupervisorError,
    SupervisorFlags,
};

fn flags(strategy: Strategy, max: u32) -> SupervisorFlags {
    SupervisorFlags::new(strategy, max, Duration::from_secs(60))
}

async fn three(strategy: Strategy, log: &Log) -> RootSupervisor {
    RootSupervisor::start(
        "root",
        flags(strategy, 10),
        vec![worker("a", log), worker("b", log), worker("c", log)],
    )
    .await
    .unwrap()
}

async fn instances(root: &RootSupervisor) -> [u64; 3] {
    let h = root.handle();
    [
        instance(&h, "a").await,
        instance(&h, "b").await,
        instance(&h, "c").await,
    ]
}

async fn panic_child(root: &RootSupervisor, id: &str) {
    let addr = addr_of(&root.handle(), id).await;
    // The panicking handler never answers: its sender sees a mailbox error.
    assert!(addr.send(Panic).await.is_err());
}

#[actix::test]
async fn one_for_one_restarts_only_the_failed_child() {
    quiet_injected_panics();
    let log = new_log();
    let root = three(Strategy::OneForOne, &log).await;
    let before = instances(&root).await;
    panic_child(&root, "b").await;
    let tree = eventually(&root.handle(), "b restarted", |t| {
        t.find(&["b"]).unwrap().restarts == 1
    })
    .await;
    let after = instances(&root).await;
    assert_eq!(after[0], before[0]);
    assert_ne!(after[1], before[1]);
    assert_eq!(after[2], before[2]);
    let b = tree.find(&["b"]).unwrap();
    assert_eq!(b.last_exit.as_deref(), Some("panic: injected panic in b"));
    assert_eq!(b.state, "running");
    assert_eq!(tree.find(&["a"]).unwrap().restarts, 0);
    assert_eq!(tree.find(&["c"]).unwrap().restarts, 0);
    // The panicked incarnation's stopped() ran.
    assert_eq!(entries(&log).iter().filter(|e| *e == "stop b").count(), 1);
    assert_eq!(root.shutdown().await, ExitReason::Shutdown);
}

#[actix::test]
async fn one_for_all_restarts_every_child_in_order() {
    quiet_injected_panics();
    let log = new_log();
    let root = three(Strategy::OneForAll, &log).await;
    let before = instances(&root).await;
    log.lock().unwrap().clear();
    panic_child(&root, "b").await;
    let tree = eventually(&root.handle(), "all restarted", |t| {
        t.children
            .iter()
            .all(|c| c.restarts == 1 && c.state == "running")
    })
    .await;
    let after = instances(&root).await;
    for i in 0..3 {
        assert_ne!(after[i], before[i], "child {i} not restarted");
    }
    // b died; the others were stopped in reverse order, then all started in order.
    assert_eq!(
        entries(&log),
        ["stop b", "stop c", "stop a", "start a", "start b", "start c"]
    );
    assert_eq!(
        tree.find(&["a"]).unwrap().last_exit.as_deref(),
        Some("shutdown")
    );
    root.shutdown().await;
}

#[actix::test]
async fn rest_for_one_restarts_the_child_and_those_after_it() {
    quiet_injected_panics();
    let log = new_log();
    let root = three(Strategy::RestForOne, &log).await;
    let before = instances(&root).await;
    log.lock().unwrap().clear();
    panic_child(&root, "b").await;
    eventually(&root.handle(), "b and c restarted", |t| {
        t.find(&["b"]).unwrap().restarts == 1 && t.find(&["c"]).unwrap().restarts == 1
    })
    .await;
    let after = instances(&root).await;
    assert_eq!(after[0], before[0]);
    assert_ne!(after[1], before[1]);
    assert_ne!(after[2], before[2]);
    assert_eq!(entries(&log), ["stop b", "stop c", "start b", "start c"]);
    root.shutdown().await;
}

#[actix::test]
async fn restart_types_decide_after_normal_and_abnormal_exits() {
    quiet_injected_panics();
    let log = new_log();
    let root = RootSupervisor::start(
        "root",
        flags(Strategy::OneForOne, 10),
        vec![
            worker("perm", &log).restart(Restart::Permanent),
            worker("trans-normal", &log).restart(Restart::Transient),
            worker("trans-error", &log).restart(Restart::Transient),
            worker("temp", &log).restart(Restart::Temporary),
        ],
    )
    .await
    .unwrap();
    let h = root.handle();
    addr_of(&h, "perm").await.send(Exit(None)).await.unwrap();
    addr_of(&h, "trans-normal")
        .await
        .send(Exit(None))
        .await
        .unwrap();
    addr_of(&h, "trans-error")
        .await
        .send(Exit(Some("disk gone".into())))
        .await
        .unwrap();
    assert!(addr_of(&h, "temp").await.send(Panic).await.is_err());
    let tree = eventually(&h, "exits handled", |t| {
        t.find(&["perm"]).is_some_and(|c| c.restarts == 1)
            && t.find(&["trans-error"]).is_some_and(|c| c.restarts == 1)
            && t.find(&["trans-normal"])
                .is_some_and(|c| c.state == "stopped")
            && t.find(&["temp"]).is_none()
    })
    .await;
    // Permanent: restarted after a normal exit.
    assert_eq!(
        tree.find(&["perm"]).unwrap().last_exit.as_deref(),
        Some("normal")
    );
    // Transient: not restarted after a normal exit, restarted after an error.
    assert_eq!(tree.find(&["trans-normal"]).unwrap().restarts, 0);
    assert_eq!(
        tree.find(&["trans-error"]).unwrap().last_exit.as_deref(),
        Some("error: disk gone")
    );
    // Temporary: never restarted, and forgotten.
    let count = h.count().await.unwrap();
    assert_eq!((count.specs, count.active), (3, 2));
    root.shutdown().await;
}

#[actix::test]
async fn intensity_escalates_through_two_levels() {
    quiet_injected_panics();
    let log = new_log();
    // root allows 1 restart; mid allows 2.
    let mid = ChildSpec::supervisor(
        "mid",
        flags(Strategy::OneForOne, 2),
        vec![worker("w", &log), worker("w2", &log)],
    );
    let root = RootSupervisor::start(
        "root",
        flags(Strategy::OneForOne, 1),
        vec![worker("first", &log), mid, worker("last", &log)],
    )
    .await
    .unwrap();
    let h = root.handle();
    let crash_w = || async {
        let mid = h.child_supervisor("mid").await.unwrap().expect("mid runs");
        let w = addr_of(&mid, "w").await;
        assert!(w.send(Panic).await.is_err());
    };
    // Two crashes: mid restarts w twice, within its intensity.
    for n in 1..=2 {
        crash_w().await;
        eventually(&h, "w restarted", |t| {
            t.find(&["mid", "w"]).unwrap().restarts == n
        })
        .await;
    }
    assert_eq!(h.tree().await.unwrap().find(&["mid"]).unwrap().restarts, 0);
    // Third: mid gives up, stops w2 and w (reverse order), exits with an error; root restarts it.
    log.lock().unwrap().clear();
    crash_w().await;
    let tree = eventually(&h, "mid restarted", |t| {
        t.find(&["mid"])
            .is_some_and(|m| m.restarts == 1 && m.state == "running")
    })
    .await;
    let mid_node = tree.find(&["mid"]).unwrap();
    assert!(
        mid_node
            .last_exit
            .as_deref()
            .unwrap()
            .contains("reached maximum restart intensity"),
        "{mid_node:?}"
    );
    // A fresh mid: its children start from zero restarts.
    assert_eq!(mid_node.find(&["w"]).unwrap().restarts, 0);
    assert_eq!(entries(&log), ["stop w", "stop w2", "start w", "start w2"]);
    // Siblings at the root level are untouched.
    assert_eq!(tree.find(&["first"]).unwrap().restarts, 0);
    assert_eq!(tree.find(&["last"]).unwrap().restarts, 0);
    // Three more crashes: mid gives up again; that is root's second restart: root gives up.
    for _ in 0..3 {
        crash_w().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let reason = tokio::time::timeout(Duration::from_secs(10), root.wait_exit())
        .await
        .unwrap();
    match reason {
        ExitReason::Error(e) => {
            assert!(e.contains("reached maximum restart intensity"), "{e}");
            assert!(e.contains("child mid exited"), "{e}");
        }
        other => panic!("root ended with {other:?}"),
    }
    // Root stopped its remaining children in reverse order.
    let log = entries(&log);
    let tail: Vec<&str> = log.iter().rev().take(2).map(String::as_str).collect();
    assert_eq!(tail, ["stop first", "stop last"]);
}

#[actix::test]
async fn a_child_panicking_1000_times_does_not_disturb_its_sibling() {
    quiet_injected_panics();
    let log = new_log();
    let root = RootSupervisor::start(
        "root",
        SupervisorFlags::new(Strategy::OneForOne, 5000, Duration::from_secs(60)),
        vec![worker("crasher", &log), worker("steady", &log)],
    )
    .await
    .unwrap();
    let h = root.handle();
    let steady = addr_of(&h, "steady").await;
    let steady_instance = steady.send(Ping).await.unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let pinger = {
        let (done, answered, steady) = (done.clone(), answered.clone(), steady.clone());
        actix::spawn(async move {
            let mut sent = 0u64;
            while !done.load(Ordering::Relaxed) {
                sent += 1;
                assert_eq!(steady.send(Ping).await.unwrap(), steady_instance);
                answered.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
            sent
        })
    };
    let mut last = 0;
    for _ in 0..1000 {
        let addr = addr_of(&h, "crasher").await;
        let instance = addr.send(Ping).await.unwrap();
        assert_ne!(instance, last);
        last = instance;
        assert!(addr.send(Panic).await.is_err());
    }
    let tree = eventually(&h, "1000 restarts", |t| {
        t.find(&["crasher"]).unwrap().restarts == 1000
    })
    .await;
    done.store(true, Ordering::Relaxed);
    let sent = pinger.await.unwrap();
    assert_eq!(
        answered.load(Ordering::Relaxed),
        sent,
        "every message to the sibling was answered"
    );
    assert!(
        sent > 1000,
        "the sibling was exercised meanwhile ({sent} messages)"
    );
    assert_eq!(tree.find(&["steady"]).unwrap().restarts, 0);
    assert_eq!(steady.send(Ping).await.unwrap(), steady_instance);
    root.shutdown().await;
}

#[actix::test]
async fn shutdown_is_in_reverse_order_and_forces_a_stubborn_child() {
    let log = new_log();
    let root = RootSupervisor::start(
        "root",
        flags(Strategy::OneForOne, 10),
        vec![
            worker("a", &log),
            worker_with("stubborn", &log, OnStop::Refuse)
                .shutdown(Shutdown::Timeout(Duration::from_millis(300))),
            worker("c", &log),
        ],
    )
    .await
    .unwrap();
    assert_eq!(entries(&log), ["start a", "start stubborn", "start c"]);
    let t0 = Instant::now();
    assert_eq!(root.shutdown().await, ExitReason::Shutdown);
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "stubborn child given its timeout ({took:?})"
    );
    assert!(took < Duration::from_secs(3), "then killed ({took:?})");
    // c stopped first, a last; the stubborn one never agreed to stop, so it was
    // dropped without its stopped() running.
    assert_eq!(
        entries(&log),
        ["start a", "start stubborn", "start c", "stop c", "stop a"]
    );
}

#[actix::test]
async fn a_hung_child_stops_its_own_messages_only_and_still_shuts_down() {
    let log = new_log();
    let root = RootSupervisor::start(
        "root",
        flags(Strategy::OneForOne, 10),
        vec![worker("hung", &log), worker("fine", &log)],
    )
    .await
    .unwrap();
    let h = root.handle();
    let hung = addr_of(&h, "hung").await;
    hung.do_send(Hang);
    let ping = tokio::time::timeout(Duration::from_millis(100), hung.send(Ping)).await;
    assert!(ping.is_err(), "a hung actor does not answer");
    addr_of(&h, "fine").await.send(Ping).await.unwrap();
    // actix abandons a pending `ctx.wait` when the actor is asked to stop.
    let t0 = Instant::now();
    assert_eq!(root.shutdown().await, ExitReason::Shutdown);
    assert!(t0.elapsed() < Duration::from_secs(1));
    assert_eq!(entries(&log)[2..], ["stop fine", "stop hung"]);
}

#[actix::test]
async fn a_failed_start_fails_the_supervisor_with_the_reason_and_undoes_the_rest() {
    let log = new_log();
    let err = RootSupervisor::start(
        "root",
        flags(Strategy::OneForOne, 10),
        vec![
            worker("a", &log),
            worker("b", &log),
            failing("disk"),
            worker("c", &log),
        ],
    )
    .await
    .unwrap_err();
    let text = xenith::error::chain(&err);
    assert!(
        text.contains("child disk failed to start: no disk for you"),
        "{text}"
    );
    assert_eq!(entries(&log), ["start a", "start b", "stop b", "stop a"]);
}

#[actix::test]
async fn dynamic_children_come_and_go() {
    let log = new_log();
    let root = RootSupervisor::start("root", flags(Strategy::OneForOne, 10), vec![])
        .await
        .unwrap();
    let h = root.handle();
    for i in 0..50 {
        h.start_child(worker(&format!("vm-{i}"), &log))
            .await
            .unwrap();
    }
    assert!(matches!(
        h.start_child(worker("vm-3", &log)).await,
        Err(SupervisorError::AlreadyExists(id)) if id == "vm-3"
    ));
    assert!(matches!(
        h.start_child(failing("vm-bad")).await,
        Err(SupervisorError::StartFailed { id, .. }) if id == "vm-bad"
    ));
    h.remove_child("vm-7").await.unwrap();
    assert!(matches!(
        h.remove_child("vm-7").await,
        Err(SupervisorError::NotFound(_))
    ));
    let count = h.count().await.unwrap();
    assert_eq!((count.specs, count.active, count.workers), (49, 49, 49));
    assert!(entries(&log).contains(&"stop vm-7".to_owned()));
    root.shutdown().await;
    assert_eq!(entries(&log).last().map(String::as_str), Some("stop vm-0"));
}

#[actix::test]
async fn children_on_another_arbiter_are_supervised_too() {
    quiet_injected_panics();
    let log = new_log();
    let arbiter = Arbiter::new();
    let root = RootSupervisor::start(
        "root",
        flags(Strategy::OneForOne, 10),
        vec![
            worker("local", &log),
            ChildSpec::supervisor(
                "remote",
                flags(Strategy::OneForOne, 10),
                vec![worker("w", &log)],
            )
            .on_arbiter(arbiter.handle()),
        ],
    )
    .await
    .unwrap();
    let h = root.handle();
    let remote = h.child_supervisor("remote").await.unwrap().unwrap();
    let before = instance(&remote, "w").await;
    assert!(addr_of(&remote, "w").await.send(Panic).await.is_err());
    eventually(&remote, "w restarted", |t| {
        t.find(&["w"]).unwrap().restarts == 1
    })
    .await;
    assert_ne!(instance(&remote, "w").await, before);
    let tree = h.tree().await.unwrap();
    assert_eq!(tree.find(&["remote"]).unwrap().kind, ChildKind::Supervisor);
    assert_eq!(tree.find(&["remote", "w"]).unwrap().restarts, 1);
    assert_eq!(tree.total_restarts(), 1);
    root.shutdown().await;
    assert!(entries(&log).ends_with(&["stop w".to_owned(), "stop local".to_owned()]));
    arbiter.stop();
}

#[actix::test]
async fn a_failing_restart_is_retried_and_counts_against_intensity() {
    quiet_injected_panics();
    let log = new_log();
    let fail = Arc::new(AtomicBool::new(false));
    let flaky = {
        let (fail, log) = (fail.clone(), log.clone());
        ChildSpec::worker("flaky", move |exit| {
            if fail.load(Ordering::Relaxed) {
                return Err(xenith::actors::supervisor::StartError::new(
                    "backing store missing",
                ));
            }
            Ok(Worker {
                name: "flaky".into(),
                instance: 0,
                log: log.clone(),
                exit,
                on_stop: OnStop::Comply,
            })
        })
    };
    let root = RootSupervisor::start("root", flags(Strategy::OneForOne, 3), vec![flaky])
        .await
        .unwrap();
    fail.store(true, Ordering::Relaxed);
    assert!(addr_of(&root.handle(), "flaky")
        .await
        .send(Panic)
        .await
        .is_err());
    let reason = tokio::time::timeout(Duration::from_secs(5), root.wait_exit())
        .await
        .unwrap();
    let ExitReason::Error(text) = reason else {
        panic!("{reason:?}")
    };
    assert!(text.contains("could not restart flaky"), "{text}");
}
