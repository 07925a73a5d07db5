//! The xenbus vocabulary: device states (xen/include/public/io/xenbus.h)
//! and the kinds of split device xenith drives.

use std::fmt;

/// xenbus states (xen/include/public/io/xenbus.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum XenbusState {
    Unknown = 0,
    Initialising = 1,
    InitWait = 2,
    Initialised = 3,
    Connected = 4,
    Closing = 5,
    Closed = 6,
    Reconfiguring = 7,
    Reconfigured = 8,
}

impl XenbusState {
    /// A `state` node's value ("4"); anything else is Unknown.
    pub fn parse(s: &str) -> XenbusState {
        match s.trim() {
            "1" => Self::Initialising,
            "2" => Self::InitWait,
            "3" => Self::Initialised,
            "4" => Self::Connected,
            "5" => Self::Closing,
            "6" => Self::Closed,
            "7" => Self::Reconfiguring,
            "8" => Self::Reconfigured,
            _ => Self::Unknown,
        }
    }

    /// The name `vm.get` reports (CONTRACT.md: the state name of the backend).
    pub fn name(self) -> &'static str {
        match self {
            Self::Unknown => "Unknown",
            Self::Initialising => "Initialising",
            Self::InitWait => "InitWait",
            Self::Initialised => "Initialised",
            Self::Connected => "Connected",
            Self::Closing => "Closing",
            Self::Closed => "Closed",
            Self::Reconfiguring => "Reconfiguring",
            Self::Reconfigured => "Reconfigured",
        }
    }

    /// The value a `state` node holds ("4").
    pub fn value(self) -> &'static str {
        match self {
            Self::Unknown => "0",
            Self::Initialising => "1",
            Self::InitWait => "2",
            Self::Initialised => "3",
            Self::Connected => "4",
            Self::Closing => "5",
            Self::Closed => "6",
            Self::Reconfiguring => "7",
            Self::Reconfigured => "8",
        }
    }
}

impl fmt::Display for XenbusState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A kind of split device, as its xenstore directories name it
/// (`backend/vbd/...`, `device/vif/...`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    /// A virtual block device (blkback / blkfront).
    Vbd,
    /// A virtual network interface (netback / netfront).
    Vif,
}

impl DeviceKind {
    pub const ALL: [DeviceKind; 2] = [DeviceKind::Vbd, DeviceKind::Vif];

    /// The directory name ("vbd", "vif").
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Vbd => "vbd",
            DeviceKind::Vif => "vif",
        }
    }

    pub fn parse(s: &str) -> Option<DeviceKind> {
        match s {
            "vbd" => Some(DeviceKind::Vbd),
            "vif" => Some(DeviceKind::Vif),
            _ => None,
        }
    }
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_their_values() {
        for n in 0u8..=8 {
            let s = XenbusState::parse(&n.to_string());
            assert_eq!(s.value(), n.to_string());
            assert_eq!(s as u8, n);
        }
        assert_eq!(XenbusState::parse(" 4\n"), XenbusState::Connected);
        assert_eq!(XenbusState::parse("x"), XenbusState::Unknown);
    }

    #[test]
    fn kinds_parse_their_names() {
        for k in DeviceKind::ALL {
            assert_eq!(DeviceKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(DeviceKind::parse("console"), None);
    }
}
