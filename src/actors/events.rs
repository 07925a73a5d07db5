//! The event bus: what `event.subscribe` streams. Actors publish changes
//! (a VM's state, a device's xenbus state, a supervisor's child exiting or
//! restarting, the host's free memory); each event gets the next sequence
//! number. Publishing never waits: the bus is a bounded broadcast ring, and
//! a subscriber that falls behind loses the oldest events and is told how
//! many (it can then re-read the state it cares about).
//!
//! The bus is passed explicitly to whoever publishes (no global registry).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::broadcast;

/// How many events a subscriber may fall behind before it loses some, by
/// default (`[rpc] event_backlog`).
pub const BUS_CAPACITY: usize = 4096;

/// What an event is about (CONTRACT.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventClass {
    Vm,
    Vbd,
    Vif,
    Supervisor,
    Host,
    /// A task (a long operation): its status and progress.
    Task,
    /// A storage repository.
    Sr,
    /// A virtual disk image.
    Vdi,
}

impl EventClass {
    pub const ALL: [EventClass; 8] = [
        EventClass::Vm,
        EventClass::Vbd,
        EventClass::Vif,
        EventClass::Supervisor,
        EventClass::Host,
        EventClass::Task,
        EventClass::Sr,
        EventClass::Vdi,
    ];
}

/// What happened to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Add,
    Mod,
    Del,
}

/// One event, as `[2, "event", [event]]` carries it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub seq: u64,
    pub class: EventClass,
    /// A VM's uuid; "<vm uuid>/<device>" for a device; "<supervisor>/<child>"
    /// for a supervisor's child; the hostname for the host.
    pub id: String,
    pub kind: EventKind,
    /// The object's state after the change (its fields depend on the class).
    pub snapshot: serde_json::Value,
}

#[derive(Debug)]
struct Inner {
    next_seq: u64,
    tx: broadcast::Sender<Arc<Event>>,
}

/// The bus; cheap to clone.
#[derive(Debug, Clone)]
pub struct EventBus {
    inner: Arc<Mutex<Inner>>,
    /// Subscribers outside the daemon (RPC clients). With none, nothing is
    /// published at all, so an idle bus costs nothing.
    external: Arc<AtomicUsize>,
}

/// An outside subscriber's receiver; counted while it lives.
#[derive(Debug)]
pub struct Subscription {
    pub rx: broadcast::Receiver<Arc<Event>>,
    external: Arc<AtomicUsize>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.external.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new(BUS_CAPACITY)
    }
}

impl EventBus {
    /// A bus whose subscribers may fall `backlog` events behind.
    pub fn new(backlog: usize) -> Self {
        let (tx, _) = broadcast::channel(backlog.max(1));
        Self {
            inner: Arc::new(Mutex::new(Inner { next_seq: 1, tx })),
            external: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Publishes an event; `snapshot` is only built when somebody listens.
    /// The lock covers numbering and enqueueing, so that sequence numbers
    /// arrive in order; it never waits for a subscriber.
    pub fn publish<S: Serialize>(
        &self,
        class: EventClass,
        id: impl Into<String>,
        kind: EventKind,
        snapshot: impl FnOnce() -> S,
    ) {
        if self.external.load(Ordering::SeqCst) == 0 {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let snapshot = serde_json::to_value(snapshot()).unwrap_or(serde_json::Value::Null);
        let event = Event {
            seq: inner.next_seq,
            class,
            id: id.into(),
            kind,
            snapshot,
        };
        inner.next_seq += 1;
        let _ = inner.tx.send(Arc::new(event));
    }

    /// A new outside subscriber: events published from now on.
    pub fn subscribe(&self) -> Subscription {
        self.external.fetch_add(1, Ordering::SeqCst);
        Subscription {
            rx: self.subscribe_internal(),
            external: self.external.clone(),
        }
    }

    /// A subscriber inside the daemon (the host actor follows VM events to
    /// publish the host's): it sees events only while an outside
    /// subscriber makes the bus publish.
    pub fn subscribe_internal(&self) -> broadcast::Receiver<Arc<Event>> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .tx
            .subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_numbered_in_order_and_a_laggard_learns_how_many_it_lost() {
        let bus = EventBus::default();
        // Nobody listens: nothing is built or numbered.
        bus.publish(EventClass::Vm, "a", EventKind::Add, || -> u32 {
            panic!("built for nobody")
        });
        let internal = bus.subscribe_internal();
        bus.publish(EventClass::Vm, "a", EventKind::Add, || -> u32 {
            panic!("built for the daemon alone")
        });
        let mut sub = bus.subscribe();
        let rx = &mut sub.rx;
        for i in 0..(BUS_CAPACITY + 10) {
            bus.publish(EventClass::Host, "h", EventKind::Mod, || i);
        }
        match rx.try_recv() {
            Err(broadcast::error::TryRecvError::Lagged(n)) => assert_eq!(n, 10),
            other => panic!("{other:?}"),
        }
        let first = rx.try_recv().unwrap();
        assert_eq!(
            (first.seq, first.snapshot.clone()),
            (11, serde_json::json!(10))
        );
        drop(sub);
        drop(internal);
        assert_eq!(bus.external.load(Ordering::SeqCst), 0);
    }
}
