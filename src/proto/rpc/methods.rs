//! Method names and their parameters, parsed into [`Call`]s.

use rmpv::Value;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::api::{ApiError, Call, ErrorCode};

/// Every method of CONTRACT.md. Those this build does not serve yet answer
/// UNKNOWN_METHOD saying so, rather than as if the name were a typo.
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
];

/// Methods with no parameters still refuse unknown ones.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

fn params<T: DeserializeOwned>(method: &str, params: Value) -> Result<T, ApiError> {
    let params = if params.is_nil() {
        Value::Map(Vec::new())
    } else {
        params
    };
    super::wire::from_named_value(&params)
        .map_err(|e| ApiError::new(ErrorCode::InvalidParams, format!("{method}: {e}")))
}

/// Parses a method name and its named arguments into a call.
pub fn parse_call(method: &str, args: Value) -> Result<Call, ApiError> {
    match method {
        "host.info" => params::<NoParams>(method, args).map(|_| Call::HostInfo),
        "supervisor.tree" => params::<NoParams>(method, args).map(|_| Call::SupervisorTree),
        m if CONTRACT_METHODS.contains(&m) => Err(ApiError::new(
            ErrorCode::UnknownMethod,
            format!("{m} is part of the xenith API but this build does not serve it yet"),
        )),
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
    fn known_unknown_and_bad_params() {
        assert_eq!(parse_call("host.info", Value::Nil).unwrap(), Call::HostInfo);
        let e = parse_call("host.info", Value::Map(vec![("x".into(), 1.into())])).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidParams);
        assert!(e.message.contains("unknown field `x`"), "{}", e.message);
        assert_eq!(
            parse_call("host.nope", Value::Nil).unwrap_err().code,
            ErrorCode::UnknownMethod
        );
    }
}
