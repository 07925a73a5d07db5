//! MessagePack-RPC messages: parsing incoming frames, building replies.

use rmpv::Value;

use crate::api::{ApiError, ErrorCode};

/// A well-formed incoming message.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Request {
        id: u32,
        method: String,
        params: Value,
    },
    Notification {
        method: String,
        params: Value,
    },
}

/// A frame that is MessagePack but not a valid message: the error to send
/// back, with the request's msgid when it could be read.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    pub id: Option<u32>,
    pub error: ApiError,
}

fn invalid(id: Option<u32>, message: impl Into<String>) -> Invalid {
    Invalid {
        id,
        error: ApiError::new(ErrorCode::InvalidParams, message),
    }
}

/// Parses one frame. `params` comes back as the single map of named
/// arguments (`Nil` when the array was empty).
pub fn parse(frame: Value) -> Result<Incoming, Invalid> {
    let Value::Array(items) = frame else {
        return Err(invalid(None, "a message must be an array"));
    };
    let kind = items.first().and_then(Value::as_u64);
    match (kind, items.len()) {
        (Some(0), 4) => {
            let id = items[1]
                .as_u64()
                .and_then(|i| u32::try_from(i).ok())
                .ok_or_else(|| invalid(None, "msgid must be an unsigned 32-bit integer"))?;
            let method = method_name(&items[2]).map_err(|m| invalid(Some(id), m))?;
            let params = single_map(&items[3]).map_err(|m| invalid(Some(id), m))?;
            Ok(Incoming::Request { id, method, params })
        }
        (Some(2), 3) => {
            let method = method_name(&items[1]).map_err(|m| invalid(None, m))?;
            let params = single_map(&items[2]).map_err(|m| invalid(None, m))?;
            Ok(Incoming::Notification { method, params })
        }
        (Some(0), n) => Err(invalid(
            items
                .get(1)
                .and_then(Value::as_u64)
                .and_then(|i| u32::try_from(i).ok()),
            format!("a request has 4 elements, not {n}"),
        )),
        (Some(2), n) => Err(invalid(
            None,
            format!("a notification has 3 elements, not {n}"),
        )),
        _ => Err(invalid(
            None,
            "message type must be 0 (request) or 2 (notification)",
        )),
    }
}

fn method_name(v: &Value) -> Result<String, String> {
    v.as_str()
        .map(str::to_owned)
        .ok_or_else(|| "method must be a string".to_owned())
}

fn single_map(v: &Value) -> Result<Value, String> {
    match v {
        Value::Array(a) if a.is_empty() => Ok(Value::Nil),
        Value::Array(a) if a.len() == 1 && (a[0].is_map() || a[0].is_nil()) => Ok(a[0].clone()),
        _ => Err("params must be an array holding one map of named arguments, or empty".to_owned()),
    }
}

/// `[1, msgid, nil, result]`, with the result serialised with field names
/// (structs as maps, unit enum variants as their names).
pub fn response_ok<T: serde::Serialize>(id: u32, result: &T) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::with_capacity(128);
    // Writing into a Vec cannot fail.
    let _ = rmp::encode::write_array_len(&mut out, 4);
    let _ = rmp::encode::write_uint(&mut out, 1);
    let _ = rmp::encode::write_uint(&mut out, u64::from(id));
    let _ = rmp::encode::write_nil(&mut out);
    rmp_serde::encode::write_named(&mut out, result).map_err(ApiError::internal)?;
    Ok(out)
}

/// `[2, method, [params]]`, the params serialised with field names.
pub fn notification_frame<T: serde::Serialize>(
    method: &str,
    params: &T,
) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::with_capacity(128);
    let _ = rmp::encode::write_array_len(&mut out, 3);
    let _ = rmp::encode::write_uint(&mut out, 2);
    let _ = rmp::encode::write_str(&mut out, method);
    let _ = rmp::encode::write_array_len(&mut out, 1);
    rmp_serde::encode::write_named(&mut out, params).map_err(ApiError::internal)?;
    Ok(out)
}

/// Serialises a value with field names, as [`response_ok`] does, into a
/// [`Value`] (for building notifications and requests).
pub fn to_named_value<T: serde::Serialize>(value: &T) -> Result<Value, ApiError> {
    let bytes = rmp_serde::to_vec_named(value).map_err(ApiError::internal)?;
    rmpv::decode::read_value(&mut bytes.as_slice()).map_err(ApiError::internal)
}

