//! Request payloads, parsed into typed requests (errors as the daemons
//! give them: a malformed payload is EINVAL).

use super::wire::{MsgType, Packet, XsError};

/// A permission letter: none, read, write, both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PermLetter {
    None,
    Read,
    Write,
    Both,
}

impl PermLetter {
    pub fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            b'n' => PermLetter::None,
            b'r' => PermLetter::Read,
            b'w' => PermLetter::Write,
            b'b' => PermLetter::Both,
            _ => return None,
        })
    }

    pub fn as_char(self) -> char {
        match self {
            PermLetter::None => 'n',
            PermLetter::Read => 'r',
            PermLetter::Write => 'w',
            PermLetter::Both => 'b',
        }
    }

    pub fn can_read(self) -> bool {
        matches!(self, PermLetter::Read | PermLetter::Both)
    }

    pub fn can_write(self) -> bool {
        matches!(self, PermLetter::Write | PermLetter::Both)
    }
}

/// One ACL entry, e.g. "r5".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Perm {
    pub letter: PermLetter,
    pub domid: u32,
}

impl Perm {
    /// Parses "<letter><domid>", the domid as C's strtol with base 0
    /// (decimal, 0x hex, leading-0 octal).
    pub fn parse(s: &[u8]) -> Option<Perm> {
        let (&first, rest) = s.split_first()?;
        let letter = PermLetter::from_byte(first)?;
        let text = std::str::from_utf8(rest).ok()?;
        let domid = if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
            u32::from_str_radix(hex, 16).ok()?
        } else if text.len() > 1 && text.starts_with('0') {
            u32::from_str_radix(&text[1..], 8).ok()?
        } else {
            text.parse().ok()?
        };
        Some(Perm { letter, domid })
    }
}

impl std::fmt::Display for Perm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.letter.as_char(), self.domid)
    }
}

/// A node's permissions: the first entry is the owner, whose letter is the
/// default for domains not listed; the rest is the ACL.
pub type Perms = Vec<Perm>;

/// A parsed request. Paths are raw (validated and made absolute by the
/// server, which knows the connection's home).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Control(Vec<Vec<u8>>),
    Directory(String),
    DirectoryPart(String, u32),
    Read(String),
    GetPerms(String),
    Watch {
        path: String,
        token: Vec<u8>,
        depth: Option<u32>,
    },
    Unwatch {
        path: String,
        token: Vec<u8>,
    },
    TransactionStart,
    TransactionEnd(bool),
    Introduce {
        domid: u32,
        gfn: u64,
        evtchn: u32,
    },
    Release(u32),
    GetDomainPath(u32),
    Write(String, Vec<u8>),
    Mkdir(String),
    Rm(String),
    SetPerms(String, Perms),
    IsDomainIntroduced(u32),
    Resume(u32),
    SetTarget(u32, u32),
    ResetWatches,
    GetFeature(Option<u32>),
}

/// The NUL-terminated strings of a payload; None unless it ends in NUL.
fn args(payload: &[u8]) -> Option<Vec<&[u8]>> {
    let body = payload.strip_suffix(&[0])?;
    Some(body.split(|b| *b == 0).collect())
}

fn text(arg: &[u8]) -> Result<String, XsError> {
    String::from_utf8(arg.to_vec()).map_err(|_| XsError::EINVAL)
}

fn number<T: std::str::FromStr>(arg: &[u8]) -> Result<T, XsError> {
    std::str::from_utf8(arg)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(XsError::EINVAL)
}

/// Exactly one argument: one NUL, at the end.
fn one(payload: &[u8]) -> Result<&[u8], XsError> {
    match args(payload) {
        Some(a) if a.len() == 1 => Ok(a[0]),
        _ => Err(XsError::EINVAL),
    }
}

fn exactly<const N: usize>(payload: &[u8]) -> Result<[&[u8]; N], XsError> {
    let a = args(payload).ok_or(XsError::EINVAL)?;
    a.try_into().map_err(|_| XsError::EINVAL)
}

