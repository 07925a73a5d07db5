//! The ids of a VM's actors under its own supervisor: the domain actor,
//! and while its domain runs the console, the guest-agent channel, the
//! emulator (HVM) and one backend per device ("vbd:xvda", "vif:0").

use std::fmt;

use actix::{Actor, Addr, Context, Handler};

use super::supervisor::SupervisorHandle;
use super::InjectPanic;
use crate::xs::DeviceKind;

/// A VM actor's id in its VM's supervisor.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChildId {
    Domain,
    Console,
    Agent,
    Emulator,
    /// A device's backend: its kind and its name in the VM ("xvda", "0").
    Device(DeviceKind, String),
}

impl ChildId {
    pub const DOMAIN: &'static str = "domain";
    pub const CONSOLE: &'static str = "console";
    pub const AGENT: &'static str = "agent";
    pub const EMULATOR: &'static str = "emulator";

    /// Reads an id as [`Display`](fmt::Display) writes it.
    pub fn parse(s: &str) -> Option<ChildId> {
        Some(match s {
            Self::DOMAIN => ChildId::Domain,
            Self::CONSOLE => ChildId::Console,
            Self::AGENT => ChildId::Agent,
            Self::EMULATOR => ChildId::Emulator,
            _ => {
                let (kind, name) = s.split_once(':')?;
                if name.is_empty() {
                    return None;
                }
                ChildId::Device(DeviceKind::parse(kind)?, name.to_owned())
            }
        })
    }

    /// The device this id names, if it names one.
    pub fn device(&self) -> Option<(DeviceKind, &str)> {
        match self {
            ChildId::Device(kind, name) => Some((*kind, name)),
            _ => None,
        }
    }
}

impl fmt::Display for ChildId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChildId::Domain => f.write_str(Self::DOMAIN),
            ChildId::Console => f.write_str(Self::CONSOLE),
            ChildId::Agent => f.write_str(Self::AGENT),
            ChildId::Emulator => f.write_str(Self::EMULATOR),
            ChildId::Device(kind, name) => write!(f, "{kind}:{name}"),
        }
    }
}

/// A running actor of a VM, found under its VM's supervisor: what the
/// typed handles of the console, agent, emulator and backend actors wrap.
#[derive(Debug)]
pub struct ChildHandle<A: Actor> {
    addr: Addr<A>,
}

impl<A: Actor> Clone for ChildHandle<A> {
    fn clone(&self) -> Self {
        Self {
            addr: self.addr.clone(),
        }
    }
}

impl<A> ChildHandle<A>
where
    A: Actor<Context = Context<A>> + Handler<InjectPanic>,
{
    /// The actor `id` of a VM, if it runs (it runs only while the domain
    /// does; a supervisor that is gone has none).
    pub async fn find(vm_sup: &SupervisorHandle, id: &ChildId) -> Option<Self> {
        match vm_sup.child::<A>(id.to_string()).await {
            Ok(Some(addr)) => Some(ChildHandle { addr }),
            _ => None,
        }
    }

    /// Fault injection: the actor's handler panics (the send fails, which
    /// is the point). False when the incarnation this handle reached had
    /// stopped already: nothing was injected.
    pub async fn inject_panic(&self) -> bool {
        if !self.addr.connected() {
            return false;
        }
        let _ = self.addr.send(InjectPanic).await;
        true
    }

    pub(crate) fn addr(&self) -> &Addr<A> {
        &self.addr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_read_back_what_they_write() {
        for id in [
            ChildId::Domain,
            ChildId::Console,
            ChildId::Agent,
            ChildId::Emulator,
            ChildId::Device(DeviceKind::Vbd, "xvda".into()),
            ChildId::Device(DeviceKind::Vif, "0".into()),
        ] {
            assert_eq!(ChildId::parse(&id.to_string()), Some(id));
        }
        assert_eq!(ChildId::parse("vbd:"), None);
        assert_eq!(ChildId::parse("disk:xvda"), None);
        assert_eq!(ChildId::parse("vm"), None);
    }
}