/// Decodes a value into `T` the way [`to_named_value`] encodes it (structs
/// from maps, unit enum variants from their names).
pub fn from_named_value<T: serde::de::DeserializeOwned>(
    value: &Value,
) -> Result<T, rmp_serde::decode::Error> {
    let mut bytes = Vec::with_capacity(64);
    rmpv::encode::write_value(&mut bytes, value)
        .map_err(|e| rmp_serde::decode::Error::Uncategorized(e.to_string()))?;
    rmp_serde::from_slice(&bytes)
}

/// A call's named arguments, read strictly: maps with string keys, strings
/// that are UTF-8, and no binary or extension values; an enum is a string
/// (never its index as a number); a map entry given as nil is as if it
/// were left out (API.md: optional arguments may be nil), at any depth.
pub fn from_params<T: serde::de::DeserializeOwned>(value: &Value) -> Result<T, String> {
    serde_json::from_value(to_json(value, "")?).map_err(|e| e.to_string())
}

fn to_json(value: &Value, at: &str) -> Result<serde_json::Value, String> {
    use serde_json::Value as J;
    let here = |what: &str| {
        if at.is_empty() {
            what.to_owned()
        } else {
            format!("{at}: {what}")
        }
    };
    Ok(match value {
        Value::Nil => J::Null,
        Value::Boolean(b) => J::Bool(*b),
        Value::Integer(i) => match (i.as_u64(), i.as_i64()) {
            (Some(u), _) => J::from(u),
            (None, Some(s)) => J::from(s),
            _ => return Err(here("an integer out of range")),
        },
        Value::F32(f) => J::from(f64::from(*f)),
        Value::F64(f) => J::from(*f),
        Value::String(s) => match s.as_str() {
            Some(s) => J::String(s.to_owned()),
            None => return Err(here("a string that is not UTF-8")),
        },
        Value::Binary(_) => return Err(here("a binary value (strings are sent as str)")),
        Value::Ext(..) => return Err(here("an extension value")),
        Value::Array(items) => J::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| to_json(v, &format!("{at}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        Value::Map(entries) => {
            let mut map = serde_json::Map::new();
            for (k, v) in entries {
                let Some(key) = k.as_str() else {
                    return Err(here("a map key that is not a string"));
                };
                if v.is_nil() {
                    continue;
                }
                let path = if at.is_empty() {
                    key.to_owned()
                } else {
                    format!("{at}.{key}")
                };
                map.insert(key.to_owned(), to_json(v, &path)?);
            }
            J::Object(map)
        }
    })
}

/// `[1, msgid, {code, message, details}, nil]`; `msgid` is nil when the
/// offending frame had none.
pub fn response_err(id: Option<u32>, error: &ApiError) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    let _ = rmpv::encode::write_value(&mut out, &error_frame(id, error));
    out
}

fn error_frame(id: Option<u32>, error: &ApiError) -> Value {
    let details = error
        .details
        .iter()
        .map(|d| Value::from(d.as_str()))
        .collect();
    let err = Value::Map(vec![
        ("code".into(), error.code.as_str().into()),
        ("message".into(), error.message.as_str().into()),
        ("details".into(), Value::Array(details)),
    ]);
    Value::Array(vec![
        1.into(),
        id.map_or(Value::Nil, Value::from),
        err,
        Value::Nil,
    ])
}

/// `[2, method, [params]]`.
pub fn notification(method: &str, params: Value) -> Value {
    Value::Array(vec![2.into(), method.into(), Value::Array(vec![params])])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(items: Vec<Value>) -> Value {
        Value::Array(items)
    }

    #[test]
    fn requests_parse_and_bad_ones_say_why() {
        let ok = parse(req(vec![
            0.into(),
            9.into(),
            "host.info".into(),
            Value::Array(vec![]),
        ]));
        assert_eq!(
            ok,
            Ok(Incoming::Request {
                id: 9,
                method: "host.info".into(),
                params: Value::Nil
            })
        );
        let bad = parse(req(vec![
            0.into(),
            9.into(),
            5.into(),
            Value::Array(vec![]),
        ]))
        .unwrap_err();
        assert_eq!(bad.id, Some(9));
        assert_eq!(bad.error.message, "method must be a string");
        let bad = parse(req(vec![0.into(), 9.into(), "x".into(), 3.into()])).unwrap_err();
        assert!(bad.error.message.starts_with("params must be"));
        assert_eq!(parse(Value::from(3)).unwrap_err().id, None);
        assert_eq!(
            parse(req(vec![0.into(), (-1).into(), "x".into(), Value::Nil]))
                .unwrap_err()
                .id,
            None
        );
    }
}
