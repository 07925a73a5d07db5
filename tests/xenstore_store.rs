//! The xenstore database's semantics, on the `Store` directly: golden wire
//! vectors, permissions, quotas, transactions, watches, domains.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use tokio_util::bytes::BytesMut;
use tokio_util::codec::Decoder;
use xenith::xenstored::{Out, Quota, Store};
use xenith::xs::ConnId;
use xenith::xs::{parse_request, MsgType, Packet, Request, XsCodec};

// ----- golden vectors (mirage/ocaml-xenstore lib_test/xs_test.ml) -----

fn hex(s: &str) -> Vec<u8> {
    s.split("\\x")
        .filter(|h| !h.is_empty())
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect()
}

const REQUESTS: &[(&str, &str)] = &[
    (
        "directory",
        r"\x01\x00\x00\x00\x0f\x00\x00\x00\x05\x00\x00\x00\x13\x00\x00\x00\x2f\x77\x68\x61\x74\x65\x76\x65\x72\x2f\x77\x68\x65\x6e\x65\x76\x65\x72\x00",
    ),
    (
        "read",
        r"\x02\x00\x00\x00\x0e\x00\x00\x00\x06\x00\x00\x00\x07\x00\x00\x00\x2f\x61\x2f\x62\x2f\x63\x00",
    ),
    (
        "getperms",
        r"\x03\x00\x00\x00\x0d\x00\x00\x00\x07\x00\x00\x00\x05\x00\x00\x00\x2f\x61\x2f\x62\x00",
    ),
    (
        "rm",
        r"\x0d\x00\x00\x00\x0c\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00\x2f\x00",
    ),
    (
        "setperms",
        r"\x0e\x00\x00\x00\x0b\x00\x00\x00\x01\x00\x00\x00\x0b\x00\x00\x00\x2f\x00\x72\x35\x00\x77\x32\x00\x62\x33\x00",
    ),
    (
        "write",
        r"\x0b\x00\x00\x00\x0a\x00\x00\x00\x01\x00\x00\x00\x0a\x00\x00\x00\x2f\x6b\x65\x79\x00\x76\x61\x6c\x75\x65",
    ),
    (
        "mkdir",
        r"\x0c\x00\x00\x00\x09\x00\x00\x00\x00\x04\x00\x00\x02\x00\x00\x00\x2f\x00",
    ),
    (
        "transaction_start",
        r"\x06\x00\x00\x00\x08\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00",
    ),
    (
        "transaction_end",
        r"\x07\x00\x00\x00\x07\x00\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00\x54\x00",
    ),
    (
        "introduce",
        r"\x08\x00\x00\x00\x06\x00\x00\x00\x00\x00\x00\x00\x06\x00\x00\x00\x34\x00\x35\x00\x31\x00",
    ),
    (
        "release",
        r"\x09\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00\x32\x00",
    ),
    (
        "resume",
        r"\x12\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00\x33\x00",
    ),
    (
        "getdomainpath",
        r"\x0a\x00\x00\x00\x03\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00\x33\x00",
    ),
    (
        "watch",
        r"\x04\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x15\x00\x00\x00\x2f\x66\x6f\x6f\x2f\x62\x61\x72\x00\x31\x3a\x73\x6f\x6d\x65\x74\x68\x69\x6e\x67\x00",
    ),
    (
        "unwatch",
        r"\x05\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x18\x00\x00\x00\x2f\x66\x6f\x6f\x2f\x62\x61\x72\x00\x30\x3a\x73\x6f\x6d\x65\x74\x68\x69\x6e\x67\x6c\x73\x65\x00",
    ),
    (
        "debug",
        r"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x0e\x00\x00\x00\x61\x00\x62\x00\x73\x6f\x6d\x65\x74\x68\x69\x6e\x67\x00",
    ),
];

