//! The audit trail: one log line (target `xenith::audit`) per call that
//! changes something (a VM, a device, xenstore, a fault injected), naming
//! the method, the VM (name and uuid), the caller, the result and how long
//! it took. Reads (`vm.get`, `host.info`...) are not audited.

use std::fmt;
use std::net::SocketAddr;
use std::time::Instant;

use super::{ApiError, Call, Reply};
use crate::api::xs::XsCall;

/// Who made a call, as its transport knows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A peer on the Unix socket: its credentials (SO_PEERCRED).
    Unix { uid: u32, pid: Option<i32> },
    /// A TLS client: by its certificate (SHA-256 fingerprint) or, without
    /// one, by the token it logged in with (its line in the tokens file).
    Tls { peer: SocketAddr, identity: String },
    /// xenith itself.
    Internal,
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caller::Unix {
                uid,
                pid: Some(pid),
            } => write!(f, "uid {uid} (pid {pid})"),
            Caller::Unix { uid, pid: None } => write!(f, "uid {uid}"),
            Caller::Tls { peer, identity } => write!(f, "tls {peer} {identity}"),
            Caller::Internal => f.write_str("xenithd"),
        }
    }
}

/// The method a state-changing call was, and the VM it names (None for a
/// read, which is not audited).
pub fn audited(call: &Call) -> Option<(&'static str, Option<&str>)> {
    use super::DeviceChange as D;
    use super::VmOp as O;
    Some(match call {
        Call::VmCreate(spec) => ("vm.create", Some(spec.name.as_str())),
        Call::VmRemove(vm) => ("vm.remove", Some(vm)),
        Call::VmSuspend { vm, .. } => ("vm.suspend", Some(vm)),
        Call::VmResume { vm, .. } => ("vm.resume", Some(vm)),
        Call::VmOp(vm, op) => {
            let method = match op {
                O::Start { .. } => "vm.start",
                O::Shutdown { .. } => "vm.shutdown",
                O::Reboot { .. } => "vm.reboot",
                O::Pause => "vm.pause",
                O::Unpause => "vm.unpause",
                O::Kill => "vm.kill",
                O::SetMemoryTarget { .. } => "vm.set_memory_target",
            };
            (method, Some(vm))
        }
        Call::Device(vm, change) => {
            let method = match change {
                D::PlugDisk(..) => "vbd.plug",
                D::UnplugDisk(_) => "vbd.unplug",
                D::PlugNic(_) => "vif.plug",
                D::UnplugNic(_) => "vif.unplug",
            };
            (method, Some(vm))
        }
        Call::FaultInject { vm, .. } => ("fault.inject", Some(vm)),
        Call::Xs(XsCall::Write(..)) => ("xs.write", None),
        Call::Xs(XsCall::Rm(_)) => ("xs.rm", None),
        Call::Xs(XsCall::Mkdir(_)) => ("xs.mkdir", None),
        Call::Xs(XsCall::SetPerms(..)) => ("xs.setperms", None),
        Call::Storage(c) => (c.audited()?.0, None),
        Call::Async { call, .. } => return audited(call),
        _ => return None,
    })
}

/// A state-changing call under way: logged once it ends.
#[derive(Debug)]
pub struct Audit {
    method: &'static str,
    /// The VM's name and uuid, as known before the call.
    vm: Option<(String, String)>,
    /// The xenstore path, for `xs.*`.
    path: Option<String>,
    caller: Caller,
    t0: Instant,
}

impl Audit {
    pub fn begin(
        method: &'static str,
        vm: Option<(String, String)>,
        path: Option<String>,
        caller: &Caller,
    ) -> Self {
        Audit {
            method,
            vm,
            path,
            caller: caller.clone(),
            t0: Instant::now(),
        }
    }

    /// Logs the call with its result.
    pub fn end(self, result: &Result<Reply, ApiError>) {
        let duration_ms = u64::try_from(self.t0.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (name, mut uuid) = self.vm.unwrap_or_default();
        if let Ok(Reply::Created { uuid: made }) = result {
            uuid.clone_from(made);
        }
        let result = match result {
            Ok(_) => "ok",
            Err(e) => e.code.as_str(),
        };
        let path = self.path.unwrap_or_default();
        tracing::info!(
            target: "xenith::audit",
            method = self.method,
            vm = %name,
            uuid = %uuid,
            path = %path,
            caller = %self.caller,
            result,
            duration_ms,
            "audit"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_read_as_people_name_them() {
        let unix = Caller::Unix {
            uid: 0,
            pid: Some(42),
        };
        assert_eq!(unix.to_string(), "uid 0 (pid 42)");
        let tls = Caller::Tls {
            peer: "10.0.0.1:5000".parse().unwrap(),
            identity: "token 2".into(),
        };
        assert_eq!(tls.to_string(), "tls 10.0.0.1:5000 token 2");
    }

    #[test]
    fn reads_are_not_audited_changes_are() {
        assert!(audited(&Call::VmGet("a".into())).is_none());
        assert!(audited(&Call::HostInfo).is_none());
        assert_eq!(
            audited(&Call::VmOp("web".into(), super::super::VmOp::Kill)),
            Some(("vm.kill", Some("web")))
        );
        assert_eq!(
            audited(&Call::Xs(XsCall::Rm("/a".into()))),
            Some(("xs.rm", None))
        );
    }
}
