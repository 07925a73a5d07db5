//! The xenstore client: over the socket to `xenithd xenstored`, and in
//! process to the embedded xenstored as dom0 and as a domain.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::xenstored::Xenstored;

use futures_util::future::join_all;
use xenith::drivers::xenstore::{XsClient, XsClientError};
use xenith::xs::{Perm, PermLetter, XsError};

const XENITHD: &str = env!("CARGO_BIN_EXE_xenithd");

fn perm(letter: PermLetter, domid: u32) -> Perm {
    Perm { letter, domid }
}

/// Exercises a client against any xenstored (privileged connection).
async fn exercise(c: &XsClient) {
    c.write("/c/a", "1").await.unwrap();
    assert_eq!(c.read("/c/a").await.unwrap(), b"1");
    assert_eq!(c.read_opt("/c/none").await.unwrap(), None);
    assert!(matches!(
        c.read("/c/none").await,
        Err(XsClientError::Xs(XsError::ENOENT))
    ));
    c.mkdir("/c/dir").await.unwrap();
    assert_eq!(c.directory("/c").await.unwrap(), ["a", "dir"]);
    c.set_perms(
        "/c/a",
        &[perm(PermLetter::None, 0), perm(PermLetter::Read, 3)],
    )
    .await
    .unwrap();
    assert_eq!(
        c.get_perms("/c/a").await.unwrap(),
        [perm(PermLetter::None, 0), perm(PermLetter::Read, 3)]
    );
    assert_eq!(c.get_domain_path(12).await.unwrap(), "/local/domain/12");

    // Pipelined: 2,000 requests in flight at once on one connection.
    let writes = (0..1000).map(|i| {
        let c = c.clone();
        async move { c.write(&format!("/p/k{i}"), i.to_string()).await }
    });
    assert!(join_all(writes).await.iter().all(Result::is_ok));
    let reads = (0..1000).map(|i| {
        let c = c.clone();
        async move {
            c.read(&format!("/p/k{i}"))
                .await
                .map(|v| v == i.to_string().as_bytes())
        }
    });
    assert!(join_all(reads).await.into_iter().all(|r| r.unwrap()));

    // A watch, as a stream.
    let mut w = c.watch("/c").await.unwrap();
    assert_eq!(w.next().await.as_deref(), Some("/c"));
    c.write("/c/a", "2").await.unwrap();
    assert_eq!(w.next().await.as_deref(), Some("/c/a"));
    drop(w);

    // Transactions retried on EAGAIN: two tasks incrementing one counter.
    c.write("/c/counter", "0").await.unwrap();
    let bump = |c: XsClient| async move {
        for _ in 0..50 {
            c.transaction(|tx| async move {
                let n: u32 = String::from_utf8_lossy(&tx.read("/c/counter").await?)
                    .parse()
                    .unwrap();
                tokio::task::yield_now().await;
                tx.write("/c/counter", (n + 1).to_string()).await
            })
            .await
            .unwrap();
        }
    };
    // Two tasks on one connection: their transactions interleave.
    tokio::join!(bump(c.clone()), bump(c.clone()));
    assert_eq!(c.read("/c/counter").await.unwrap(), b"100");
}

#[actix::test]
async fn over_the_socket_to_xenithd_xenstored() {
    let mut xs = Xenstored::start(XENITHD);
    let socket = xs.socket.clone();
    let c = XsClient::connect_socket(&socket).await.unwrap();
    exercise(&c).await;
    xs.child.kill().unwrap();
    xs.child.wait().unwrap();
    // The daemon is gone: calls fail, they do not hang.
    assert!(matches!(c.read("/c/a").await, Err(XsClientError::Closed)));
}

