//! A VM's device states, as its backend actors last set them, and where
//! their changes are told.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::watch;

use crate::actors::events::{EventBus, EventClass, EventKind};
use crate::drivers::DomId;
use crate::xs::{DeviceKind, XenbusState};

/// A VM's device states as its backend actors last set them, by device:
/// what `vm.get` reports, without a xenstore round trip.
#[derive(Debug, Clone, Default)]
pub struct DeviceStates(Arc<watch::Sender<HashMap<(DeviceKind, String), XenbusState>>>);

impl DeviceStates {
    pub fn set(&self, kind: DeviceKind, name: &str, state: XenbusState) {
        self.0.send_modify(|m| {
            m.insert((kind, name.to_owned()), state);
        });
    }

    /// Sets a state unless the device's actor already did.
    fn set_if_absent(&self, kind: DeviceKind, name: &str, state: XenbusState) {
        self.0.send_if_modified(|m| {
            let key = (kind, name.to_owned());
            let absent = !m.contains_key(&key);
            if absent {
                m.insert(key, state);
            }
            absent
        });
    }

    fn remove(&self, kind: DeviceKind, name: &str) {
        self.0
            .send_if_modified(|m| m.remove(&(kind, name.to_owned())).is_some());
    }

    /// Waits until the device's state is `want`, at most `timeout`; returns
    /// the state it has then (`want`, or where it stopped).
    pub async fn wait_for(
        &self,
        kind: DeviceKind,
        name: &str,
        want: XenbusState,
        timeout: std::time::Duration,
    ) -> XenbusState {
        let key = (kind, name.to_owned());
        let mut rx = self.0.subscribe();
        let reached = tokio::time::timeout(timeout, async {
            rx.wait_for(|m| m.get(&key) == Some(&want)).await.is_ok()
        })
        .await;
        match reached {
            Ok(true) => want,
            _ => self.get(kind, name),
        }
    }

    /// The device's state (Unknown when no actor set one).
    pub fn get(&self, kind: DeviceKind, name: &str) -> XenbusState {
        self.0
            .borrow()
            .get(&(kind, name.to_owned()))
            .copied()
            .unwrap_or(XenbusState::Unknown)
    }
}

/// Where a backend tells its state changes: the bus (class vbd/vif,
/// `event.subscribe`) and its VM's [`DeviceStates`].
#[derive(Debug, Clone)]
pub struct DeviceEvents {
    pub bus: EventBus,
    pub vm: uuid::Uuid,
    pub domid: DomId,
    pub states: DeviceStates,
}

impl DeviceEvents {
    /// The event class and id of a device.
    pub fn class_and_id(&self, kind: DeviceKind, name: &str) -> (EventClass, String) {
        let class = match kind {
            DeviceKind::Vbd => EventClass::Vbd,
            DeviceKind::Vif => EventClass::Vif,
        };
        (class, format!("{}/{name}", self.vm))
    }

    /// Publishes a device's change. A plug (add) does not overwrite a
    /// state its actor has set already; a removal (del) forgets the device.
    pub fn tell(&self, kind: DeviceKind, name: &str, what: EventKind, state: XenbusState) {
        match what {
            EventKind::Add => self.states.set_if_absent(kind, name, state),
            EventKind::Del => self.states.remove(kind, name),
            EventKind::Mod => self.states.set(kind, name, state),
        }
        let (class, id) = self.class_and_id(kind, name);
        self.bus.publish(class, id, what, || {
            serde_json::json!({
                "vm": self.vm.to_string(),
                "device": name,
                "domid": self.domid.0,
                "state": state.name(),
            })
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_states_keep_what_the_actor_set() {
        let (vbd, vif) = (DeviceKind::Vbd, DeviceKind::Vif);
        let states = DeviceStates::default();
        let events = DeviceEvents {
            bus: EventBus::new(16),
            vm: uuid::Uuid::nil(),
            domid: DomId(1),
            states: states.clone(),
        };
        assert_eq!(states.get(vbd, "xvda"), XenbusState::Unknown);
        // The actor re-synced to Connected before its plug was told.
        states.set(vbd, "xvda", XenbusState::Connected);
        events.tell(vbd, "xvda", EventKind::Add, XenbusState::InitWait);
        assert_eq!(states.get(vbd, "xvda"), XenbusState::Connected);
        events.tell(vif, "0", EventKind::Add, XenbusState::InitWait);
        assert_eq!(states.get(vif, "0"), XenbusState::InitWait);
        events.tell(vif, "0", EventKind::Mod, XenbusState::Connected);
        assert_eq!(states.get(vif, "0"), XenbusState::Connected);
        events.tell(vbd, "xvda", EventKind::Del, XenbusState::Closed);
        assert_eq!(states.get(vbd, "xvda"), XenbusState::Unknown);
        assert_eq!(states.get(vif, "0"), XenbusState::Connected);
    }
}