/// Parses a request packet. Types a client may not send (WATCH_EVENT,
/// ERROR) and unknown or unsupported ones are ENOSYS.
pub fn parse_request(p: &Packet) -> Result<Request, XsError> {
    let ty = p.msg_type().ok_or(XsError::ENOSYS)?;
    let pl = &p.payload[..];
    Ok(match ty {
        MsgType::Read => Request::Read(text(one(pl)?)?),
        MsgType::Directory => Request::Directory(text(one(pl)?)?),
        MsgType::GetPerms => Request::GetPerms(text(one(pl)?)?),
        MsgType::Mkdir => Request::Mkdir(text(one(pl)?)?),
        MsgType::Rm => Request::Rm(text(one(pl)?)?),
        MsgType::Write => {
            // path\0value: the value is everything after the first NUL.
            let nul = pl.iter().position(|b| *b == 0).ok_or(XsError::EINVAL)?;
            Request::Write(text(&pl[..nul])?, pl[nul + 1..].to_vec())
        }
        MsgType::DirectoryPart => {
            let [path, offset] = exactly::<2>(pl)?;
            Request::DirectoryPart(text(path)?, number(offset)?)
        }
        MsgType::SetPerms => {
            let a = args(pl).ok_or(XsError::EINVAL)?;
            let (path, perms) = a.split_first().ok_or(XsError::EINVAL)?;
            if perms.is_empty() {
                return Err(XsError::EINVAL);
            }
            let perms = perms
                .iter()
                .map(|s| Perm::parse(s))
                .collect::<Option<Vec<_>>>();
            Request::SetPerms(text(path)?, perms.ok_or(XsError::EINVAL)?)
        }
        MsgType::Watch => {
            let a = args(pl).ok_or(XsError::EINVAL)?;
            match a.as_slice() {
                [path, token] => Request::Watch {
                    path: text(path)?,
                    token: token.to_vec(),
                    depth: None,
                },
                [path, token, depth] => Request::Watch {
                    path: text(path)?,
                    token: token.to_vec(),
                    depth: Some(number(depth)?),
                },
                _ => return Err(XsError::EINVAL),
            }
        }
        MsgType::Unwatch => {
            let [path, token] = exactly::<2>(pl)?;
            Request::Unwatch {
                path: text(path)?,
                token: token.to_vec(),
            }
        }
        MsgType::TransactionStart => Request::TransactionStart,
        MsgType::TransactionEnd => match one(pl)? {
            b"T" => Request::TransactionEnd(true),
            b"F" => Request::TransactionEnd(false),
            _ => return Err(XsError::EINVAL),
        },
        MsgType::Introduce => {
            let [domid, gfn, evtchn] = exactly::<3>(pl)?;
            Request::Introduce {
                domid: number(domid)?,
                gfn: number(gfn)?,
                evtchn: number(evtchn)?,
            }
        }
        MsgType::Release => Request::Release(number(one(pl)?)?),
        MsgType::Resume => Request::Resume(number(one(pl)?)?),
        MsgType::GetDomainPath => Request::GetDomainPath(number(one(pl)?)?),
        MsgType::IsDomainIntroduced => Request::IsDomainIntroduced(number(one(pl)?)?),
        MsgType::SetTarget => {
            let [domid, target] = exactly::<2>(pl)?;
            Request::SetTarget(number(domid)?, number(target)?)
        }
        MsgType::ResetWatches => Request::ResetWatches,
        MsgType::Control => Request::Control(
            args(pl)
                .unwrap_or_default()
                .iter()
                .map(|a| a.to_vec())
                .collect(),
        ),
        MsgType::GetFeature => match args(pl) {
            Some(a) if a.len() == 1 && a[0].is_empty() => Request::GetFeature(None),
            Some(a) if a.len() == 1 => Request::GetFeature(Some(number(a[0])?)),
            None if pl.is_empty() => Request::GetFeature(None),
            _ => return Err(XsError::EINVAL),
        },
        MsgType::WatchEvent
        | MsgType::Error
        | MsgType::Restrict
        | MsgType::SetFeature
        | MsgType::GetQuota
        | MsgType::SetQuota => return Err(XsError::ENOSYS),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(ty: MsgType, payload: &[u8]) -> Result<Request, XsError> {
        parse_request(&Packet::new(ty, 1, 0, payload.to_vec()))
    }

    #[test]
    fn payload_rules() {
        assert_eq!(req(MsgType::Read, b"/a\0"), Ok(Request::Read("/a".into())));
        assert_eq!(req(MsgType::Read, b"/a"), Err(XsError::EINVAL));
        assert_eq!(req(MsgType::Read, b"/a\0b\0"), Err(XsError::EINVAL));
        assert_eq!(
            req(MsgType::Write, b"/a\0v\0w"),
            Ok(Request::Write("/a".into(), b"v\0w".to_vec()))
        );
        assert_eq!(
            req(MsgType::Write, b"/a\0"),
            Ok(Request::Write("/a".into(), vec![]))
        );
        assert_eq!(
            req(MsgType::TransactionEnd, b"T\0"),
            Ok(Request::TransactionEnd(true))
        );
        assert_eq!(req(MsgType::TransactionEnd, b"X\0"), Err(XsError::EINVAL));
        assert_eq!(
            req(MsgType::SetPerms, b"/a\0n0\0r0x10\0b010\0"),
            Ok(Request::SetPerms(
                "/a".into(),
                vec![
                    Perm {
                        letter: PermLetter::None,
                        domid: 0
                    },
                    Perm {
                        letter: PermLetter::Read,
                        domid: 16
                    },
                    Perm {
                        letter: PermLetter::Both,
                        domid: 8
                    },
                ]
            ))
        );
        assert_eq!(req(MsgType::SetPerms, b"/a\0"), Err(XsError::EINVAL));
        assert_eq!(req(MsgType::SetPerms, b"/a\0x1\0"), Err(XsError::EINVAL));
        assert_eq!(
            req(MsgType::Watch, b"/a\0tok\0"),
            Ok(Request::Watch {
                path: "/a".into(),
                token: b"tok".to_vec(),
                depth: None
            })
        );
        assert_eq!(req(MsgType::WatchEvent, b"/a\0t\0"), Err(XsError::ENOSYS));
        assert_eq!(
            parse_request(&Packet {
                ty: 99,
                req_id: 0,
                tx_id: 0,
                payload: vec![]
            }),
            Err(XsError::ENOSYS)
        );
        assert_eq!(
            req(MsgType::Introduce, b"5\x001234\x007\0"),
            Ok(Request::Introduce {
                domid: 5,
                gfn: 1234,
                evtchn: 7
            })
        );
    }
}