#[actix::test]
async fn in_process_as_dom0_and_as_a_domain() {
    let w = common::world::World::start().await;
    let (store, dom0) = (&w.store, &w.xs);
    exercise(dom0).await;

    // A domain must be introduced first; then it acts with its own rights.
    assert!(XsClient::connect_embedded(store, Some(9)).await.is_err());
    dom0.introduce(9, 0, 0).await.unwrap();
    assert!(dom0.is_domain_introduced(9).await.unwrap());
    dom0.write("/local/domain/9/data", "").await.unwrap();
    dom0.set_perms("/local/domain/9/data", &[perm(PermLetter::None, 9)])
        .await
        .unwrap();
    let guest = XsClient::connect_embedded(store, Some(9)).await.unwrap();
    guest.write("data/os_name", "Debian").await.unwrap();
    assert_eq!(
        dom0.read("/local/domain/9/data/os_name").await.unwrap(),
        b"Debian"
    );
    assert!(matches!(
        guest.write("/c/a", "x").await,
        Err(XsClientError::Xs(XsError::EACCES))
    ));
    // More requests than the domain's outstanding quota: the client waits, none fail.
    let many = (0..200).map(|i| {
        let g = guest.clone();
        async move { g.write(&format!("data/k{}", i % 50), "v").await }
    });
    assert!(join_all(many).await.iter().all(Result::is_ok));
    // Release: the guest's connection is closed and its nodes are gone.
    dom0.release(9).await.unwrap();
    assert!(matches!(
        guest.read("data/os_name").await,
        Err(XsClientError::Closed)
    ));
    assert_eq!(
        dom0.read_opt("/local/domain/9/data/os_name").await.unwrap(),
        None
    );
}

/// What happened: xenstored went away under a persistent client (killed and
/// started again), with a watch set, a request in flight and a transaction
/// open. What must hold: the request and the transaction fail with clear
/// errors; the client connects again by itself; the watch is registered
/// again (it fires once, then on changes); requests work; a request too
/// big for the protocol is refused before it is sent and costs nothing.
#[tokio::test(flavor = "current_thread")]
async fn a_persistent_client_connects_again_and_says_what_was_lost() {
    use xenith::drivers::xenstore::Dial;
    let xsd = Xenstored::start(XENITHD);
    let c = XsClient::persistent(Dial::Socket(xsd.socket.clone()))
        .await
        .unwrap();
    // Too big: refused here, and the connection stays.
    let big = "x".repeat(5000);
    assert!(matches!(
        c.write("/big", &big).await,
        Err(XsClientError::Xs(XsError::E2BIG))
    ));
    c.write("/w/a", "1").await.unwrap();
    assert_eq!(c.link().reconnects, 0);
    let mut watch = c.watch("/w").await.unwrap();
    assert_eq!(watch.next().await.as_deref(), Some("/w"));
    let tx = c
        .request(xenith::xs::MsgType::TransactionStart, 0, vec![0])
        .await
        .unwrap();
    let tx: u32 = String::from_utf8_lossy(&tx)
        .trim_end_matches('\0')
        .parse()
        .unwrap();

    let xsd = xsd.restart(XENITHD);
    let t0 = std::time::Instant::now();
    while !(c.link().connected && c.link().reconnects == 1) {
        // Requests made meanwhile wait for the connection, or fail as lost.
        let _ = c.read_opt("/w/a").await;
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(10),
            "{:?}",
            c.link()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The transaction is gone with the old connection.
    assert!(matches!(
        c.request(xenith::xs::MsgType::Write, tx, b"/w/b\0v".to_vec())
            .await,
        Err(XsClientError::TransactionLost)
    ));
    // The new xenstored is empty; the client works against it.
    assert_eq!(c.read_opt("/w/a").await.unwrap(), None);
    // The watch was registered again: it fired once, then fires on changes.
    let fired = tokio::time::timeout(std::time::Duration::from_secs(5), watch.next())
        .await
        .unwrap();
    assert_eq!(fired.as_deref(), Some("/w"));
    c.write("/w/c", "3").await.unwrap();
    let fired = tokio::time::timeout(std::time::Duration::from_secs(5), watch.next())
        .await
        .unwrap();
    assert_eq!(fired.as_deref(), Some("/w/c"));
    drop(xsd);
}
