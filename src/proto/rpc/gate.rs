//! Who may hold a TLS connection before it has proven who it is: a cap on
//! connections not yet authenticated (a client certificate verified, or a
//! `session.login` accepted), overall and per peer address, and a
//! throttle on failed logins that holds across connections. An
//! unauthenticated connection also has a deadline to log in, a small
//! frame limit and a few requests (server.rs), and the listener keeps
//! descriptors free for the Unix socket (tls.rs).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Connections not yet authenticated, at most, from all peers.
pub const MAX_UNAUTHENTICATED: usize = 64;
/// ... and from one peer address.
pub const MAX_UNAUTHENTICATED_PER_PEER: usize = 8;
/// Failed logins from one address within [`FAILURE_WINDOW`] before its
/// logins are refused until the window has passed.
pub const MAX_FAILURES_PER_PEER: u32 = 10;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// How long a connection without a certificate has to log in.
pub const LOGIN_DEADLINE: Duration = Duration::from_secs(10);
/// The largest frame a connection may send before it is authenticated.
pub const PRE_LOGIN_MAX_FRAME: usize = 4096;
/// Requests a connection may send before it has logged in.
pub const PRE_LOGIN_MAX_REQUESTS: u32 = 16;

#[derive(Debug, Default)]
struct State {
    unauthenticated: usize,
    per_peer: HashMap<IpAddr, usize>,
    /// Failed logins by address: how many, since when.
    failures: HashMap<IpAddr, (u32, Instant)>,
}

/// The TLS listener's admission state, shared by its connections.
#[derive(Debug, Default)]
pub struct Gate {
    state: Mutex<State>,
}

/// An unauthenticated connection's place: given back when it is
/// authenticated or goes.
#[derive(Debug)]
pub struct Admission {
    gate: Arc<Gate>,
    peer: IpAddr,
    held: bool,
}

impl Gate {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for a new connection from `peer`, if the caps leave one.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Admission, &'static str> {
        let mut st = self.state();
        if st.unauthenticated >= MAX_UNAUTHENTICATED {
            return Err("too many connections that have not authenticated");
        }
        let mine = st.per_peer.entry(peer).or_default();
        if *mine >= MAX_UNAUTHENTICATED_PER_PEER {
            return Err("too many connections from this address that have not authenticated");
        }
        *mine += 1;
        st.unauthenticated += 1;
        Ok(Admission {
            gate: self.clone(),
            peer,
            held: true,
        })
    }

    /// Whether `peer` may try a login now (it has not failed too often).
    pub fn may_try(&self, peer: IpAddr) -> bool {
        let mut st = self.state();
        match st.failures.get(&peer) {
            Some((n, since)) if since.elapsed() < FAILURE_WINDOW => *n < MAX_FAILURES_PER_PEER,
            Some(_) => {
                st.failures.remove(&peer);
                true
            }
            None => true,
        }
    }

    /// A failed login from `peer` (counted across its connections).
    pub fn failed(&self, peer: IpAddr) {
        let mut st = self.state();
        let now = Instant::now();
        let entry = st.failures.entry(peer).or_insert((0, now));
        if entry.1.elapsed() >= FAILURE_WINDOW {
            *entry = (0, now);
        }
        entry.0 += 1;
        // Forget old addresses now and then: the map stays small.
        if st.failures.len() > 4096 {
            st.failures
                .retain(|_, (_, since)| since.elapsed() < FAILURE_WINDOW);
        }
    }

    #[cfg(test)]
    fn unauthenticated(&self) -> usize {
        self.state().unauthenticated
    }
}

impl Admission {
    /// The connection proved who it is: its place goes back.
    pub fn authenticated(&mut self) {
        if std::mem::take(&mut self.held) {
            let mut st = self.gate.state();
            st.unauthenticated = st.unauthenticated.saturating_sub(1);
            if let Some(n) = st.per_peer.get_mut(&self.peer) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    st.per_peer.remove(&self.peer);
                }
            }
        }
    }

    pub fn peer(&self) -> IpAddr {
        self.peer
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.authenticated();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unauthenticated_connections_are_capped_overall_and_per_peer() {
        let gate = Arc::new(Gate::default());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let mut held: Vec<Admission> = (0..MAX_UNAUTHENTICATED_PER_PEER)
            .map(|_| gate.admit(a).unwrap())
            .collect();
        assert!(gate.admit(a).is_err(), "per peer");
        // One authenticates: its place goes back.
        held[0].authenticated();
        let again = gate.admit(a).unwrap();
        drop(again);
        for i in 0..(MAX_UNAUTHENTICATED - MAX_UNAUTHENTICATED_PER_PEER + 1) {
            let (hi, lo) = (
                u8::try_from(i / 200).unwrap(),
                u8::try_from(i % 200).unwrap(),
            );
            let peer = IpAddr::from([10, 1, hi, lo]);
            held.push(gate.admit(peer).unwrap());
        }
        assert!(gate.admit("10.9.9.9".parse().unwrap()).is_err(), "overall");
        drop(held);
        assert_eq!(gate.unauthenticated(), 0);
    }

    #[test]
    fn failed_logins_are_throttled_across_connections() {
        let gate = Gate::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..MAX_FAILURES_PER_PEER {
            assert!(gate.may_try(a));
            gate.failed(a);
        }
        assert!(!gate.may_try(a));
        assert!(
            gate.may_try("10.0.0.2".parse().unwrap()),
            "another address is not"
        );
    }
}
