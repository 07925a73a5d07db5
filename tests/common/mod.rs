//! Test actors for the supervision tests and benchmarks.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use actix::prelude::*;
use xenith::actors::supervisor::{ChildSpec, ExitSlot, StartError, SupervisorHandle};

pub mod daemon;
pub mod rpc;
pub mod world;
pub mod xenstored;

/// Every worker instance gets a unique number, so a restart is visible.
static INSTANCES: AtomicU64 = AtomicU64::new(1);

/// Marker in the message of every panic these tests cause on purpose.
pub const INJECTED: &str = "injected panic";

/// Keeps the output readable: panics the tests cause on purpose are not
/// printed; every other panic (a failing assertion) still is.
pub fn quiet_injected_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            if !msg.contains(INJECTED) {
                default(info);
            }
        }));
    });
}

pub type Log = Arc<Mutex<Vec<String>>>;

pub fn new_log() -> Log {
    Arc::new(Mutex::new(Vec::new()))
}

pub fn entries(log: &Log) -> Vec<String> {
    log.lock().unwrap().clone()
}

/// How a test worker behaves when asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStop {
    Comply,
    /// Refuses to stop (returns `Running::Continue`): must be dropped by force.
    Refuse,
}

pub struct Worker {
    pub name: String,
    pub instance: u64,
    pub log: Log,
    pub exit: ExitSlot,
    pub on_stop: OnStop,
}

impl Actor for Worker {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Context<Self>) {
        self.log
            .lock()
            .unwrap()
            .push(format!("start {}", self.name));
    }

    fn stopping(&mut self, _ctx: &mut Context<Self>) -> Running {
        match self.on_stop {
            OnStop::Comply => Running::Stop,
            OnStop::Refuse => Running::Continue,
        }
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.log.lock().unwrap().push(format!("stop {}", self.name));
    }
}

/// Answers with the instance number.
#[derive(Message)]
#[rtype(result = "u64")]
pub struct Ping;

impl Handler<Ping> for Worker {
    type Result = u64;
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) -> u64 {
        self.instance
    }
}

/// Makes the handler panic.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Panic;

impl Handler<Panic> for Worker {
    type Result = ();
    fn handle(&mut self, _: Panic, _: &mut Context<Self>) {
        panic!("{INJECTED} in {}", self.name);
    }
}

/// Stops the worker, with an error reason or normally.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Exit(pub Option<String>);

impl Handler<Exit> for Worker {
    type Result = ();
    fn handle(&mut self, Exit(error): Exit, ctx: &mut Context<Self>) {
        if let Some(e) = error {
            self.exit.error(e);
        }
        ctx.stop();
    }
}

/// Blocks the actor's mailbox forever (an async hang, not a blocked thread).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Hang;

impl Handler<Hang> for Worker {
    type Result = ();
    fn handle(&mut self, _: Hang, ctx: &mut Context<Self>) {
        ctx.wait(actix::fut::wrap_future(std::future::pending::<()>()));
    }
}

pub fn worker(name: &str, log: &Log) -> ChildSpec {
    worker_with(name, log, OnStop::Comply)
}

pub fn worker_with(name: &str, log: &Log, on_stop: OnStop) -> ChildSpec {
    let log = log.clone();
    let name_owned = name.to_owned();
    ChildSpec::worker(name, move |exit| {
        Ok(Worker {
            name: name_owned.clone(),
            instance: INSTANCES.fetch_add(1, Ordering::Relaxed),
            log: log.clone(),
            exit,
            on_stop,
        })
    })
}

/// A worker whose start function fails.
pub fn failing(name: &str) -> ChildSpec {
    ChildSpec::worker::<Worker, _>(name, |_| Err(StartError::new("no disk for you")))
}

/// The worker's current address, waiting (bounded) for a restart to finish.
pub async fn addr_of(sup: &SupervisorHandle, id: &str) -> Addr<Worker> {
    for _ in 0..2000 {
        if let Some(addr) = sup.child::<Worker>(id).await.unwrap() {
            return addr;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("child {id} did not come back");
}

/// The instance number of the worker now running as `id`.
pub async fn instance(sup: &SupervisorHandle, id: &str) -> u64 {
    addr_of(sup, id).await.send(Ping).await.unwrap()
}

/// Waits (bounded) until `f` holds for the supervisor's tree.
pub async fn eventually<F: Fn(&xenith::actors::supervisor::TreeNode) -> bool>(
    sup: &SupervisorHandle,
    what: &str,
    f: F,
) -> xenith::actors::supervisor::TreeNode {
    let mut last = None;
    for _ in 0..2000 {
        let tree = sup.tree().await.unwrap();
        if f(&tree) {
            return tree;
        }
        last = Some(tree);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("never became true: {what}; last tree: {last:#?}");
}
