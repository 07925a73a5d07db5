//! Conformance with real Xen software, against `xenithd xenstored`:
//! Debian's xenstore-utils (each tool's output and exit code as the C
//! daemon gives them), Xen's test-xenstore (every test, 100 iterations, one
//! by one with -t), and bad input on the raw socket.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const XENITHD: &str = env!("CARGO_BIN_EXE_xenithd");
const TEST_XENSTORE: &str = "/usr/lib/xen-4.17/bin/test-xenstore";

mod common;

use common::xenstored::Xenstored;

trait Tools {
    fn tool(&self, name: &str, args: &[&str]) -> Output;
    fn expect(&self, name: &str, args: &[&str], code: i32, stdout: &str, stderr: &str);
}

impl Tools for Xenstored {
    fn tool(&self, name: &str, args: &[&str]) -> Output {
        let path = Path::new("/usr/bin").join(name);
        assert!(
            path.exists(),
            "{} is missing: run ./scripts/test, which installs Debian's xenstore-utils",
            path.display()
        );
        Command::new(path)
            .args(args)
            .env("XENSTORED_PATH", &self.socket)
            .output()
            .unwrap()
    }

    /// Runs a tool and checks its exit code, stdout and stderr exactly.
    fn expect(&self, name: &str, args: &[&str], code: i32, stdout: &str, stderr: &str) {
        let out = self.tool(name, args);
        let got = (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert_eq!(
            got,
            (Some(code), stdout.to_owned(), stderr.to_owned()),
            "{name} {args:?}"
        );
    }
}

#[test]
fn xenstore_utils_behave_as_with_the_c_daemon() {
    let xs = Xenstored::start(XENITHD);
    xs.expect(
        "xenstore-write",
        &["/a/b", "hello", "/a/c", "world"],
        0,
        "",
        "",
    );
    xs.expect("xenstore-read", &["/a/b", "/a/c"], 0, "hello\nworld\n", "");
    xs.expect(
        "xenstore-read",
        &["/missing"],
        1,
        "",
        "xenstore-read: couldn't read path /missing\n",
    );
    xs.expect(
        "xenstore-ls",
        &["/a"],
        0,
        "b = \"hello\"\nc = \"world\"\n",
        "",
    );
    xs.expect(
        "xenstore-ls",
        &["-f", "/a"],
        0,
        "/a/b = \"hello\"\n/a/c = \"world\"\n",
        "",
    );
    xs.expect(
        "xenstore-ls",
        &["/"],
        0,
        "tool = \"\"\n xenstored = \"\"\na = \"\"\n b = \"hello\"\n c = \"world\"\n",
        "",
    );
    xs.expect("xenstore-list", &["/a"], 0, "b\nc\n", "");
    xs.expect(
        "xenstore-list",
        &["/missing"],
        1,
        "",
        "xenstore-list: could not list path /missing\n",
    );
    xs.expect("xenstore-exists", &["/a/b"], 0, "", "");
    xs.expect("xenstore-exists", &["/a/zz"], 1, "", "");
    // RM: a missing node under an existing parent is fine; a missing parent is not.
    xs.expect("xenstore-rm", &["/a/zz"], 0, "", "");
    xs.expect(
        "xenstore-rm",
        &["/nope/zz"],
        1,
        "",
        "xenstore-rm: could not remove path /nope/zz\n",
    );
    xs.expect("xenstore-rm", &["/a/b"], 0, "", "");
    xs.expect("xenstore-exists", &["/a/b"], 1, "", "");
    // Permissions.
    xs.expect("xenstore-chmod", &["/a/c", "r5", "w6"], 0, "", "");
    let out = xs.tool("xenstore-ls", &["-p", "/a"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .trim_end()
            .rsplit(' ')
            .next(),
        Some("(r5,w6)")
    );
    xs.expect(
        "xenstore-chmod",
        &["/nope", "n0"],
        1,
        "",
        "xenstore-chmod: Error occurred setting permissions on '/nope': No such file or directory\n",
    );
    // Invalid paths; relative paths live under /local/domain/0 for a socket client.
    xs.expect(
        "xenstore-write",
        &["/bad//path", "x"],
        1,
        "",
        "xenstore-write: could not write path /bad//path\n",
    );
    xs.expect(
        "xenstore-write",
        &["/bad/", "x"],
        1,
        "",
        "xenstore-write: could not write path /bad/\n",
    );
    xs.expect("xenstore-write", &["rel/x", "1"], 0, "", "");
    xs.expect("xenstore-read", &["/local/domain/0/rel/x"], 0, "1\n", "");
    xs.expect("xenstore-read", &["rel/x"], 0, "1\n", "");
    // A large value, and rm of a subtree.
    let big = "v".repeat(3000);
    xs.expect("xenstore-write", &["/big/one", &big], 0, "", "");
    xs.expect("xenstore-read", &["/big/one"], 0, &format!("{big}\n"), "");
    xs.expect("xenstore-rm", &["/big"], 0, "", "");
    xs.expect(
        "xenstore-list",
        &["/big"],
        1,
        "",
        "xenstore-list: could not list path /big\n",
    );
}

#[test]
fn xenstore_watch_sees_the_initial_event_then_changes() {
    let xs = Xenstored::start(XENITHD);
    xs.expect("xenstore-write", &["/w/x", "0"], 0, "", "");
    let watch = Command::new("/usr/bin/xenstore-watch")
        .args(["-n", "3", "/w"])
        .env("XENSTORED_PATH", &xs.socket)
        .stdout(Stdio::piped())
        .spawn()
        .expect("xenstore-watch (xenstore-utils) is missing: run ./scripts/test");
    std::thread::sleep(Duration::from_millis(300));
    xs.expect("xenstore-write", &["/w/x", "1"], 0, "", "");
    xs.expect("xenstore-write", &["/elsewhere", "1"], 0, "", "");
    xs.expect("xenstore-rm", &["/w"], 0, "", "");
    let out = watch.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "/w\n/w/x\n/w\n");
}

#[test]
fn test_xenstore_passes_every_test_100_times() {
    assert!(
        Path::new(TEST_XENSTORE).exists(),
        "{TEST_XENSTORE} is missing: run ./scripts/test, which installs Debian's xen-utils-4.17"
    );
    let xs = Xenstored::start(XENITHD);
    let list = Command::new(TEST_XENSTORE).arg("-l").output().unwrap();
    let names: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter_map(|l| l.split(':').next())
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .collect();
    assert_eq!(names.len(), 12, "{names:?}");
    for name in names {
        let out = Command::new(TEST_XENSTORE)
            .args(["-t", &name, "-i", "100"])
            .env("XENSTORED_PATH", &xs.socket)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && !text.contains("failed"),
            "test-xenstore -t {name:?}: {text}"
        );
        assert!(
            text.contains("avg:"),
            "test-xenstore -t {name:?} ran: {text}"
        );
    }
}

