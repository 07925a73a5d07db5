//! Method names and their parameters, parsed into [`Call`]s.

use rmpv::Value;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::api::{ApiError, Call, DeviceChange, DiskFile, ErrorCode, NicFile, VmOp, VmSpecFile};

/// Every method of CONTRACT.md (all served; a test keeps it so).
pub const CONTRACT_METHODS: &[&str] = &[
    "session.login",
    "host.info",
    "vm.create",
    "vm.list",
    "vm.get",
    "vm.start",
    "vm.shutdown",
    "vm.reboot",
    "vm.pause",
    "vm.unpause",
    "vm.kill",
    "vm.remove",
    "vm.console",
    "vbd.plug",
    "vbd.unplug",
    "vif.plug",
    "vif.unplug",
    "xs.read",
    "xs.write",
    "xs.ls",
    "xs.rm",
    "xs.mkdir",
    "xs.getperms",
    "xs.setperms",
    "event.subscribe",
    "event.unsubscribe",
    "supervisor.tree",
    "fault.inject",
    "sr.create",
    "sr.list",
    "sr.get",
    "sr.scan",
    "sr.destroy",
    "sr.forget",
    "vdi.create",
    "vdi.list",
    "vdi.get",
    "vdi.destroy",
    "vdi.resize",
    "vdi.snapshot",
    "vdi.clone",
    "vdi.copy",
    "vdi.import",
    "vdi.export",
    "task.list",
    "task.get",
    "task.cancel",
    "vm.suspend",
    "vm.resume",
];

/// Methods with no parameters still refuse unknown ones.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

