//! The RPC service: each connection of the RPC socket is served as its own
//! task (by the generic supervised listener in `proto::socket`). Requests on one connection run
//! concurrently (up to a limit) and are answered as each completes.

use std::path::PathBuf;
use std::sync::Arc;

use futures_util::stream::FuturesUnordered;
use futures_util::{SinkExt, StreamExt};
use tokio::net::UnixStream;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

use super::codec::MsgpackCodec;
use super::gate::{LOGIN_DEADLINE, PRE_LOGIN_MAX_FRAME, PRE_LOGIN_MAX_REQUESTS};
use super::methods::parse_call;
use super::wire::{self, Incoming};
use crate::actors::supervisor::ChildSpec;
use crate::api::{Api, ApiError, Call, Caller, ErrorCode, EventClass, WatchStream};
use crate::config::RpcConfig;
use crate::proto::socket::{Service, SocketListener};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc::error::TrySendError;

/// The MessagePack-RPC service: each connection is served against the API.
#[derive(Debug, Clone)]
pub struct RpcService {
    api: Api,
    config: RpcConfig,
}

/// The RPC listener actor.
pub type RpcListener = SocketListener<RpcService>;

impl RpcService {
    /// The listener's child spec (id "rpc").
    pub fn spec(path: PathBuf, config: RpcConfig, api: Api) -> ChildSpec {
        let group = config.socket_group;
        RpcListener::spec("rpc", path, group, RpcService { api, config })
    }
}

impl Service for RpcService {
    fn serve(
        &self,
        stream: UnixStream,
        cancel: CancellationToken,
    ) -> impl std::future::Future<Output = ()> + 'static {
        // The peer's credentials: who the audit log names.
        let caller = match stream.peer_cred() {
            Ok(cred) => Caller::Unix {
                uid: cred.uid(),
                pid: cred.pid(),
            },
            Err(_) => Caller::Unix {
                uid: u32::MAX,
                pid: None,
            },
        };
        serve(
            stream,
            self.api.clone(),
            self.config.clone(),
            cancel,
            Auth::Trusted,
            caller,
        )
    }
}

/// Who a connection's peer is (its tokens are never printed).
pub enum Auth {
    /// The Unix socket (its file mode decides who connects), or a TLS
    /// client whose certificate the configured CA signed.
    Trusted,
    /// A TLS client without a certificate: `session.login` with one of
    /// the tokens must come first.
    NeedsLogin(Login),
}

/// What a connection that must log in carries: the tokens, the listener's
/// gate (failed logins are throttled across connections) and its place
/// among the unauthenticated ones.
pub struct Login {
    pub tokens: Arc<Vec<String>>,
    pub gate: Arc<super::gate::Gate>,
    pub admission: super::gate::Admission,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("tokens", &self.tokens.len())
            .field("peer", &self.admission.peer())
            .finish()
    }
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Auth::Trusted => "Trusted",
            Auth::NeedsLogin(_) => "NeedsLogin",
        })
    }
}

/// Failed logins before a connection is closed.
pub const MAX_LOGIN_FAILURES: u32 = 3;

