//! A QMP client (QEMU Machine Protocol: JSON objects, one per line, over a
//! Unix socket). One task owns the connection: it sends the commands it is
//! given, routes each reply to its caller by `id`, and passes events on.
//! When QEMU goes away the connection ends: the event stream ends, pending
//! commands fail with [`QmpError::Closed`], and [`QmpClient::closed`] returns.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{Framed, LinesCodec};

/// The longest QMP line accepted (a `query-*` reply of a big VM fits well).
const MAX_LINE: usize = 1 << 20;

/// A QMP exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("cannot connect to {path}")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no QMP greeting within {0:?}")]
    Timeout(Duration),
    #[error("not a QMP greeting: {0}")]
    Greeting(String),
    #[error("QMP stream")]
    Codec(#[from] tokio_util::codec::LinesCodecError),
    #[error("bad QMP message {0:?}")]
    Json(String),
    /// QEMU answered with an error object.
    #[error("{class}: {desc}")]
    Command { class: String, desc: String },
    #[error("the QMP connection closed")]
    Closed,
}

type Reply = oneshot::Sender<Result<Value, QmpError>>;

/// A handle on one QMP connection; cheap to clone.
#[derive(Debug, Clone)]
pub struct QmpClient {
    commands: mpsc::Sender<(Value, Reply)>,
}

impl QmpClient {
    /// Connects, reads the greeting and leaves capabilities negotiation
    /// mode; returns the client and QEMU's events (the stream ends when
    /// the connection does). Gives up after `timeout`.
    pub async fn connect(
        path: &Path,
        timeout: Duration,
    ) -> Result<(QmpClient, mpsc::UnboundedReceiver<Value>), QmpError> {
        let handshake = async {
            let stream = UnixStream::connect(path)
                .await
                .map_err(|source| QmpError::Connect {
                    path: path.display().to_string(),
                    source,
                })?;
            let mut framed = Framed::new(stream, LinesCodec::new_with_max_length(MAX_LINE));
            let greeting = framed.next().await.ok_or(QmpError::Closed)??;
            let parsed: Value =
                serde_json::from_str(&greeting).map_err(|_| QmpError::Json(greeting.clone()))?;
            if parsed.get("QMP").is_none() {
                return Err(QmpError::Greeting(greeting));
            }
            Ok(framed)
        };
        let framed = tokio::time::timeout(timeout, handshake)
            .await
            .map_err(|_| QmpError::Timeout(timeout))??;
        let (commands, rx) = mpsc::channel(16);
        let (events_tx, events) = mpsc::unbounded_channel();
        tokio::spawn(run(framed, rx, events_tx));
        let client = QmpClient { commands };
        client.execute("qmp_capabilities", None).await?;
        Ok((client, events))
    }

    /// Runs a command; returns its `return` value.
    pub async fn execute(
        &self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, QmpError> {
        let mut msg = json!({ "execute": command });
        if let Some(args) = arguments {
            msg["arguments"] = args;
        }
        let (tx, rx) = oneshot::channel();
        self.commands
            .send((msg, tx))
            .await
            .map_err(|_| QmpError::Closed)?;
        rx.await.map_err(|_| QmpError::Closed)?
    }

    /// The run state `query-status` reports ("prelaunch", "running", ...).
    pub async fn status(&self) -> Result<String, QmpError> {
        let r = self.execute("query-status", None).await?;
        r.get("status")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| QmpError::Json(r.to_string()))
    }

    /// Returns once the connection has ended (QEMU exited or closed it).
    pub async fn closed(&self) {
        self.commands.closed().await;
    }
}

/// The connection's task.
async fn run(
    mut framed: Framed<UnixStream, LinesCodec>,
    mut commands: mpsc::Receiver<(Value, Reply)>,
    events: mpsc::UnboundedSender<Value>,
) {
    let mut pending: HashMap<u64, Reply> = HashMap::new();
    let mut next_id = 0u64;
    loop {
        tokio::select! {
            cmd = commands.recv() => {
                // Every client handle gone: close the connection.
                let Some((mut msg, reply)) = cmd else { break };
                next_id += 1;
                msg["id"] = json!(next_id);
                if framed.send(msg.to_string()).await.is_err() {
                    let _ = reply.send(Err(QmpError::Closed));
                    break;
                }
                pending.insert(next_id, reply);
            }
            line = framed.next() => {
                let Some(Ok(line)) = line else { break };
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    tracing::warn!(%line, "QEMU sent a line that is not JSON");
                    continue;
                };
                if v.get("event").is_some() {
                    let _ = events.send(v);
                } else if let Some(reply) = v.get("id").and_then(Value::as_u64).and_then(|id| pending.remove(&id)) {
                    let result = match (v.get("return"), v.get("error")) {
                        (Some(r), _) => Ok(r.clone()),
                        (None, Some(e)) => Err(QmpError::Command {
                            class: e.get("class").and_then(Value::as_str).unwrap_or("GenericError").to_owned(),
                            desc: e.get("desc").and_then(Value::as_str).unwrap_or("").to_owned(),
                        }),
                        (None, None) => Err(QmpError::Json(line)),
                    };
                    let _ = reply.send(result);
                }
            }
        }
    }
    for (_, reply) in pending.drain() {
        let _ = reply.send(Err(QmpError::Closed));
    }
    // Dropping `commands` (the receiver) wakes `QmpClient::closed`.
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    /// A QMP server that answers like QEMU, then hangs up on `quit`.
    async fn fake_qemu(listener: tokio::net::UnixListener) {
        let (stream, _) = listener.accept().await.unwrap();
        let (r, mut w) = stream.into_split();
        w.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": [\"oob\"]}}\n")
            .await
            .unwrap();
        let mut lines = BufReader::new(r).lines();
        while let Some(line) = lines.next_line().await.unwrap() {
            let v: Value = serde_json::from_str(&line).unwrap();
            let id = v["id"].clone();
            let reply = match v["execute"].as_str().unwrap() {
                "qmp_capabilities" => json!({"return": {}, "id": id}),
                "query-status" => {
                    w.write_all(b"{\"event\": \"RESUME\", \"timestamp\": {}}\n")
                        .await
                        .unwrap();
                    json!({"return": {"status": "prelaunch", "running": false}, "id": id})
                }
                "quit" => return,
                other => {
                    json!({"error": {"class": "CommandNotFound", "desc": format!("The command {other} has not been found")}, "id": id})
                }
            };
            w.write_all(format!("{reply}\n").as_bytes()).await.unwrap();
        }
    }

    #[tokio::test]
    async fn handshake_commands_events_and_close() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        tokio::spawn(fake_qemu(listener));
        let (qmp, mut events) = QmpClient::connect(&path, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(qmp.status().await.unwrap(), "prelaunch");
        assert_eq!(events.recv().await.unwrap()["event"], "RESUME");
        let err = qmp.execute("nope", None).await.unwrap_err();
        assert!(
            matches!(err, QmpError::Command { ref class, .. } if class == "CommandNotFound"),
            "{err}"
        );
        assert!(matches!(
            qmp.execute("quit", None).await,
            Err(QmpError::Closed)
        ));
        qmp.closed().await;
        assert!(
            events.recv().await.is_none(),
            "events end with the connection"
        );
    }

    #[tokio::test]
    async fn a_server_that_is_not_qmp_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(b"{\"hello\": 1}\n").await.unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
        });
        let err = QmpClient::connect(&path, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, QmpError::Greeting(_)), "{err}");
        let missing = dir.path().join("none.sock");
        let err = QmpClient::connect(&missing, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, QmpError::Connect { .. }), "{err}");
    }
}
