//! The fuzz harnesses on pseudo-random input (a fixed seed, so a failure
//! reproduces): what the cargo-fuzz targets found stays fixed. The real
//! fuzzing is `cargo fuzz run xs_store` etc. (see docs/xenstore.md).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Inputs shaped like the store harness expects: plausible requests
/// (valid paths, NULs, perms) mixed with junk.
fn request_stream(rng: &mut Rng) -> Vec<u8> {
    const PIECES: &[&[u8]] = &[
        b"/a",
        b"/a/b",
        b"/local/domain/1/data/x",
        b"data/y",
        b"/",
        b"@releaseDomain",
        b"//",
        b"\0",
        b"n0",
        b"r1",
        b"b2",
        b"T",
        b"F",
        b"1",
        b"0",
        b"tok",
        b"/local/domain/2",
        b"check",
    ];
    let mut out = Vec::new();
    for _ in 0..(rng.next() % 60) {
        let mut payload = Vec::new();
        for _ in 0..(rng.next() % 5) {
            payload.extend_from_slice(PIECES[(rng.next() as usize) % PIECES.len()]);
            if rng.next() % 3 != 0 {
                payload.push(0);
            }
        }
        payload.truncate(255);
        out.extend_from_slice(&[
            rng.next() as u8,
            (rng.next() % 27) as u8,
            (rng.next() % 4) as u8,
            payload.len() as u8,
        ]);
        out.extend_from_slice(&payload);
    }
    out
}

#[test]
fn the_store_survives_and_stays_consistent_under_random_requests() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..3000 {
        xenith::xenstored::fuzz::store(&request_stream(&mut rng));
    }
}

#[test]
fn the_decoder_survives_random_bytes() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for _ in 0..3000 {
        let n = (rng.next() % 300) as usize;
        let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
        xenith::xenstored::fuzz::decode(&bytes);
        xenith::xenstored::fuzz::store(&bytes);
    }
}
