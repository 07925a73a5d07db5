//! A pipelined MessagePack-RPC client: many calls in flight on one
//! connection, replies matched by msgid. One task owns the connection; calls
//! reach it by message.

use std::collections::HashMap;
use std::io;
use std::path::Path;

use futures_util::{SinkExt, StreamExt};
use rmpv::Value;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite};

use super::codec::{CodecError, MsgpackCodec};

/// The largest reply the client accepts.
const MAX_REPLY: usize = 64 << 20;

/// An error the daemon answered with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct RemoteError {
    pub code: String,
    pub message: String,
    #[serde(default)]
    pub details: Vec<String>,
}

/// What a call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {0}")]
    Connect(String, #[source] io::Error),
    #[error("the connection closed")]
    Closed,
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error("the reply did not decode")]
    Decode(#[source] rmp_serde::decode::Error),
    #[error("the parameters did not encode")]
    Encode(#[source] crate::api::ApiError),
}

type Reply = Result<Value, RemoteError>;

/// A notification from the daemon: its method and its (single) params map.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub method: String,
    pub params: Value,
}

struct Pending {
    method: String,
    params: Value,
    reply: oneshot::Sender<Reply>,
}

/// A connection to xenithd. Cheap to clone; clones share the connection.
#[derive(Debug, Clone)]
pub struct RpcClient {
    tx: mpsc::UnboundedSender<Pending>,
}

impl RpcClient {
    /// Connects to the daemon's Unix socket.
    pub async fn connect(path: &Path) -> Result<Self, ClientError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|e| ClientError::Connect(path.display().to_string(), e))?;
        Ok(Self::over(stream, None))
    }

    /// Connects over TCP with TLS (`[tls]` on the daemon). `server_name` is
    /// the name the server's certificate must carry; `tls` holds the CA to
    /// trust and, optionally, the client's certificate.
    pub async fn connect_tls(
        addr: &str,
        server_name: &str,
        tls: std::sync::Arc<rustls::ClientConfig>,
    ) -> Result<(Self, mpsc::UnboundedReceiver<Notification>), ClientError> {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| ClientError::Connect(addr.to_owned(), e))?;
        let name =
            rustls::pki_types::ServerName::try_from(server_name.to_owned()).map_err(|e| {
                ClientError::Connect(
                    addr.to_owned(),
                    io::Error::new(io::ErrorKind::InvalidInput, e),
                )
            })?;
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(|e| ClientError::Connect(addr.to_owned(), e))?;
        let (ntx, nrx) = mpsc::unbounded_channel();
        Ok((Self::over(stream, Some(ntx)), nrx))
    }

    fn over<S>(stream: S, notify: Option<mpsc::UnboundedSender<Notification>>) -> Self
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
    {
        let (tx, rx) = mpsc::unbounded_channel();
        let (rd, wr) = tokio::io::split(stream);
        tokio::spawn(drive(rd, wr, rx, notify));
        Self { tx }
    }

    /// Like [`RpcClient::connect`]; the notifications the daemon sends
    /// (`event`, `event.dropped`) arrive on the returned channel as
    /// (method, params).
    pub async fn connect_with_notifications(
        path: &Path,
    ) -> Result<(Self, mpsc::UnboundedReceiver<Notification>), ClientError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|e| ClientError::Connect(path.display().to_string(), e))?;
        let (ntx, nrx) = mpsc::unbounded_channel();
        Ok((Self::over(stream, Some(ntx)), nrx))
    }

    /// Calls `method` with named arguments (a serialisable map or struct;
    /// `()` for none) and returns the raw result.
    pub async fn call_value<P: Serialize>(
        &self,
        method: &str,
        params: P,
    ) -> Result<Value, ClientError> {
        let params = super::wire::to_named_value(&params).map_err(ClientError::Encode)?;
        let params = if params.is_nil() {
            Value::Array(vec![])
        } else {
            Value::Array(vec![params])
        };
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Pending {
                method: method.to_owned(),
                params,
                reply,
            })
            .map_err(|_| ClientError::Closed)?;
        Ok(rx.await.map_err(|_| ClientError::Closed)??)
    }

    /// Calls `method` and decodes its result as `T`.
    pub async fn call<P: Serialize, T: DeserializeOwned>(
        &self,
        method: &str,
        params: P,
    ) -> Result<T, ClientError> {
        let value = self.call_value(method, params).await?;
        super::wire::from_named_value(&value).map_err(ClientError::Decode)
    }
}

