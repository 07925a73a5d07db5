//! MessagePack-RPC over TCP with TLS (rustls): the supervised listener
//! (`rpc-tls`). There is no plaintext TCP: a connection that does not
//! complete a TLS handshake within [`HANDSHAKE_TIMEOUT`] is dropped. A
//! client with a certificate the configured CA signed is trusted at once;
//! one without must call `session.login {token}` first (UNAUTHORIZED
//! otherwise, and the connection closes after a few wrong tokens).

use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, ActorContext, AsyncContext, Context, WrapFuture};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use std::sync::atomic::{AtomicUsize, Ordering};

use super::gate::Gate;
use super::server::{serve, Auth, Login};
use crate::actors::supervisor::{ChildSpec, ExitSlot, StartError};
use crate::api::{Api, Caller};
use crate::config::tls::TlsSetup;
use crate::config::RpcConfig;

/// How long a client has to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Descriptors kept free for the Unix socket, the VMs' devices and the
/// host when TLS clients pile up.
const RESERVED_DESCRIPTORS: u64 = 256;

/// How many TLS connections may be open at once: what RLIMIT_NOFILE
/// leaves after [`RESERVED_DESCRIPTORS`] (xenithd raises its soft limit
/// to the hard one at start; the unit sets LimitNOFILE).
fn connection_budget() -> usize {
    let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1024, |(soft, _)| soft);
    usize::try_from(soft.saturating_sub(RESERVED_DESCRIPTORS).max(16)).unwrap_or(usize::MAX)
}

/// One open TLS connection, counted while it lives.
struct Live(Arc<AtomicUsize>);

impl Live {
    fn take(count: &Arc<AtomicUsize>, max: usize) -> Option<Live> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Live(count.clone()))
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A certificate's SHA-256 fingerprint, in hex (as `openssl x509
/// -fingerprint -sha256` shows it, without the colons).
fn fingerprint(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The TLS listener actor.
#[derive(Debug)]
pub struct TlsListener {
    listener: Option<std::net::TcpListener>,
    server: Arc<rustls::ServerConfig>,
    tokens: Arc<Vec<String>>,
    api: Api,
    config: RpcConfig,
    cancel: CancellationToken,
    exit: ExitSlot,
}

impl TlsListener {
    /// The child spec (id "rpc-tls"): the address is bound at start.
    pub fn spec(setup: TlsSetup, config: RpcConfig, api: Api) -> ChildSpec {
        ChildSpec::worker("rpc-tls", move |exit| {
            let listener = std::net::TcpListener::bind(setup.listen)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .map_err(|e| StartError::new(format!("cannot listen on {}: {e}", setup.listen)))?;
            tracing::info!(address = %setup.listen, "rpc-tls listening");
            Ok(TlsListener {
                listener: Some(listener),
                server: setup.server.clone(),
                tokens: setup.tokens.clone(),
                api: api.clone(),
                config: config.clone(),
                cancel: CancellationToken::new(),
                exit,
            })
        })
    }
}

impl Actor for TlsListener {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let listener = match self.listener.take().map(TcpListener::from_std) {
            Some(Ok(l)) => l,
            Some(Err(e)) => {
                self.exit
                    .error(format!("cannot register the listener: {e}"));
                ctx.stop();
                return;
            }
            None => return,
        };
        let (acceptor, tokens, api, config, cancel) = (
            TlsAcceptor::from(self.server.clone()),
            self.tokens.clone(),
            self.api.clone(),
            self.config.clone(),
            self.cancel.clone(),
        );
        let gate = Arc::new(Gate::default());
        let live = Arc::new(AtomicUsize::new(0));
        let max_live = connection_budget();
        tracing::info!(max_connections = max_live, "rpc-tls limits");
        ctx.spawn(
            async move {
                loop {
                    let (tcp, peer) = match listener.accept().await {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::warn!(error = %e, "rpc-tls accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    // Descriptors are kept for the Unix socket and the
                    // host: past the budget a connection is closed at once.
                    let Some(live_guard) = Live::take(&live, max_live) else {
                        tracing::warn!(%peer, "rpc-tls: too many connections: closed");
                        continue;
                    };
                    // Before the handshake: a place among those not yet
                    // authenticated, overall and for this address.
                    let mut admission = match gate.admit(peer.ip()) {
                        Ok(a) => a,
                        Err(why) => {
                            tracing::info!(%peer, why, "rpc-tls connection refused");
                            continue;
                        }
                    };
                    let (acceptor, tokens, api, config, cancel, gate) = (
                        acceptor.clone(),
                        tokens.clone(),
                        api.clone(),
                        config.clone(),
                        cancel.child_token(),
                        gate.clone(),
                    );
                    actix::spawn(async move {
                        let _live = live_guard;
                        let stream =
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
                                .await
                            {
                                Ok(Ok(s)) => s,
                                Ok(Err(e)) => {
                                    tracing::info!(%peer, error = %e, "TLS handshake refused");
                                    return;
                                }
                                Err(_) => {
                                    tracing::info!(%peer, "TLS handshake timed out");
                                    return;
                                }
                            };
                        // Known by its certificate's fingerprint, or (once it
                        // logged in) by its token's number.
                        let cert = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|certs| certs.first())
                            .map(|c| fingerprint(c.as_ref()));
                        let (auth, identity) = match cert {
                            Some(f) => {
                                admission.authenticated();
                                (Auth::Trusted, format!("cert sha256:{f}"))
                            }
                            None => (
                                Auth::NeedsLogin(Login {
                                    tokens,
                                    gate,
                                    admission,
                                }),
                                "not logged in".to_owned(),
                            ),
                        };
                        let caller = Caller::Tls { peer, identity };
                        let by = match auth {
                            Auth::Trusted => "certificate",
                            Auth::NeedsLogin(_) => "token",
                        };
                        tracing::debug!(%peer, by, "rpc-tls connection");
                        serve(stream, api, config, cancel, auth, caller).await;
                    });
                }
            }
            .into_actor(self),
        );
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.cancel.cancel();
    }
}