#[test]
fn golden_requests_decode_parse_and_reencode_byte_for_byte() {
    for (name, wire) in REQUESTS {
        let bytes = hex(wire);
        let mut buf = BytesMut::from(&bytes[..]);
        let p = XsCodec.decode(&mut buf).unwrap().unwrap();
        assert!(buf.is_empty(), "{name}");
        assert_eq!(p.encode(), bytes, "{name}");
        parse_request(&p).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let p = |i: usize| {
        let mut b = BytesMut::from(&hex(REQUESTS[i].1)[..]);
        XsCodec.decode(&mut b).unwrap().unwrap()
    };
    assert_eq!(
        parse_request(&p(1)).unwrap(),
        Request::Read("/a/b/c".into())
    );
    assert_eq!((p(1).req_id, p(1).tx_id), (14, 6));
    assert_eq!(
        parse_request(&p(5)).unwrap(),
        Request::Write("/key".into(), b"value".to_vec())
    );
    assert_eq!(
        parse_request(&p(9)).unwrap(),
        Request::Introduce {
            domid: 4,
            gfn: 5,
            evtchn: 1
        }
    );
}

#[test]
fn golden_replies_encode_byte_for_byte() {
    let req = |ty: MsgType, rid: u32, tid: u32| Packet::new(ty, rid, tid, vec![]);
    let cases: Vec<(Packet, &str)> = vec![
        (
            req(MsgType::Read, 14, 6).reply(MsgType::Read, b"theresult".to_vec()),
            r"\x02\x00\x00\x00\x0e\x00\x00\x00\x06\x00\x00\x00\x09\x00\x00\x00\x74\x68\x65\x72\x65\x73\x75\x6c\x74",
        ),
        (
            req(MsgType::GetPerms, 13, 7).reply(MsgType::GetPerms, b"r2\0n4\0".to_vec()),
            r"\x03\x00\x00\x00\x0d\x00\x00\x00\x07\x00\x00\x00\x06\x00\x00\x00\x72\x32\x00\x6e\x34\x00",
        ),
        (
            req(MsgType::Write, 10, 1).ok(),
            r"\x0b\x00\x00\x00\x0a\x00\x00\x00\x01\x00\x00\x00\x03\x00\x00\x00\x4f\x4b\x00",
        ),
        (
            req(MsgType::Mkdir, 9, 1024).ok(),
            r"\x0c\x00\x00\x00\x09\x00\x00\x00\x00\x04\x00\x00\x03\x00\x00\x00\x4f\x4b\x00",
        ),
        (
            req(MsgType::Directory, 15, 5).reply(
                MsgType::Directory,
                b"a\0b\0c\0aseasyas\x001\x002\x003\0".to_vec(),
            ),
            r"\x01\x00\x00\x00\x0f\x00\x00\x00\x05\x00\x00\x00\x15\x00\x00\x00\x61\x00\x62\x00\x63\x00\x61\x73\x65\x61\x73\x79\x61\x73\x00\x31\x00\x32\x00\x33\x00",
        ),
    ];
    for (p, wire) in cases {
        assert_eq!(p.encode(), hex(wire));
    }
}

// ----- a harness over the store -----

struct H {
    s: Store,
    out: Vec<Out>,
    next_id: u32,
}

impl H {
    fn new() -> Self {
        Self::with(Quota::default())
    }

    fn with(q: Quota) -> Self {
        H {
            s: Store::new(q),
            out: Vec::new(),
            next_id: 1,
        }
    }

    fn dom0(&mut self) -> ConnId {
        self.s.connect_privileged()
    }

    /// Introduces domain `d` and connects as it.
    fn domu(&mut self, d: u32) -> ConnId {
        let c = self.dom0();
        self.ok(
            c,
            0,
            MsgType::Introduce,
            format!("{d}\x001\x001\0").as_bytes(),
        );
        self.s.connect_domain(d).unwrap()
    }

    /// Sends a request; returns the reply (events stay queued).
    fn req(&mut self, c: ConnId, tx: u32, ty: MsgType, payload: &[u8]) -> Packet {
        self.next_id += 1;
        let p = Packet::new(ty, self.next_id, tx, payload.to_vec());
        let mut out = Vec::new();
        self.s.handle(c, &p, &mut out);
        let mut reply = None;
        for o in out {
            match o {
                Out::Send(to, r)
                    if to == c && reply.is_none() && r.req_id == p.req_id && r.ty != 15 =>
                {
                    reply = Some(r)
                }
                other => self.out.push(other),
            }
        }
        reply.expect("a reply")
    }

    fn ok(&mut self, c: ConnId, tx: u32, ty: MsgType, payload: &[u8]) -> Vec<u8> {
        let r = self.req(c, tx, ty, payload);
        assert_ne!(
            r.ty,
            16,
            "{ty:?} {:?}: {:?}",
            String::from_utf8_lossy(payload),
            String::from_utf8_lossy(&r.payload)
        );
        r.payload
    }

    fn err(&mut self, c: ConnId, tx: u32, ty: MsgType, payload: &[u8]) -> String {
        let r = self.req(c, tx, ty, payload);
        assert_eq!(
            r.ty,
            16,
            "{ty:?} {:?} should fail",
            String::from_utf8_lossy(payload)
        );
        String::from_utf8_lossy(r.payload.strip_suffix(b"\0").unwrap()).into_owned()
    }

    fn write(&mut self, c: ConnId, path: &str, v: &str) {
        self.ok(c, 0, MsgType::Write, format!("{path}\0{v}").as_bytes());
    }

    fn read(&mut self, c: ConnId, tx: u32, path: &str) -> Result<String, String> {
        let r = self.req(c, tx, MsgType::Read, format!("{path}\0").as_bytes());
        let text = String::from_utf8_lossy(&r.payload).into_owned();
        if r.ty == 16 {
            Err(text.trim_end_matches('\0').to_owned())
        } else {
            Ok(text)
        }
    }

    /// Watch events queued for `c` (taken).
    fn events(&mut self, c: ConnId) -> Vec<String> {
        let mut mine = Vec::new();
        self.out.retain(|o| match o {
            Out::Send(to, p) if *to == c && p.ty == 15 => {
                let mut parts = p.payload.split(|b| *b == 0);
                mine.push(String::from_utf8_lossy(parts.next().unwrap()).into_owned());
                false
            }
            _ => true,
        });
        mine
    }
}

#[test]
fn permissions_ownership_and_errors() {
    let mut h = H::new();
    let d0 = h.dom0();
    let d5 = h.domu(5);
    let d6 = h.domu(6);
    // dom0 builds the domain's home and hands it over.
    h.write(d0, "/local/domain/5/data", "");
    h.ok(d0, 0, MsgType::SetPerms, b"/local/domain/5\0n5\0r6\0");
    h.ok(d0, 0, MsgType::SetPerms, b"/local/domain/5/data\0n5\0");
    // The owner writes below; its new node is owned by it (inherited perms).
    h.write(d5, "/local/domain/5/data/x", "1");
    assert_eq!(
        h.ok(d0, 0, MsgType::GetPerms, b"/local/domain/5/data/x\0"),
        b"n5\0"
    );
    // Relative paths of a domain live under its home.
    h.write(d5, "data/y", "2");
    assert_eq!(h.read(d0, 0, "/local/domain/5/data/y"), Ok("2".into()));
    // dom6 may read /local/domain/5 (r6) but not data (n5 only); missing
    // nodes under an unreadable parent are EACCES, not ENOENT.
    h.ok(d6, 0, MsgType::Directory, b"/local/domain/5\0");
    assert_eq!(
        h.read(d6, 0, "/local/domain/5/data/x"),
        Err("EACCES".into())
    );
    assert_eq!(
        h.read(d6, 0, "/local/domain/5/data/nothing"),
        Err("EACCES".into())
    );
    assert_eq!(
        h.read(d6, 0, "/local/domain/5/nothing"),
        Err("ENOENT".into())
    );
    assert_eq!(
        h.err(d6, 0, MsgType::Write, b"/local/domain/5/z\0v"),
        "EACCES"
    );
    // Root is n0: unprivileged domains cannot write or list it.
    assert_eq!(h.err(d5, 0, MsgType::Write, b"/evil\0v"), "EACCES");
    assert_eq!(h.err(d5, 0, MsgType::Directory, b"/\0"), "EACCES");
    // Only the owner sets perms, and may not give the node away.
    assert_eq!(
        h.err(d6, 0, MsgType::SetPerms, b"/local/domain/5/data/x\0n6\0"),
        "EACCES"
    );
    assert_eq!(
        h.err(d5, 0, MsgType::SetPerms, b"/local/domain/5/data/x\0n6\0"),
        "EPERM"
    );
    h.ok(
        d5,
        0,
        MsgType::SetPerms,
        b"/local/domain/5/data/x\0n5\0r6\0",
    );
    assert_eq!(h.read(d6, 0, "/local/domain/5/data/x"), Ok("1".into()));
    // SET_TARGET: a device model for dom5 (dom6 targeting 5) gets owner rights.
    h.ok(d0, 0, MsgType::SetTarget, b"6\x005\0");
    assert_eq!(h.read(d6, 0, "/local/domain/5/data/y"), Ok("2".into()));
    // Privileged-only requests.
    assert_eq!(h.err(d5, 0, MsgType::Introduce, b"9\x001\x001\0"), "EACCES");
    assert_eq!(h.err(d5, 0, MsgType::Control, b"check\0"), "EACCES");
    assert_eq!(h.ok(d0, 0, MsgType::Control, b"check\0"), b"OK\0");
    assert_eq!(h.err(d0, 0, MsgType::Control, b"bogus\0"), "EINVAL");
    // Reserved ids name no domain.
    for reserved in [b"4294967295\x001\x001\0".as_slice(), b"32752\x001\x001\0"] {
        assert_eq!(h.err(d0, 0, MsgType::Introduce, reserved), "EINVAL");
    }
    // The protocol's limit holds for clients in process too: a value over
    // 4096 bytes is refused, so no reply can grow past it.
    let mut big = b"/local/domain/5/data/big\0".to_vec();
    big.extend(std::iter::repeat_n(b'x', 4100));
    assert_eq!(h.err(d0, 0, MsgType::Write, &big), "E2BIG");
    assert!(h.read(d0, 0, "/local/domain/5/data/big").is_err());
}

#[test]
fn write_mkdir_rm_rules() {
    let mut h = H::new();
    let c = h.dom0();
    h.write(c, "/a/b/c", "v");
    assert_eq!(
        h.read(c, 0, "/a/b"),
        Ok("".into()),
        "parents created, empty"
    );
    h.ok(c, 0, MsgType::Mkdir, b"/a/b\0");
    assert_eq!(
        h.read(c, 0, "/a/b/c"),
        Ok("v".into()),
        "mkdir of an existing node changes nothing"
    );
    assert_eq!(h.err(c, 0, MsgType::Rm, b"/\0"), "EINVAL");
    h.ok(c, 0, MsgType::Rm, b"/a/b/nothing\0");
    assert_eq!(h.err(c, 0, MsgType::Rm, b"/no/thing\0"), "ENOENT");
    h.ok(c, 0, MsgType::Rm, b"/a\0");
    assert_eq!(h.read(c, 0, "/a/b/c"), Err("ENOENT".into()));
    // Values keep embedded NULs.
    h.ok(c, 0, MsgType::Write, b"/bin\0a\0b");
    assert_eq!(h.ok(c, 0, MsgType::Read, b"/bin\0"), b"a\0b");
    assert_eq!(
        h.ok(c, 0, MsgType::GetDomainPath, b"7\0"),
        b"/local/domain/7\0"
    );
    assert_eq!(h.ok(c, 0, MsgType::IsDomainIntroduced, b"0\0"), b"T\0");
    assert_eq!(h.ok(c, 0, MsgType::IsDomainIntroduced, b"7\0"), b"F\0");
}

#[test]
fn quotas_bind_unprivileged_domains_only() {
    let q = Quota {
        nodes: 20,
        watches: 3,
        transactions: 2,
        node_size: 100,
        perms: 2,
        transaction_nodes: 10,
        ..Quota::default()
    };
    let mut h = H::with(q);
    let d0 = h.dom0();
    let d = h.domu(3);
    h.write(d0, "/local/domain/3", "");
    h.ok(d0, 0, MsgType::SetPerms, b"/local/domain/3\0n3\0");
    // Owned: the home node, "data" (created with the first key), 18 keys.
    for i in 0..18 {
        h.write(d, &format!("data/k{i}"), "x");
    }
    assert_eq!(
        h.err(d, 0, MsgType::Write, b"data/one-too-many\0x"),
        "ENOSPC"
    );
    h.ok(d, 0, MsgType::Rm, b"data/k0\0");
    h.write(d, "data/k0", "x");
    assert_eq!(
        h.err(
            d,
            0,
            MsgType::Write,
            &[b"data/k1\0".as_slice(), &[b'v'; 101]].concat()
        ),
        "ENOSPC"
    );
    assert_eq!(
        h.err(d, 0, MsgType::SetPerms, b"data/k1\0n3\0r1\0r2\0"),
        "ENOSPC"
    );
    for i in 0..3 {
        h.ok(d, 0, MsgType::Watch, format!("data\0t{i}\0").as_bytes());
    }
    assert_eq!(h.err(d, 0, MsgType::Watch, b"data\0t9\0"), "E2BIG");
    h.ok(d, 0, MsgType::TransactionStart, b"\0");
    h.ok(d, 0, MsgType::TransactionStart, b"\0");
    assert_eq!(h.err(d, 0, MsgType::TransactionStart, b"\0"), "ENOSPC");
    // dom0 is not bound.
    for i in 0..30 {
        h.write(d0, &format!("/dom0/k{i}"), &"v".repeat(200));
    }
    for i in 0..5 {
        h.ok(d0, 0, MsgType::Watch, format!("/\0t{i}\0").as_bytes());
    }
}

#[test]
fn transactions_see_their_own_view_and_conflict_only_on_what_they_read() {
    let mut h = H::new();
    let c = h.dom0();
    let other = h.dom0();
    h.write(c, "/t/a", "a");
    let tx: u32 = String::from_utf8(h.ok(c, 0, MsgType::TransactionStart, b"\0"))
        .unwrap()
        .trim_end_matches('\0')
        .parse()
        .unwrap();
    assert_eq!(tx, 1);
    assert_eq!(h.err(c, tx, MsgType::TransactionStart, b"\0"), "EBUSY");
    assert_eq!(h.read(c, tx, "/t/a"), Ok("a".into()));
    h.write(other, "/t/a", "b");
    assert_eq!(h.read(c, tx, "/t/a"), Ok("a".into()), "its own view");
    h.ok(c, tx, MsgType::Write, b"/t/a\0c");
    assert_eq!(h.read(c, tx, "/t/a"), Ok("c".into()));
    assert_eq!(h.read(c, 0, "/t/a"), Ok("b".into()), "not visible outside");
    assert_eq!(h.err(c, tx, MsgType::TransactionEnd, b"T\0"), "EAGAIN");
    assert_eq!(
        h.err(c, tx, MsgType::TransactionEnd, b"T\0"),
        "ENOENT",
        "a failed end still ends it"
    );
    assert_eq!(h.read(c, 0, "/t/a"), Ok("b".into()));
    assert_eq!(h.err(c, 77, MsgType::Read, b"/t/a\0"), "ENOENT");

    // Two device setups under the same parent, interleaved: both commit.
    h.ok(other, 0, MsgType::Watch, b"/backend\0w\0");
    h.events(other);
    let t1 = h.ok(c, 0, MsgType::TransactionStart, b"\0");
    let t2 = h.ok(other, 0, MsgType::TransactionStart, b"\0");
    let (t1, t2): (u32, u32) = (
        String::from_utf8_lossy(&t1)
            .trim_end_matches('\0')
            .parse()
            .unwrap(),
        String::from_utf8_lossy(&t2)
            .trim_end_matches('\0')
            .parse()
            .unwrap(),
    );
    h.ok(c, t1, MsgType::Write, b"/backend/vbd/1/51712/state\x001");
    h.ok(
        other,
        t2,
        MsgType::Write,
        b"/backend/vbd/2/51712/state\x001",
    );
    h.ok(c, t1, MsgType::Write, b"/backend/vbd/1/51712/online\x001");
    assert!(h.events(other).is_empty(), "watches fire at commit only");
    h.ok(c, t1, MsgType::TransactionEnd, b"T\0");
    h.ok(other, t2, MsgType::TransactionEnd, b"T\0");
    let mut ev = h.events(other);
    ev.sort();
    assert_eq!(
        ev,
        [
            "/backend/vbd/1/51712/online",
            "/backend/vbd/1/51712/state",
            "/backend/vbd/2/51712/state"
        ]
    );
    assert_eq!(
        h.ok(c, 0, MsgType::Directory, b"/backend/vbd\0"),
        b"1\x002\0"
    );
    // Abort discards; a read of an absent node is recorded too.
    let t3: u32 = String::from_utf8_lossy(&h.ok(c, 0, MsgType::TransactionStart, b"\0"))
        .trim_end_matches('\0')
        .parse()
        .unwrap();
    assert_eq!(h.read(c, t3, "/t/new"), Err("ENOENT".into()));
    h.ok(c, t3, MsgType::Write, b"/t/x\0gone");
    h.ok(c, t3, MsgType::TransactionEnd, b"F\0");
    assert_eq!(h.read(c, 0, "/t/x"), Err("ENOENT".into()));
    let t4: u32 = String::from_utf8_lossy(&h.ok(c, 0, MsgType::TransactionStart, b"\0"))
        .trim_end_matches('\0')
        .parse()
        .unwrap();
    assert_eq!(h.read(c, t4, "/t/new"), Err("ENOENT".into()));
    h.write(other, "/t/new", "1");
    assert_eq!(h.err(c, t4, MsgType::TransactionEnd, b"T\0"), "EAGAIN");
    assert_eq!(h.ok(c, 0, MsgType::Control, b"check\0"), b"OK\0");
}

#[test]
fn watches_fire_as_the_c_daemon_fires_them() {
    let mut h = H::new();
    let d0 = h.dom0();
    let w = h.dom0();
    h.ok(w, 0, MsgType::Watch, b"/x\0tok\0");
    assert_eq!(h.events(w), ["/x"], "initial event");
    assert_eq!(h.err(w, 0, MsgType::Watch, b"/x\0tok\0"), "EEXIST");
    h.write(d0, "/x/y/z", "1");
    h.write(d0, "/xy", "1");
    assert_eq!(h.events(w), ["/x/y/z"]);
    // Depth 1.
    h.ok(w, 0, MsgType::Watch, b"/d\0shallow\x001\0");
    h.events(w);
    h.write(d0, "/d/one", "1");
    h.write(d0, "/d/one/two", "1");
    assert_eq!(h.events(w), ["/d/one"]);
    // Removing a subtree fires watches below it with their own path.
    h.ok(w, 0, MsgType::Watch, b"/x/y/z\0deep\0");
    h.events(w);
    h.ok(d0, 0, MsgType::Rm, b"/x/y\0");
    let mut ev = h.events(w);
    ev.sort();
    assert_eq!(ev, ["/x/y", "/x/y/z"]);
    // MKDIR of an existing node fires nothing.
    h.ok(d0, 0, MsgType::Mkdir, b"/x\0");
    assert!(h.events(w).is_empty());
    assert_eq!(h.err(w, 0, MsgType::Unwatch, b"/x\0nope\0"), "ENOENT");
    h.ok(w, 0, MsgType::Unwatch, b"/x\0tok\0");
    h.write(d0, "/x/again", "1");
    assert!(h.events(w).iter().all(|e| e != "/x/again"));
    h.ok(w, 0, MsgType::ResetWatches, b"");
    h.write(d0, "/d/one", "2");
    assert!(h.events(w).is_empty());

    // A domain's relative watch gets relative paths, and only what it can read.
    let d7 = h.domu(7);
    h.write(d0, "/local/domain/7/device", "");
    h.ok(d0, 0, MsgType::SetPerms, b"/local/domain/7\0n7\0");
    h.ok(d0, 0, MsgType::SetPerms, b"/local/domain/7/device\0n7\0");
    h.ok(d7, 0, MsgType::Watch, b"device\0rel\0");
    assert_eq!(h.events(d7), ["device"]);
    h.write(d0, "/local/domain/7/device/vif", "");
    assert_eq!(h.events(d7), ["device/vif"]);
    h.ok(d7, 0, MsgType::Watch, b"/secret\0abs\0");
    h.events(d7);
    h.write(d0, "/secret/key", "1");
    assert!(h.events(d7).is_empty(), "unreadable: no event");

    // @introduceDomain / @releaseDomain go to privileged watchers (perms n0).
    h.ok(w, 0, MsgType::Watch, b"@introduceDomain\0i\0");
    h.ok(w, 0, MsgType::Watch, b"@releaseDomain\0r\0");
    h.ok(d7, 0, MsgType::Watch, b"@releaseDomain\0r7\0");
    h.events(w);
    h.events(d7);
    h.domu(8);
    assert_eq!(h.events(w), ["@introduceDomain"]);
    h.ok(d0, 0, MsgType::Release, b"8\0");
    assert_eq!(h.events(w), ["@releaseDomain"]);
    assert!(h.events(d7).is_empty());
    assert_eq!(h.err(d0, 0, MsgType::Write, b"@releaseDomain\0x"), "EINVAL");
    assert_eq!(h.ok(d0, 0, MsgType::GetPerms, b"@releaseDomain\0"), b"n0\0");
}

#[test]
fn release_removes_the_domains_nodes_and_closes_it() {
    let mut h = H::new();
    let d0 = h.dom0();
    let d = h.domu(4);
    h.write(d0, "/local/domain/4/data", "");
    h.ok(d0, 0, MsgType::SetPerms, b"/local/domain/4/data\0n4\0");
    h.write(d, "data/a/b", "1");
    h.write(d0, "/local/domain/4/name", "vm4");
    assert_eq!(h.ok(d0, 0, MsgType::IsDomainIntroduced, b"4\0"), b"T\0");
    h.ok(d0, 0, MsgType::Release, b"4\0");
    assert!(h.out.contains(&Out::Close(d)));
    assert_eq!(h.read(d0, 0, "/local/domain/4/data"), Err("ENOENT".into()));
    assert_eq!(
        h.read(d0, 0, "/local/domain/4/name"),
        Ok("vm4".into()),
        "dom0's nodes stay"
    );
    assert_eq!(h.ok(d0, 0, MsgType::IsDomainIntroduced, b"4\0"), b"F\0");
    assert_eq!(h.err(d0, 0, MsgType::Release, b"4\0"), "ENOENT");
    assert!(h.s.connect_domain(4).is_err());
    assert_eq!(h.ok(d0, 0, MsgType::Control, b"check\0"), b"OK\0");
}

#[test]
fn big_directories_need_directory_part() {
    let mut h = H::new();
    let c = h.dom0();
    let mut want = Vec::new();
    for i in 0..600 {
        let name = format!("child-number-{i:04}");
        h.write(c, &format!("/big/{name}"), "");
        want.extend_from_slice(name.as_bytes());
        want.push(0);
    }
    assert_eq!(h.err(c, 0, MsgType::Directory, b"/big\0"), "E2BIG");
    let mut got = Vec::new();
    let mut generation = None;
    loop {
        let part = h.ok(
            c,
            0,
            MsgType::DirectoryPart,
            format!("/big\0{}\0", got.len()).as_bytes(),
        );
        assert!(part.len() <= 4096);
        let nul = part.iter().position(|b| *b == 0).unwrap();
        let g = String::from_utf8_lossy(&part[..nul]).into_owned();
        assert_eq!(
            *generation.get_or_insert(g.clone()),
            g,
            "same generation throughout"
        );
        let body = &part[nul + 1..];
        if body.ends_with(b"\0\0") || body == b"\0" {
            got.extend_from_slice(&body[..body.len() - 1]);
            break;
        }
        got.extend_from_slice(body);
    }
    assert_eq!(got, want);
    assert_eq!(
        h.err(c, 0, MsgType::DirectoryPart, b"/big\x00999999\0"),
        "EINVAL"
    );
}