/// The connection's task. Replies are read by this loop; requests are
/// written by a separate writer task, so a full socket in one direction
/// never stops the other (which would deadlock with the server).
async fn drive<R, W>(
    rd: R,
    wr: W,
    mut calls: mpsc::UnboundedReceiver<Pending>,
    notify: Option<mpsc::UnboundedSender<Notification>>,
) where
    R: tokio::io::AsyncRead + Send + Unpin + 'static,
    W: tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let mut reader = FramedRead::new(rd, MsgpackCodec::for_replies(MAX_REPLY));
    let (out, mut frames) = mpsc::unbounded_channel::<Value>();
    tokio::spawn(async move {
        let mut writer = FramedWrite::new(wr, MsgpackCodec::new(usize::MAX));
        // send_all feeds what is queued and flushes when the queue is
        // empty: one write for many requests.
        let mut queued = futures_util::stream::poll_fn(|cx| frames.poll_recv(cx)).map(Ok);
        let _ = writer.send_all(&mut queued).await;
    });
    let mut waiting: HashMap<u32, oneshot::Sender<Reply>> = HashMap::new();
    let mut next_id: u32 = 0;
    let mut accepting = true;
    loop {
        tokio::select! {
            call = calls.recv(), if accepting => match call {
                Some(Pending { method, params, reply }) => {
                    next_id = next_id.wrapping_add(1);
                    let frame = Value::Array(vec![0.into(), next_id.into(), method.into(), params]);
                    waiting.insert(next_id, reply);
                    if out.send(frame).is_err() {
                        break;
                    }
                }
                None => {
                    accepting = false;
                    if waiting.is_empty() {
                        break;
                    }
                }
            },
            frame = reader.next() => match frame {
                Some(Ok(frame)) => {
                    match parse_response(frame) {
                        Incoming::Reply(id, reply) => {
                            if let Some(tx) = waiting.remove(&id) {
                                let _ = tx.send(reply);
                            }
                        }
                        Incoming::Notification(n) => {
                            if let Some(notify) = &notify {
                                let _ = notify.send(n);
                            }
                        }
                        Incoming::Other => {}
                    }
                    if !accepting && waiting.is_empty() {
                        break;
                    }
                }
                Some(Err(CodecError::TooLarge(_) | CodecError::Malformed(_) | CodecError::Io(_))) | None => break,
            },
        }
    }
    // Dropping `waiting` tells every caller still waiting that the connection
    // closed; dropping `out` ends the writer.
}

enum Incoming {
    Reply(u32, Reply),
    Notification(Notification),
    Other,
}

fn parse_response(frame: Value) -> Incoming {
    let Value::Array(mut items) = frame else {
        return Incoming::Other;
    };
    if items.len() == 3 && items[0].as_u64() == Some(2) {
        let params = match items.pop() {
            Some(Value::Array(mut p)) if p.len() == 1 => p.pop().unwrap_or(Value::Nil),
            Some(other) => other,
            None => Value::Nil,
        };
        return match items[1].as_str() {
            Some(method) => Incoming::Notification(Notification {
                method: method.to_owned(),
                params,
            }),
            None => Incoming::Other,
        };
    }
    match reply(items) {
        Some((id, r)) => Incoming::Reply(id, r),
        None => Incoming::Other,
    }
}

fn reply(mut items: Vec<Value>) -> Option<(u32, Reply)> {
    if items.len() != 4 || items[0].as_u64() != Some(1) {
        return None;
    }
    let id = u32::try_from(items[1].as_u64()?).ok()?;
    let result = items.pop()?;
    let error = items.pop()?;
    if error.is_nil() {
        return Some((id, Ok(result)));
    }
    let remote =
        super::wire::from_named_value::<RemoteError>(&error).unwrap_or_else(|e| RemoteError {
            code: "INTERNAL_ERROR".into(),
            message: format!("undecodable error reply: {e}"),
            details: vec![],
        });
    Some((id, Err(remote)))
}