/// Serves one connection until it closes, is cancelled, or sends a frame
/// that cannot be decoded (which closes this connection only).
///
/// Reading and writing are separate: a writer task sends the replies, so a
/// client that is slow to read its replies never stops this side from
/// reading (and the client from writing): with both on one loop, two full
/// socket buffers deadlock.
pub(crate) async fn serve<S>(
    stream: S,
    api: Api,
    config: RpcConfig,
    cancel: CancellationToken,
    auth: Auth,
    mut caller: Caller,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (rd, wr) = tokio::io::split(stream);
    // Bounded: a client slow to read holds up its own replies, and its
    // event subscriptions fall behind (and are told so), nothing else.
    let (out, mut replies) = tokio::sync::mpsc::channel::<Vec<u8>>(OUT_QUEUE);
    let writer = async move {
        let mut writer = FramedWrite::new(wr, MsgpackCodec::new(usize::MAX));
        // send_all feeds what is queued and flushes when the queue is
        // empty: one write for many replies.
        let mut frames = futures_util::stream::poll_fn(|cx| replies.poll_recv(cx)).map(Ok);
        let _ = writer.send_all(&mut frames).await;
    };
    let subs_cancel = cancel.child_token();
    let reading = async move {
        // When reading ends (the peer closed its side, sent what does not
        // decode, or the listener stops), so do the connection's
        // subscriptions: the writer then finishes and the connection closes.
        let _stop_subscriptions = subs_cancel.clone().drop_guard();
        let mut login = match auth {
            Auth::Trusted => None,
            Auth::NeedsLogin(login) => Some(login),
        };
        let mut logged_in = login.is_none();
        // Before it has authenticated, a connection sends small frames and
        // few requests, and must log in in time.
        let max_frame = if logged_in {
            config.max_frame_bytes
        } else {
            PRE_LOGIN_MAX_FRAME
        };
        let mut reader = FramedRead::new(rd, MsgpackCodec::new(max_frame));
        let mut in_flight = FuturesUnordered::new();
        let mut subs = Subscriptions::new(api.clone(), out.clone(), subs_cancel);
        let mut open = true;
        let mut failures = 0u32;
        let mut before_login = 0u32;
        let deadline = tokio::time::sleep(LOGIN_DEADLINE);
        tokio::pin!(deadline);
        loop {
            if !open && in_flight.is_empty() {
                break;
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = &mut deadline, if !logged_in => {
                    tracing::info!(%caller, "no login within {LOGIN_DEADLINE:?}: closed");
                    break;
                }
                frame = reader.next(), if open && in_flight.len() < config.max_in_flight => match frame {
                    None => open = false,
                    Some(Err(error)) => {
                        // Nothing more is read; what came before is still
                        // answered, then the connection closes.
                        tracing::debug!(%error, "closing an RPC connection");
                        open = false;
                    }
                    Some(Ok(frame)) => match wire::parse(frame) {
                        Ok(Incoming::Request { id, method, params }) => {
                            if !logged_in {
                                before_login += 1;
                                if before_login > PRE_LOGIN_MAX_REQUESTS {
                                    tracing::info!(%caller, "too many requests before a login: closed");
                                    break;
                                }
                            }
                            let call = parse_call(&method, params);
                            if let Ok(Call::SessionLogin { token }) = &call {
                                let r = match login.as_mut() {
                                    _ if logged_in => Ok(crate::api::Reply::Done {}),
                                    None => Ok(crate::api::Reply::Done {}),
                                    Some(l) => {
                                        let peer = l.admission.peer();
                                        if !l.gate.may_try(peer) {
                                            tracing::warn!(%peer, "TLS login refused: too many failed logins from this address");
                                            failures = MAX_LOGIN_FAILURES;
                                            Err(unauthorized("too many failed logins from this address: try again later"))
                                        } else if let Some(n) = crate::config::tls::token_index(&l.tokens, token) {
                                            if let Caller::Tls { identity, .. } = &mut caller {
                                                *identity = format!("token {n}");
                                            }
                                            l.admission.authenticated();
                                            logged_in = true;
                                            reader.decoder_mut().set_max_frame(config.max_frame_bytes);
                                            Ok(crate::api::Reply::Done {})
                                        } else {
                                            l.gate.failed(peer);
                                            failures += 1;
                                            tracing::warn!(%peer, failures, "TLS login failed: a token that is not accepted");
                                            Err(unauthorized("that token is not accepted"))
                                        }
                                    }
                                };
                                if out.send(reply(id, r)).await.is_err() || failures >= MAX_LOGIN_FAILURES {
                                    break;
                                }
                                continue;
                            }
                            if !logged_in {
                                let e = unauthorized("log in first: session.login {token} (or present a client certificate)");
                                if out.send(wire::response_err(Some(id), &e)).await.is_err() {
                                    break;
                                }
                                continue;
                            }
                            // The calls answered here, like those `execute`
                            // runs, wait until the daemon is ready.
                            api.wait_ready().await;
                            match call {
                                Ok(Call::EventSubscribe { classes }) => {
                                    let r = subs.subscribe(classes);
                                    if out.send(reply(id, r)).await.is_err() {
                                        break;
                                    }
                                }
                                Ok(Call::XsWatch { path }) => {
                                    let r = match api.xs_watch(&path).await {
                                        Ok(w) => subs.watch(path, w),
                                        Err(e) => Err(e),
                                    };
                                    if out.send(reply(id, r)).await.is_err() {
                                        break;
                                    }
                                }
                                Ok(Call::EventUnsubscribe { subscription }) => {
                                    let r = subs.unsubscribe(subscription);
                                    if out.send(reply(id, r)).await.is_err() {
                                        break;
                                    }
                                }
                                Ok(call) => in_flight.push(answer(api.clone(), id, call, caller.clone())),
                                Err(e) => {
                                    if out.send(wire::response_err(Some(id), &e)).await.is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        // Clients have nothing to notify the daemon of.
                        Ok(Incoming::Notification { .. }) => {}
                        Err(invalid) => {
                            if out.send(wire::response_err(invalid.id, &invalid.error)).await.is_err() {
                                break;
                            }
                        }
                    },
                },
                Some(response) = in_flight.next(), if !in_flight.is_empty() => {
                    if out.send(response).await.is_err() {
                        break;
                    }
                }
            }
        }
        // Dropping `out` lets the writer finish what is queued, then stop.
    };
    tokio::join!(reading, writer);
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(ErrorCode::Unauthorized, message)
}

async fn answer(api: Api, id: u32, call: Call, caller: Caller) -> Vec<u8> {
    reply(id, api.execute(call, &caller).await)
}

fn reply<T: serde::Serialize>(id: u32, result: Result<T, ApiError>) -> Vec<u8> {
    match result.and_then(|reply| wire::response_ok(id, &reply)) {
        Ok(frame) => frame,
        Err(error) => wire::response_err(Some(id), &error),
    }
}

/// Frames queued for a connection's writer before senders wait.
const OUT_QUEUE: usize = 256;

/// Subscriptions a connection may hold at once.
pub const MAX_SUBSCRIPTIONS: usize = 16;

/// A connection's event subscriptions: each a task that forwards what the
/// bus publishes (of its classes) as `event` notifications. When the
/// connection cannot take them fast enough, the bus drops the oldest for
/// that subscription alone and the task says so with `event.dropped`.
struct Subscriptions {
    api: Api,
    out: tokio::sync::mpsc::Sender<Vec<u8>>,
    cancel: CancellationToken,
    next: u64,
    live: std::collections::HashMap<u64, CancellationToken>,
}

#[derive(serde::Serialize)]
struct Subscribed {
    subscription: u64,
}

#[derive(serde::Serialize)]
struct WatchFired {
    subscription: u64,
    path: String,
}

#[derive(serde::Serialize)]
struct Dropped {
    subscription: u64,
    count: u64,
}

impl Subscriptions {
    fn new(api: Api, out: tokio::sync::mpsc::Sender<Vec<u8>>, cancel: CancellationToken) -> Self {
        Self {
            api,
            out,
            cancel,
            next: 1,
            live: std::collections::HashMap::new(),
        }
    }

    fn subscribe(&mut self, classes: Option<Vec<EventClass>>) -> Result<Subscribed, ApiError> {
        let (id, cancel) = self.take_id()?;
        let classes = classes.unwrap_or_else(|| EventClass::ALL.to_vec());
        let mut sub = self.api.subscribe();
        let out = self.out.clone();
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    _ = cancel.cancelled() => break,
                    e = sub.rx.recv() => e,
                };
                let frame = match event {
                    Ok(e) if classes.contains(&e.class) => wire::notification_frame("event", &*e),
                    Ok(_) => continue,
                    Err(RecvError::Lagged(count)) => wire::notification_frame(
                        "event.dropped",
                        &Dropped {
                            subscription: id,
                            count,
                        },
                    ),
                    Err(RecvError::Closed) => break,
                };
                let Ok(frame) = frame else { continue };
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    sent = out.send(frame) => if sent.is_err() { break },
                }
            }
        });
        Ok(Subscribed { subscription: id })
    }

    /// Takes a subscription id, if the connection may hold one more.
    fn take_id(&mut self) -> Result<(u64, CancellationToken), ApiError> {
        self.live.retain(|_, c| !c.is_cancelled());
        if self.live.len() >= MAX_SUBSCRIPTIONS {
            return Err(ApiError::new(
                ErrorCode::NotAllowed,
                format!("a connection holds at most {MAX_SUBSCRIPTIONS} subscriptions"),
            ));
        }
        let id = self.next;
        self.next += 1;
        let cancel = self.cancel.child_token();
        self.live.insert(id, cancel.clone());
        Ok((id, cancel))
    }

    /// `xs.watch`: each firing becomes `[2, "xs.watch", [{subscription,
    /// path}]]`. Firings the connection cannot take at once are counted
    /// and reported with `event.dropped`, never queued without bound.
    fn watch(&mut self, _path: String, mut watch: WatchStream) -> Result<Subscribed, ApiError> {
        let (id, cancel) = self.take_id()?;
        let out = self.out.clone();
        tokio::spawn(async move {
            let mut dropped = 0u64;
            loop {
                let fired = tokio::select! {
                    _ = cancel.cancelled() => break,
                    p = watch.next() => p,
                };
                let Some(path) = fired else { break };
                if dropped > 0 {
                    let notice = wire::notification_frame(
                        "event.dropped",
                        &Dropped {
                            subscription: id,
                            count: dropped,
                        },
                    );
                    match notice.map(|f| out.try_send(f)) {
                        Ok(Ok(())) => dropped = 0,
                        Ok(Err(TrySendError::Closed(_))) => break,
                        _ => {}
                    }
                }
                let Ok(frame) = wire::notification_frame(
                    "xs.watch",
                    &WatchFired {
                        subscription: id,
                        path,
                    },
                ) else {
                    continue;
                };
                match out.try_send(frame) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => dropped += 1,
                    Err(TrySendError::Closed(_)) => break,
                }
            }
        });
        Ok(Subscribed { subscription: id })
    }

    fn unsubscribe(&mut self, id: u64) -> Result<crate::api::Reply, ApiError> {
        match self.live.remove(&id) {
            Some(cancel) => {
                cancel.cancel();
                Ok(crate::api::Reply::Done {})
            }
            None => Err(ApiError::new(
                ErrorCode::NotFound,
                format!("no subscription {id} on this connection"),
            )
            .with_details(vec![id.to_string()])),
        }
    }
}
