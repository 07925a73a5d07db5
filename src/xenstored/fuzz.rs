//! Harnesses shared by the cargo-fuzz targets (fuzz/) and the randomised
//! regression test (tests/xenstore_fuzz.rs): arbitrary bytes must never
//! panic the decoder or the store, and the store must stay consistent.

use tokio_util::bytes::BytesMut;
use tokio_util::codec::Decoder;

use super::{Out, Quota, Store};
use crate::xs::{parse_request, MsgType, Packet, XsCodec};

/// Decodes `data` as a stream of packets and parses each as a request.
pub fn decode(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(p)) = XsCodec.decode(&mut buf) {
        let _ = parse_request(&p);
    }
}

/// Interprets `data` as requests from three connections (dom0, and two
/// domains with small quotas) against one store; checks its consistency
/// at the end. Panics (the fuzzer's signal) if the store is inconsistent.
pub fn store(data: &[u8]) {
    let quota = Quota {
        nodes: 40,
        watches: 4,
        transactions: 3,
        transaction_nodes: 30,
        ..Quota::default()
    };
    let mut s = Store::new(quota);
    let dom0 = s.connect_privileged();
    let mut out: Vec<Out> = Vec::new();
    for d in [1u32, 2] {
        let intro = Packet::new(
            MsgType::Introduce,
            0,
            0,
            format!("{d}\x000\x000\0").into_bytes(),
        );
        s.handle(dom0, &intro, &mut out);
    }
    let setup = [
        (MsgType::Write, &b"/local/domain/1/data\0"[..]),
        (MsgType::SetPerms, b"/local/domain/1\0n1\0r2\0"),
        (MsgType::SetPerms, b"/local/domain/1/data\0b1\0"),
    ];
    for (ty, payload) in setup {
        s.handle(dom0, &Packet::new(ty, 0, 0, payload.to_vec()), &mut out);
    }
    let conns = [
        dom0,
        s.connect_domain(1).unwrap_or(dom0),
        s.connect_domain(2).unwrap_or(dom0),
    ];
    // Each request: 1 byte connection, 1 byte type, 1 byte tx id, 1 byte
    // length, then the payload.
    let mut rest = data;
    while rest.len() >= 4 {
        let (conn, ty, tx, len) = (rest[0], rest[1], rest[2], rest[3] as usize);
        rest = &rest[4..];
        let payload = &rest[..len.min(rest.len())];
        rest = &rest[payload.len()..];
        let conn = conns[conn as usize % conns.len()];
        let p = Packet {
            ty: u32::from(ty % 28),
            req_id: 1,
            tx_id: u32::from(tx % 4),
            payload: payload.to_vec(),
        };
        out.clear();
        s.handle(conn, &p, &mut out);
    }
    let check = Packet::new(MsgType::Control, 0, 0, b"check\0".to_vec());
    out.clear();
    s.handle(dom0, &check, &mut out);
    match out.first() {
        Some(Out::Send(_, reply)) if reply.payload == b"OK\0" => {}
        other => panic!("store inconsistent after fuzz input: {other:?}"),
    }
}