// ----- bad input on the raw socket -----

fn packet(ty: u32, req_id: u32, tx_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    for f in [ty, req_id, tx_id, payload.len() as u32] {
        v.extend_from_slice(&f.to_le_bytes());
    }
    v.extend_from_slice(payload);
    v
}

fn read_reply(s: &mut UnixStream) -> (u32, u32, Vec<u8>) {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut h = [0u8; 16];
    s.read_exact(&mut h).unwrap();
    let f = |i: usize| u32::from_le_bytes(h[i..i + 4].try_into().unwrap());
    let mut payload = vec![0u8; f(12) as usize];
    s.read_exact(&mut payload).unwrap();
    (f(0), f(4), payload)
}

fn closed(s: &mut UnixStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut b = [0u8; 64];
    matches!(s.read(&mut b), Ok(0) | Err(_))
}

#[test]
fn bad_requests_get_the_right_error_and_bad_streams_lose_their_connection_only() {
    let xs = Xenstored::start(XENITHD);
    xs.expect("xenstore-write", &["/keep", "safe"], 0, "", "");
    let mut bystander = UnixStream::connect(&xs.socket).unwrap();
    let mut s = UnixStream::connect(&xs.socket).unwrap();
    // A path without its NUL, an invalid path, an unknown type, a type only
    // the daemon sends, a transaction that does not exist.
    let cases: [(u32, &[u8], u32, &str); 6] = [
        (2, b"/keep", 0, "EINVAL"),
        (2, b"/a//b\0", 0, "EINVAL"),
        (99, b"", 0, "ENOSYS"),
        (15, b"/keep\0t\0", 0, "ENOSYS"),
        (2, b"/keep\0", 42, "ENOENT"),
        (7, b"T\0", 0, "ENOENT"),
    ];
    for (i, (ty, payload, tx, want)) in cases.iter().enumerate() {
        s.write_all(&packet(*ty, i as u32 + 1, *tx, payload))
            .unwrap();
        let (rty, rid, body) = read_reply(&mut s);
        assert_eq!((rty, rid), (16, i as u32 + 1), "case {i}");
        assert_eq!(body, [want.as_bytes(), b"\0"].concat(), "case {i}");
    }
    // The connection still works.
    s.write_all(&packet(2, 9, 0, b"/keep\0")).unwrap();
    assert_eq!(read_reply(&mut s), (2, 9, b"safe".to_vec()));
    // A header announcing more than 4096 bytes: the connection is dropped.
    s.write_all(&packet(11, 10, 0, &[])[..12]).unwrap();
    s.write_all(&4097u32.to_le_bytes()).unwrap();
    assert!(closed(&mut s));
    // A truncated header, then hang up: nothing is left behind.
    let mut t = UnixStream::connect(&xs.socket).unwrap();
    t.write_all(&[2, 0, 0]).unwrap();
    drop(t);
    // Random bytes.
    let mut r = UnixStream::connect(&xs.socket).unwrap();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let junk: Vec<u8> = (0..4096)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect();
    let _ = r.write_all(&junk);
    let _ = closed(&mut r);
    // Nobody else noticed, and the data is intact.
    bystander.write_all(&packet(2, 1, 0, b"/keep\0")).unwrap();
    assert_eq!(read_reply(&mut bystander), (2, 1, b"safe".to_vec()));
    xs.expect("xenstore-read", &["/keep"], 0, "safe\n", "");
}
