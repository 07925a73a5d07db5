//! The guest-agent channel actor: watches what a running guest's agent
//! reports in xenstore (data/ and attr/ under its home, as xe-guest-utilities
//! and the Windows PV tools write them) and keeps the VM's guest metrics,
//! which `vm.get` shows.
//!
//! What the guest writes is untrusted: only known keys are read (the IPs
//! only of the VM's own NICs), values are cut to [`MAX_VALUE`] characters,
//! numbers that do not parse are ignored, and a guest that writes without
//! pause costs at most one refresh in flight and one queued.
//!
//! Transient: after a panic it is restarted alone and reads everything
//! again; the domain's teardown removes it and clears the metrics.

mod handlers;
mod state;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use state::AgentActor;

use crate::actors::child::ChildHandle;
use crate::drivers::xenstore::{XsClient, XsClientError};
use crate::drivers::DomId;
use crate::vm::layout;

/// The typed handle to a VM's running guest-agent actor.
pub type AgentHandle = ChildHandle<AgentActor>;

/// The longest value kept from a guest key.
pub const MAX_VALUE: usize = 256;

/// What the guest agent reports (empty when the VM does not run or has no agent).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestMetrics {
    /// Whether an agent has reported (data/updated exists).
    pub agent: bool,
    pub os_name: Option<String>,
    pub os_distro: Option<String>,
    /// "major.minor", when both are reported.
    pub os_version: Option<String>,
    pub os_uname: Option<String>,
    pub memory_total_kib: Option<u64>,
    pub memory_free_kib: Option<u64>,
    /// "0/ipv4/0" → address, as the agent reports under attr/vif.
    pub ips: BTreeMap<String, String>,
    /// data/updated, as the agent wrote it.
    pub updated: Option<String>,
}

fn cut(mut s: String) -> String {
    if s.len() > MAX_VALUE {
        let mut end = MAX_VALUE;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// Reads the agent's keys.
pub async fn read_metrics(
    xs: &XsClient,
    domid: DomId,
    nics: &[u32],
) -> Result<GuestMetrics, XsClientError> {
    let get = |key: String| {
        let xs = xs.clone();
        async move {
            match xs.read_opt(&key).await {
                Ok(v) => Ok(v.map(cut)),
                // Permission denied and the like: the guest made it unreadable.
                Err(XsClientError::Xs(_)) => Ok(None),
                Err(e) => Err(e),
            }
        }
    };
    let data = |k: &str| get(layout::guest_data(domid, k));
    let mut m = GuestMetrics {
        updated: data("updated").await?,
        os_name: data("os_name").await?,
        os_distro: data("os_distro").await?,
        os_uname: data("os_uname").await?,
        memory_total_kib: data("meminfo_total")
            .await?
            .and_then(|v| v.trim().parse().ok()),
        memory_free_kib: data("meminfo_free")
            .await?
            .and_then(|v| v.trim().parse().ok()),
        ..GuestMetrics::default()
    };
    m.agent = m.updated.is_some();
    if let (Some(major), Some(minor)) = (data("os_majorver").await?, data("os_minorver").await?) {
        m.os_version = Some(format!("{major}.{minor}"));
    }
    for devid in nics {
        for family in ["ipv4", "ipv6"] {
            let (path, key) = layout::guest_ip(domid, *devid, family);
            if let Some(ip) = get(path).await? {
                m.ips.insert(key, ip);
            }
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::cut;

    #[test]
    fn long_values_are_cut_on_a_char_boundary() {
        assert_eq!(cut("short".into()), "short");
        let long = "é".repeat(300);
        let c = cut(long);
        assert!(c.len() <= super::MAX_VALUE && c.chars().all(|ch| ch == 'é'));
    }
}