pub(super) fn params<T: DeserializeOwned>(method: &str, params: Value) -> Result<T, ApiError> {
    let params = if params.is_nil() {
        Value::Map(Vec::new())
    } else {
        params
    };
    super::wire::from_params(&params)
        .map_err(|e| ApiError::new(ErrorCode::InvalidParams, format!("{method}: {e}")))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VmArg {
    vm: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateArgs {
    spec: VmSpecFile,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MemoryTargetArgs {
    vm: String,
    mib: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartArgs {
    vm: String,
    #[serde(default)]
    paused: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SuspendArgs {
    vm: String,
    /// Extension: how long the guest has to suspend (default 60 s).
    #[serde(default)]
    timeout_s: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShutdownArgs {
    vm: String,
    #[serde(default)]
    force: bool,
    #[serde(default)]
    timeout_s: Option<u64>,
    /// Extension: a guest that has not shut down by the timeout is shut
    /// down hard, instead of the call failing with OPERATION_TIMEOUT.
    #[serde(default)]
    fallback: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RebootArgs {
    vm: String,
    #[serde(default)]
    force: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginArgs {
    token: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DiskPlugArgs {
    vm: String,
    disk: DiskFile,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NicPlugArgs {
    vm: String,
    #[serde(default = "default_nic")]
    nic: NicFile,
}

fn default_nic() -> NicFile {
    NicFile {
        bridge: None,
        mac: None,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UnplugArgs {
    vm: String,
    device: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscribeArgs {
    #[serde(default)]
    classes: Option<Vec<crate::api::EventClass>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UnsubscribeArgs {
    subscription: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PathArg {
    path: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct XsWriteArgs {
    path: String,
    value: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct XsPermsArgs {
    path: String,
    perms: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsoleArgs {
    vm: String,
    #[serde(default)]
    lines: Option<u64>,
    #[serde(default)]
    offset: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultArgs {
    vm: String,
    part: String,
    kind: crate::api::FaultKind,
}

/// Methods bound to their connection: never run as tasks.
const NOT_ASYNC: &[&str] = &[
    "session.login",
    "event.subscribe",
    "event.unsubscribe",
    "xs.watch",
];

/// Takes `async` out of the named arguments: whether it was true.
fn take_async(method: &str, args: &mut Value) -> Result<bool, ApiError> {
    let Value::Map(entries) = args else {
        return Ok(false);
    };
    let Some(at) = entries
        .iter()
        .position(|(k, _)| k.as_str() == Some("async"))
    else {
        return Ok(false);
    };
    let (_, v) = entries.remove(at);
    match v {
        Value::Boolean(b) => Ok(b),
        Value::Nil => Ok(false),
        other => Err(ApiError::new(
            ErrorCode::InvalidParams,
            format!("{method}: async: {other} is not a boolean"),
        )),
    }
}

/// Parses a method name and its named arguments into a call; with
/// `async: true`, the call runs as a task.
pub fn parse_call(method: &str, mut args: Value) -> Result<Call, ApiError> {
    let asynchronous = take_async(method, &mut args)?;
    if asynchronous && NOT_ASYNC.contains(&method) {
        return Err(ApiError::new(
            ErrorCode::InvalidParams,
            format!("{method}: cannot run as a task (async): it belongs to its connection"),
        ));
    }
    let call = match method.split_once('.') {
        Some(("sr" | "vdi" | "task", _)) => super::storage_methods::parse_storage(method, args)?,
        _ => parse_plain(method, args)?,
    };
    Ok(if asynchronous {
        Call::Async {
            method: method.to_owned(),
            call: Box::new(call),
        }
    } else {
        call
    })
}

fn parse_plain(method: &str, args: Value) -> Result<Call, ApiError> {
    use crate::api::xs::XsCall;
    let op = |vm: String, op: VmOp| Call::VmOp(vm, op);
    match method {
        "host.info" => params::<NoParams>(method, args).map(|_| Call::HostInfo),
        "host.devices" => params::<NoParams>(method, args).map(|_| Call::HostDevices),
        "supervisor.tree" => params::<NoParams>(method, args).map(|_| Call::SupervisorTree),
        "vm.create" => params::<CreateArgs>(method, args).map(|a| Call::VmCreate(Box::new(a.spec))),
        "vm.list" => params::<NoParams>(method, args).map(|_| Call::VmList),
        "vm.get" => params::<VmArg>(method, args).map(|a| Call::VmGet(a.vm)),
        "vm.remove" => params::<VmArg>(method, args).map(|a| Call::VmRemove(a.vm)),
        "vm.start" => {
            params::<StartArgs>(method, args).map(|a| op(a.vm, VmOp::Start { paused: a.paused }))
        }
        "vm.shutdown" => params::<ShutdownArgs>(method, args).and_then(|a| {
            Ok(op(
                a.vm,
                VmOp::Shutdown {
                    force: a.force,
                    timeout: crate::api::vm::shutdown_timeout(a.timeout_s)?,
                    fallback: a.fallback,
                },
            ))
        }),
        "vm.reboot" => {
            params::<RebootArgs>(method, args).map(|a| op(a.vm, VmOp::Reboot { force: a.force }))
        }
        "vm.pause" => params::<VmArg>(method, args).map(|a| op(a.vm, VmOp::Pause)),
        "vm.suspend" => params::<SuspendArgs>(method, args).and_then(|a| {
            Ok(Call::VmSuspend {
                vm: a.vm,
                timeout: crate::api::vm::suspend_timeout(a.timeout_s)?,
            })
        }),
        "vm.resume" => params::<StartArgs>(method, args).map(|a| Call::VmResume {
            vm: a.vm,
            paused: a.paused,
        }),
        "vm.unpause" => params::<VmArg>(method, args).map(|a| op(a.vm, VmOp::Unpause)),
        "vm.kill" => params::<VmArg>(method, args).map(|a| op(a.vm, VmOp::Kill)),
        "vm.set_memory_target" => params::<MemoryTargetArgs>(method, args)
            .map(|a| op(a.vm, VmOp::SetMemoryTarget { mib: a.mib })),
        "vm.console" => params::<ConsoleArgs>(method, args).map(|a| Call::VmConsole {
            vm: a.vm,
            lines: a.lines,
            offset: a.offset,
        }),
        "session.login" => {
            params::<LoginArgs>(method, args).map(|a| Call::SessionLogin { token: a.token })
        }
        "vbd.plug" => params::<DiskPlugArgs>(method, args)
            .map(|a| Call::Device(a.vm, DeviceChange::plug_disk(a.disk))),
        "vbd.unplug" => params::<UnplugArgs>(method, args)
            .map(|a| Call::Device(a.vm, DeviceChange::UnplugDisk(a.device))),
        "vif.plug" => params::<NicPlugArgs>(method, args)
            .map(|a| Call::Device(a.vm, DeviceChange::PlugNic(a.nic))),
        "vif.unplug" => params::<UnplugArgs>(method, args)
            .map(|a| Call::Device(a.vm, DeviceChange::UnplugNic(a.device))),
        "xs.watch" => params::<PathArg>(method, args).map(|a| Call::XsWatch { path: a.path }),
        "xs.read" => params::<PathArg>(method, args).map(|a| Call::Xs(XsCall::Read(a.path))),
        "xs.ls" => params::<PathArg>(method, args).map(|a| Call::Xs(XsCall::Ls(a.path))),
        "xs.rm" => params::<PathArg>(method, args).map(|a| Call::Xs(XsCall::Rm(a.path))),
        "xs.mkdir" => params::<PathArg>(method, args).map(|a| Call::Xs(XsCall::Mkdir(a.path))),
        "xs.getperms" => {
            params::<PathArg>(method, args).map(|a| Call::Xs(XsCall::GetPerms(a.path)))
        }
        "xs.write" => {
            params::<XsWriteArgs>(method, args).map(|a| Call::Xs(XsCall::Write(a.path, a.value)))
        }
        "xs.setperms" => {
            params::<XsPermsArgs>(method, args).map(|a| Call::Xs(XsCall::SetPerms(a.path, a.perms)))
        }
        "event.subscribe" => params::<SubscribeArgs>(method, args)
            .map(|a| Call::EventSubscribe { classes: a.classes }),
        "event.unsubscribe" => {
            params::<UnsubscribeArgs>(method, args).map(|a| Call::EventUnsubscribe {
                subscription: a.subscription,
            })
        }
        "fault.inject" => params::<FaultArgs>(method, args).map(|a| Call::FaultInject {
            vm: a.vm,
            part: a.part,
            kind: a.kind,
        }),
        m => Err(ApiError::new(
            ErrorCode::UnknownMethod,
            format!("no method named {m:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_contract_method_is_served() {
        for m in CONTRACT_METHODS {
            if let Err(e) = parse_call(m, Value::Nil) {
                assert_ne!(e.code, ErrorCode::UnknownMethod, "{m}");
            }
        }
    }

    fn map(entries: Vec<(&str, Value)>) -> Value {
        Value::Map(entries.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    #[test]
    fn enums_are_names_and_nil_is_left_out() {
        let spec = |ty: Value| {
            map(vec![(
                "spec",
                map(vec![
                    ("name", "a".into()),
                    ("type", ty),
                    ("memory_mib", 64.into()),
                    ("kernel", "/k".into()),
                    ("ramdisk", Value::Nil),
                ]),
            )])
        };
        let e = parse_call("vm.create", spec(1.into())).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidParams, "an enum by its index");
        assert!(matches!(
            parse_call("vm.create", spec("pvh".into())).unwrap(),
            Call::VmCreate(_)
        ));
        // Optional arguments given as nil.
        let start = map(vec![("vm", "a".into()), ("paused", Value::Nil)]);
        assert!(matches!(
            parse_call("vm.start", start).unwrap(),
            Call::VmOp(_, VmOp::Start { paused: false })
        ));
        let shutdown = map(vec![
            ("vm", "a".into()),
            ("timeout_s", Value::Nil),
            ("force", Value::Nil),
        ]);
        assert!(parse_call("vm.shutdown", shutdown).is_ok());
        // Binary is not a string; a required argument given as nil is missing.
        let bin = map(vec![("path", Value::Binary(b"/x".to_vec()))]);
        assert_eq!(
            parse_call("xs.read", bin).unwrap_err().code,
            ErrorCode::InvalidParams
        );
        let nil = map(vec![("vm", Value::Nil)]);
        assert!(parse_call("vm.get", nil)
            .unwrap_err()
            .message
            .contains("missing field `vm`"));
    }

    #[test]
    fn known_unknown_and_bad_params() {
        assert!(matches!(
            parse_call("host.info", Value::Nil).unwrap(),
            Call::HostInfo
        ));
        let e = parse_call("host.info", Value::Map(vec![("x".into(), 1.into())])).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidParams);
        assert!(e.message.contains("unknown field `x`"), "{}", e.message);
        assert_eq!(
            parse_call("host.nope", Value::Nil).unwrap_err().code,
            ErrorCode::UnknownMethod
        );
    }
}
