//! Message types, error names, the header and packets.

use std::fmt;

/// Size of the header: type, req_id, tx_id, len (u32 each, little-endian).
pub const HEADER_LEN: usize = 16;
/// Largest payload in either direction (XENSTORE_PAYLOAD_MAX).
pub const PAYLOAD_MAX: usize = 4096;

macro_rules! msg_types {
    ($($name:ident = $n:literal),* $(,)?) => {
        /// Message types (`enum xsd_sockmsg_type`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u32)]
        pub enum MsgType { $($name = $n),* }

        impl MsgType {
            pub fn from_u32(n: u32) -> Option<Self> {
                match n { $($n => Some(MsgType::$name),)* _ => None }
            }

            pub const ALL: &'static [MsgType] = &[$(MsgType::$name),*];
        }
    };
}

msg_types! {
    Control = 0,
    Directory = 1,
    Read = 2,
    GetPerms = 3,
    Watch = 4,
    Unwatch = 5,
    TransactionStart = 6,
    TransactionEnd = 7,
    Introduce = 8,
    Release = 9,
    GetDomainPath = 10,
    Write = 11,
    Mkdir = 12,
    Rm = 13,
    SetPerms = 14,
    WatchEvent = 15,
    Error = 16,
    IsDomainIntroduced = 17,
    Resume = 18,
    SetTarget = 19,
    Restrict = 20,
    ResetWatches = 21,
    DirectoryPart = 22,
    GetFeature = 23,
    SetFeature = 24,
    GetQuota = 25,
    SetQuota = 26,
}

macro_rules! xs_errors {
    ($($name:ident),* $(,)?) => {
        /// Error names, as sent in an ERROR reply's payload (`xsd_errors`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[allow(clippy::upper_case_acronyms)]
        pub enum XsError { $($name),* }

        impl XsError {
            pub fn as_str(self) -> &'static str {
                match self { $(XsError::$name => stringify!($name)),* }
            }

            pub fn from_name(s: &str) -> Option<Self> {
                match s { $(stringify!($name) => Some(XsError::$name),)* _ => None }
            }
        }
    };
}

xs_errors!(
    EINVAL, EACCES, EEXIST, EISDIR, ENOENT, ENOMEM, ENOSPC, EIO, ENOTEMPTY, ENOSYS, EROFS, EBUSY,
    EAGAIN, EISCONN, E2BIG, EPERM,
);

impl fmt::Display for XsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for XsError {}

/// One message: header fields and payload. `ty` is kept raw so an unknown
/// type can still be answered (with ENOSYS, echoing the request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub ty: u32,
    pub req_id: u32,
    pub tx_id: u32,
    pub payload: Vec<u8>,
}

impl Packet {
    pub fn new(ty: MsgType, req_id: u32, tx_id: u32, payload: Vec<u8>) -> Self {
        Self {
            ty: ty as u32,
            req_id,
            tx_id,
            payload,
        }
    }

    pub fn msg_type(&self) -> Option<MsgType> {
        MsgType::from_u32(self.ty)
    }

    /// A reply to `self` with this type and payload (same req_id and tx_id).
    pub fn reply(&self, ty: MsgType, payload: Vec<u8>) -> Packet {
        Packet {
            ty: ty as u32,
            req_id: self.req_id,
            tx_id: self.tx_id,
            payload,
        }
    }

    /// "OK\0", the reply to a request that returns nothing.
    pub fn ok(&self) -> Packet {
        Packet {
            ty: self.ty,
            req_id: self.req_id,
            tx_id: self.tx_id,
            payload: b"OK\0".to_vec(),
        }
    }

    /// An ERROR reply naming `e`.
    pub fn error(&self, e: XsError) -> Packet {
        let mut payload = e.as_str().as_bytes().to_vec();
        payload.push(0);
        self.reply(MsgType::Error, payload)
    }

    /// A WATCH_EVENT: `path\0token\0`, req_id and tx_id 0.
    pub fn watch_event(path: &str, token: &[u8]) -> Packet {
        let mut payload = Vec::with_capacity(path.len() + token.len() + 2);
        payload.extend_from_slice(path.as_bytes());
        payload.push(0);
        payload.extend_from_slice(token);
        payload.push(0);
        Packet::new(MsgType::WatchEvent, 0, 0, payload)
    }

    /// The error an ERROR reply names, if it is one.
    pub fn as_error(&self) -> Option<XsError> {
        if self.ty != MsgType::Error as u32 {
            return None;
        }
        let name = self.payload.split(|b| *b == 0).next()?;
        XsError::from_name(std::str::from_utf8(name).ok()?)
    }

    /// Appends the encoded packet to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.reserve(HEADER_LEN + self.payload.len());
        // Payloads are at most PAYLOAD_MAX (4096) bytes where they are made.
        let len = u32::try_from(self.payload.len()).unwrap_or(u32::MAX);
        for field in [self.ty, self.req_id, self.tx_id, len] {
            out.extend_from_slice(&field.to_le_bytes());
        }
        out.extend_from_slice(&self.payload);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.payload.len());
        self.encode_into(&mut out);
        out
    }
}

/// The four header fields from the first 16 bytes of `buf`.
pub fn parse_header(buf: &[u8; HEADER_LEN]) -> (u32, u32, u32, u32) {
    let f = |i: usize| u32::from_le_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
    (f(0), f(4), f(8), f(12))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_names_match_xs_wire_h() {
        assert_eq!(MsgType::ALL.len(), 27);
        for (i, t) in MsgType::ALL.iter().enumerate() {
            assert_eq!(*t as u32, u32::try_from(i).unwrap());
            assert_eq!(MsgType::from_u32(u32::try_from(i).unwrap()), Some(*t));
        }
        assert_eq!(MsgType::from_u32(27), None);
        assert_eq!(XsError::from_name("EAGAIN"), Some(XsError::EAGAIN));
        assert_eq!(XsError::E2BIG.as_str(), "E2BIG");
    }

    #[test]
    fn encoding_is_little_endian_header_then_payload() {
        let p = Packet::new(MsgType::Read, 7, 0, b"/a\0".to_vec());
        assert_eq!(
            p.encode(),
            [2, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, b'/', b'a', 0].to_vec()
        );
        let e = p.error(XsError::ENOENT);
        assert_eq!(e.encode()[..4], [16, 0, 0, 0]);
        assert_eq!(e.payload, b"ENOENT\0");
        assert_eq!(e.as_error(), Some(XsError::ENOENT));
    }
}
