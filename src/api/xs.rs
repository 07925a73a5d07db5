//! `xs.*`: xenstore as dom0 sees it (the toolstack's own, privileged
//! connection). Errors from xenstored come back as XENSTORE_ERROR with the
//! error's name (ENOENT, EACCES, EINVAL...) in details.

use super::{xs_error, Api, ApiError, ErrorCode};
use crate::xs::request::Perm;

/// One `xs.*` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XsCall {
    Read(String),
    Write(String, String),
    Ls(String),
    Rm(String),
    Mkdir(String),
    GetPerms(String),
    SetPerms(String, Vec<String>),
}

impl XsCall {
    /// The path the call is about.
    pub fn path(&self) -> &str {
        match self {
            XsCall::Read(p)
            | XsCall::Write(p, _)
            | XsCall::Ls(p)
            | XsCall::Rm(p)
            | XsCall::Mkdir(p)
            | XsCall::GetPerms(p)
            | XsCall::SetPerms(p, _) => p,
        }
    }
}

/// What an `xs.*` call returns.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(untagged)]
pub enum XsReply {
    /// xs.read: the value (invalid UTF-8 replaced).
    Value(String),
    /// xs.ls: child names; xs.getperms: permissions as xenstore-ls -p shows them.
    List(Vec<String>),
    Done {},
}

/// Checks a path before it reaches xenstored: absolute, no NUL.
fn check(path: &str) -> Result<(), ApiError> {
    if !path.starts_with('/') || path.contains('\0') {
        return Err(ApiError::new(
            ErrorCode::InvalidParams,
            format!("path {path:?}: an absolute xenstore path is needed"),
        )
        .with_details(vec!["path".into()]));
    }
    Ok(())
}

impl Api {
    /// `xs.watch {path}` (an extension of the contract): a xenstore watch
    /// on the toolstack's connection; the transport forwards its events.
    pub async fn xs_watch(&self, path: &str) -> Result<super::WatchStream, ApiError> {
        check(path)?;
        self.xs()?.watch(path).await.map_err(|e| xs_error(path, e))
    }

    pub async fn xs_call(&self, call: XsCall) -> Result<XsReply, ApiError> {
        let xs = self.xs()?;
        match call {
            XsCall::Read(p) => {
                check(&p)?;
                let v = xs.read(&p).await.map_err(|e| xs_error(&p, e))?;
                Ok(XsReply::Value(String::from_utf8_lossy(&v).into_owned()))
            }
            XsCall::Write(p, v) => {
                check(&p)?;
                xs.write(&p, v).await.map_err(|e| xs_error(&p, e))?;
                Ok(XsReply::Done {})
            }
            XsCall::Ls(p) => {
                check(&p)?;
                Ok(XsReply::List(
                    xs.directory_all(&p).await.map_err(|e| xs_error(&p, e))?,
                ))
            }
            XsCall::Rm(p) => {
                check(&p)?;
                xs.rm(&p).await.map_err(|e| xs_error(&p, e))?;
                Ok(XsReply::Done {})
            }
            XsCall::Mkdir(p) => {
                check(&p)?;
                xs.mkdir(&p).await.map_err(|e| xs_error(&p, e))?;
                Ok(XsReply::Done {})
            }
            XsCall::GetPerms(p) => {
                check(&p)?;
                let perms = xs.get_perms(&p).await.map_err(|e| xs_error(&p, e))?;
                Ok(XsReply::List(
                    perms.iter().map(ToString::to_string).collect(),
                ))
            }
            XsCall::SetPerms(p, perms) => {
                check(&p)?;
                let parsed = perms
                    .iter()
                    .map(|s| {
                        Perm::parse(s.as_bytes()).ok_or_else(|| {
                            ApiError::new(
                                ErrorCode::InvalidParams,
                                format!("perms: {s:?} is not a permission (n|r|w|b, then a domid: \"n0\", \"r5\")"),
                            )
                            .with_details(vec!["perms".into()])
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if parsed.is_empty() {
                    return Err(ApiError::new(
                        ErrorCode::InvalidParams,
                        "perms: at least the owner's entry is needed",
                    )
                    .with_details(vec!["perms".into()]));
                }
                xs.set_perms(&p, &parsed)
                    .await
                    .map_err(|e| xs_error(&p, e))?;
                Ok(XsReply::Done {})
            }
        }
    }
}
