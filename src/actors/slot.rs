//! Where a restartable actor's current address is found.
//!
//! A supervised actor gets a new `Addr` at each restart. Its start function
//! (or `started()`) publishes the new address in its slot; the typed handle
//! other actors hold reads the slot, so it always reaches the current
//! incarnation. Slots are created by whoever builds the tree and passed
//! explicitly: there is no global registry.

use std::fmt;
use std::sync::Arc;

use actix::{Actor, Addr};
use tokio::sync::watch;

/// The current address of one (restartable) actor.
pub struct AddrSlot<A: Actor> {
    tx: Arc<watch::Sender<Option<Addr<A>>>>,
}

impl<A: Actor> Clone for AddrSlot<A> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl<A: Actor> fmt::Debug for AddrSlot<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AddrSlot")
            .field("filled", &self.tx.borrow().is_some())
            .finish()
    }
}

impl<A: Actor> Default for AddrSlot<A> {
    fn default() -> Self {
        Self::new()
    }
}

impl<A: Actor> AddrSlot<A> {
    pub fn new() -> Self {
        Self {
            tx: Arc::new(watch::Sender::new(None)),
        }
    }

    /// Makes `addr` the current incarnation.
    pub fn publish(&self, addr: Addr<A>) {
        self.tx.send_replace(Some(addr));
    }

    /// The current address, if the actor has started and not been replaced
    /// by nothing (it may have stopped: sends then fail with a mailbox error).
    pub fn get(&self) -> Option<Addr<A>> {
        self.tx.borrow().clone()
    }

    /// The current incarnation, once one runs (an actor restarting after a
    /// panic publishes its next one), waiting at most `timeout`.
    pub async fn running(&self, timeout: std::time::Duration) -> Option<Addr<A>> {
        let mut rx = self.tx.subscribe();
        let found = tokio::time::timeout(timeout, async {
            loop {
                if let Some(addr) = rx.borrow_and_update().as_ref().filter(|a| a.connected()) {
                    return Some(addr.clone());
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await;
        found.ok().flatten()
    }
}
