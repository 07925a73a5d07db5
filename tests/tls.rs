//! MessagePack-RPC over TCP with TLS, with a CA made in the test: a client
//! certificate signed by the CA is trusted; without one, session.login with
//! a configured token is needed first; a certificate from another CA, and
//! plaintext, are refused. Bad [tls] configuration stops xenithd (exit 2).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use common::daemon::Xenithd;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{json, Value};
use xenith::proto::rpc::{ClientError, RpcClient};

const XENITHD: &str = env!("CARGO_BIN_EXE_xenithd");
const TOKEN: &str = "s3cret-token-for-the-test";

struct Ca {
    cert: Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    Ca {
        cert: p.self_signed(&key).unwrap(),
        key,
    }
}

fn leaf(ca: &Ca, name: &str, client: bool) -> (Certificate, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec![name.to_owned()]).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.extended_key_usages = vec![if client {
        ExtendedKeyUsagePurpose::ClientAuth
    } else {
        ExtendedKeyUsagePurpose::ServerAuth
    }];
    (p.signed_by(&key, &ca.cert, &ca.key).unwrap(), key)
}

fn client_config(
    trust: &Ca,
    identity: Option<(&Certificate, &KeyPair)>,
) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trust.cert.der().clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    Arc::new(match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from(cert.der().to_vec())],
                PrivateKeyDer::from(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn code(r: Result<Value, ClientError>) -> String {
    match r {
        Err(ClientError::Remote(e)) => e.code,
        other => panic!("expected an error, got {other:?}"),
    }
}

/// A xenithd with a TLS listener: a CA for client certificates and a
/// tokens file. Returns it, the listener's address and the CA.
fn start_tls() -> (Xenithd, String, Ca, Ca) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let authority = ca("xenith test CA");
    let (server, server_key) = leaf(&authority, "localhost", false);
    std::fs::write(p.join("server.pem"), server.pem()).unwrap();
    std::fs::write(p.join("server.key"), server_key.serialize_pem()).unwrap();
    std::fs::write(p.join("ca.pem"), authority.cert.pem()).unwrap();
    std::fs::write(p.join("tokens"), format!("# admins\n{TOKEN}\n")).unwrap();
    std::fs::set_permissions(p.join("tokens"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let port = free_port();
    let config = p.join("xenith.toml");
    std::fs::write(
        &config,
        format!(
            "[tls]\nlisten = \"127.0.0.1:{port}\"\ncert = \"{0}/server.pem\"\nkey = \"{0}/server.key\"\n\
             client_ca = \"{0}/ca.pem\"\ntokens_file = \"{0}/tokens\"\n",
            p.display()
        ),
    )
    .unwrap();
    let d = Xenithd::start_in(XENITHD, dir, &["--config", config.to_str().unwrap()]);
    let addr = format!("127.0.0.1:{port}");
    // The listener comes up with the tree; wait for it.
    let t0 = std::time::Instant::now();
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no TLS listener on {addr}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let rogue = ca("rogue CA");
    (d, addr, authority, rogue)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_clients_need_a_ca_signed_certificate_or_a_token() {
    let (d, addr, authority, rogue) = start_tls();
    let (client, client_key) = leaf(&authority, "admin", true);
    let (intruder, intruder_key) = leaf(&rogue, "intruder", true);

    // A certificate the CA signed: trusted at once.
    let (c, _) = RpcClient::connect_tls(
        &addr,
        "localhost",
        client_config(&authority, Some((&client, &client_key))),
    )
    .await
    .unwrap();
    let info: Value = c.call("host.info", json!({})).await.unwrap();
    assert_eq!(info["hypervisor"], "sim");

    // No certificate: UNAUTHORIZED until a good session.login.
    let (c, _) = RpcClient::connect_tls(&addr, "localhost", client_config(&authority, None))
        .await
        .unwrap();
    assert_eq!(code(c.call("host.info", json!({})).await), "UNAUTHORIZED");
    assert_eq!(
        code(
            c.call("session.login", json!({"token": "wrong-token-0123456"}))
                .await
        ),
        "UNAUTHORIZED"
    );
    let _: Value = c
        .call("session.login", json!({"token": TOKEN}))
        .await
        .unwrap();
    let _: Value = c.call("vm.list", json!({})).await.unwrap();

    // Three wrong tokens close the connection.
    let (c, _) = RpcClient::connect_tls(&addr, "localhost", client_config(&authority, None))
        .await
        .unwrap();
    for _ in 0..3 {
        let _ = c
            .call::<Value, Value>("session.login", json!({"token": "nope-nope-nope-nope"}))
            .await;
    }
    assert!(matches!(
        c.call::<Value, Value>("host.info", json!({})).await,
        Err(ClientError::Closed)
    ));

    // A certificate from another CA: the handshake fails (or the first call does).
    match RpcClient::connect_tls(
        &addr,
        "localhost",
        client_config(&authority, Some((&intruder, &intruder_key))),
    )
    .await
    {
        Err(_) => {}
        Ok((c, _)) => assert!(c
            .call::<Value, Value>("host.info", json!({}))
            .await
            .is_err()),
    }
    // The client checks the server too: a server name the certificate lacks fails.
    assert!(
        RpcClient::connect_tls(&addr, "not-localhost", client_config(&authority, None))
            .await
            .is_err()
    );

    // Plaintext MessagePack-RPC over TCP gets no answer: the connection is dropped.
    let mut plain = std::net::TcpStream::connect(&addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut req = Vec::new();
    rmp::encode::write_array_len(&mut req, 4).unwrap();
    rmp::encode::write_uint(&mut req, 0).unwrap();
    rmp::encode::write_uint(&mut req, 1).unwrap();
    rmp::encode::write_str(&mut req, "host.info").unwrap();
    rmp::encode::write_array_len(&mut req, 0).unwrap();
    plain.write_all(&req).unwrap();
    let mut buf = [0u8; 256];
    let n = plain.read(&mut buf).unwrap_or(0);
    // At most a TLS alert (content type 21), never a MessagePack reply (0x94).
    assert!(n == 0 || buf[0] == 21, "{:?}", &buf[..n]);

    // On the Unix socket, session.login is accepted and changes nothing.
    let u = RpcClient::connect(&d.socket).await.unwrap();
    let _: Value = u
        .call("session.login", json!({"token": "anything"}))
        .await
        .unwrap();
}

#[test]
fn a_bad_tls_configuration_stops_xenithd_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let cases = [
        ("listen = \"127.0.0.1:1\"\n", "tls.cert"),
        ("listen = \"nowhere\"\n", "tls.listen"),
        (
            &format!("listen = \"127.0.0.1:1\"\ncert = \"{0}/missing.pem\"\nkey = \"{0}/missing.key\"\ntokens_file = \"{0}/t\"\n", p.display()),
            "tls.cert",
        ),
    ];
    for (tls, key) in cases {
        let config = p.join("x.toml");
        std::fs::write(&config, format!("[tls]\n{tls}")).unwrap();
        let out = std::process::Command::new(XENITHD)
            .args(["--config", config.to_str().unwrap(), "--socket"])
            .arg(p.join("s.sock"))
            .arg("--state-dir")
            .arg(p.join("state"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{tls}: {err}");
        assert!(err.contains(&format!("key {key}")), "{tls}: {err}");
    }
}

/// What unauthenticated TLS clients did: held connections without a
/// handshake, sent a big frame and many requests before logging in, and
/// guessed tokens over many connections. What must hold: past 8 from one
/// address they are closed at once; a big frame or a 17th request before
/// a login closes the connection; a logged-in client gets the full frame
/// limit; after 10 failed logins from an address its logins are refused,
/// the right token too; the Unix socket answers throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_tls_clients_are_bounded() {
    let (d, addr, authority, _) = start_tls();
    let unix = RpcClient::connect(&d.socket).await.unwrap();
    // One that never logs in: closed after the login deadline (checked last).
    let t0 = std::time::Instant::now();
    let (idle, _) = RpcClient::connect_tls(&addr, "localhost", client_config(&authority, None))
        .await
        .unwrap();

    // Connections that never handshake: 8 are held, the 9th is closed.
    let mut held: Vec<std::net::TcpStream> = (0..8)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut ninth = std::net::TcpStream::connect(&addr).unwrap();
    ninth
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(ninth.read(&mut buf).unwrap_or(1), 0, "closed at once");
    let _: Value = unix.call("host.info", json!({})).await.unwrap();
    held.clear();
    std::thread::sleep(Duration::from_millis(300));

    // Before a login: a frame over 4 KiB closes the connection...
    let (c, _) = RpcClient::connect_tls(&addr, "localhost", client_config(&authority, None))
        .await
        .unwrap();
    let big = "x".repeat(8000);
    let _ = c
        .call::<Value, Value>("session.login", json!({"token": big}))
        .await;
    assert!(matches!(
        c.call::<Value, Value>("vm.list", json!({})).await,
        Err(ClientError::Closed)
    ));
    // ...and so do more than 16 requests.
    let (c, _) = RpcClient::connect_tls(&addr, "localhost", client_config(&authority, None))
        .await
        .unwrap();
    for _ in 0..16 {
        assert_eq!(code(c.call("vm.list", json!({})).await), "UNAUTHORIZED");
    }
    assert!(matches!(
        c.call::<Value, Value>("vm.list", json!({})).await,
        Err(ClientError::Closed)
    ));
    // Logged in, a big frame is a request like any other.
    let (c, _) = RpcClient::connect_tls(&addr, "localhost", client_config(&authority, None))
        .await
        .unwrap();
    let _: Value = c
        .call("session.login", json!({"token": TOKEN}))
        .await
        .unwrap();
    assert_eq!(
        code(c.call("vm.get", json!({"vm": "x".repeat(8000)})).await),
        "NOT_FOUND"
    );

    // Guessing tokens across connections: throttled for the address.
    for _ in 0..4 {
        let (c, _) = RpcClient::connect_tls(&addr, "localhost", client_config(&authority, None))
            .await
            .unwrap();
        for _ in 0..3 {
            let _ = c
                .call::<Value, Value>("session.login", json!({"token": "guess-guess-guess"}))
                .await;
        }
    }
    let (c, _) = RpcClient::connect_tls(&addr, "localhost", client_config(&authority, None))
        .await
        .unwrap();
    match c
        .call::<Value, Value>("session.login", json!({"token": TOKEN}))
        .await
    {
        Err(ClientError::Remote(e)) => {
            assert_eq!(e.code, "UNAUTHORIZED");
            assert!(
                e.message.contains("too many failed logins"),
                "{}",
                e.message
            );
        }
        other => panic!("the right token was let in while throttled: {other:?}"),
    }
    let _: Value = unix.call("host.info", json!({})).await.unwrap();
    tokio::time::sleep(Duration::from_secs(11).saturating_sub(t0.elapsed())).await;
    assert!(matches!(
        idle.call::<Value, Value>("vm.list", json!({})).await,
        Err(ClientError::Closed)
    ));
}
