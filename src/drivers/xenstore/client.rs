//! The client and the task that drives its connection.

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio_util::codec::FramedRead;

use super::EmbeddedStore;
use crate::xs::{ConnId, MsgType, Outbound, Packet, Perm, XsCodec, XsError, PAYLOAD_MAX};

/// How many times a transaction is tried before EAGAIN is returned.
const TRANSACTION_TRIES: usize = 100;
/// Requests an unprivileged domain may have outstanding (the daemons'
/// quota): the client waits rather than exceed it.
const DOMAIN_OUTSTANDING: usize = 20;

/// What a xenstore call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum XsClientError {
    /// xenstored answered with an error.
    #[error("xenstore: {0}")]
    Xs(#[from] XsError),
    #[error("cannot connect to xenstored at {0}")]
    Connect(String, #[source] std::io::Error),
    #[error("the embedded xenstored refused the connection: {0}")]
    Embedded(String),
    #[error("the xenstore connection closed")]
    Closed,
    /// The connection was lost with the request in flight (it is being
    /// established again): the request may or may not have been applied.
    #[error(
        "the xenstore connection was lost with the request in flight (it is being re-established)"
    )]
    Lost,
    /// The connection was lost during the transaction: xenstored forgot
    /// it; the whole transaction must be done again.
    #[error("the xenstore connection was lost during the transaction")]
    TransactionLost,
    #[error("xenstored sent a reply that does not parse")]
    BadReply,
}

pub(super) type Reply = Result<Vec<u8>, XsClientError>;

pub(super) enum Cmd {
    Request {
        packet: Packet,
        reply: oneshot::Sender<Reply>,
    },
    Watch {
        path: String,
        token: Vec<u8>,
        events: mpsc::UnboundedSender<String>,
    },
    Forget {
        token: Vec<u8>,
    },
}

/// The state of a client's connection, as `host.info` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct XsLink {
    /// Whether the connection is up now.
    pub connected: bool,
    /// How many times it was lost and established again.
    pub reconnects: u64,
}

/// A connection to xenstored. Cheap to clone; clones share it.
#[derive(Debug, Clone)]
pub struct XsClient {
    cmds: mpsc::UnboundedSender<Cmd>,
    tokens: Arc<AtomicU64>,
    limit: Option<Arc<Semaphore>>,
    link: watch::Receiver<XsLink>,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cmd")
    }
}

pub(super) enum Wire {
    Socket(OwnedWriteHalf, FramedRead<OwnedReadHalf, XsCodec>),
    Embedded(
        Arc<dyn EmbeddedStore>,
        ConnId,
        mpsc::UnboundedReceiver<Outbound>,
    ),
}

/// Where a persistent client connects again when its connection is lost.
#[derive(Debug, Clone)]
pub enum Dial {
    /// A xenstored socket (the host's, or xenith's embedded one).
    Socket(std::path::PathBuf),
    /// The embedded xenstored, in process, privileged.
    Embedded(Arc<dyn EmbeddedStore>),
}

impl Dial {
    pub(super) async fn connect(&self) -> Result<Wire, XsClientError> {
        match self {
            Dial::Socket(path) => {
                let stream = UnixStream::connect(path)
                    .await
                    .map_err(|e| XsClientError::Connect(path.display().to_string(), e))?;
                let (rd, wr) = stream.into_split();
                Ok(Wire::Socket(wr, FramedRead::new(rd, XsCodec)))
            }
            Dial::Embedded(store) => {
                let (conn, rx) = store.connect(None).await.map_err(XsClientError::Embedded)?;
                Ok(Wire::Embedded(store.clone(), conn, rx))
            }
        }
    }
}

impl XsClient {
    /// Connects to a xenstored socket (once: a lost connection stays lost).
    pub async fn connect_socket(path: &Path) -> Result<Self, XsClientError> {
        let wire = Dial::Socket(path.to_owned()).connect().await?;
        Ok(Self::spawn(wire, None, None))
    }

    /// A privileged connection that is established again whenever it is
    /// lost (xenstored restarted, or dropped it): with back-off, its watches
    /// registered again (each fires once, so watchers read the state
    /// again), the requests in flight failed ([`XsClientError::Lost`]),
    /// those of a transaction it had open too
    /// ([`XsClientError::TransactionLost`]), and those made meanwhile sent
    /// once it is up. The first connection must succeed.
    pub async fn persistent(dial: Dial) -> Result<Self, XsClientError> {
        let wire = dial.connect().await?;
        Ok(Self::spawn(wire, None, Some(dial)))
    }

    /// Connects in process to the embedded xenstored: privileged (dom0)
    /// with `None`, else as that introduced domain.
    pub async fn connect_embedded<S: EmbeddedStore + Clone>(
        store: &S,
        domid: Option<u32>,
    ) -> Result<Self, XsClientError> {
        Self::connect_embedded_dyn(Arc::new(store.clone()), domid).await
    }

    /// [`XsClient::connect_embedded`] for a store already shared.
    pub async fn connect_embedded_dyn(
        store: Arc<dyn EmbeddedStore>,
        domid: Option<u32>,
    ) -> Result<Self, XsClientError> {
        let (conn, rx) = store
            .connect(domid)
            .await
            .map_err(XsClientError::Embedded)?;
        let limit = match domid {
            Some(d) if d != 0 => Some(Arc::new(Semaphore::new(DOMAIN_OUTSTANDING))),
            _ => None,
        };
        Ok(Self::spawn(Wire::Embedded(store, conn, rx), limit, None))
    }

    fn spawn(wire: Wire, limit: Option<Arc<Semaphore>>, redial: Option<Dial>) -> Self {
        let (cmds, rx) = mpsc::unbounded_channel();
        let (link_tx, link) = watch::channel(XsLink {
            connected: true,
            reconnects: 0,
        });
        tokio::spawn(super::connection::drive(wire, rx, redial, link_tx));
        Self {
            cmds,
            tokens: Arc::new(AtomicU64::new(0)),
            limit,
            link,
        }
    }

    /// The connection's state now.
    pub fn link(&self) -> XsLink {
        *self.link.borrow()
    }

    /// One request; the reply's payload.
    pub async fn request(
        &self,
        ty: MsgType,
        tx_id: u32,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, XsClientError> {
        // xenstored drops a connection that sends more (xs_wire.h): such a
        // request is refused here, before it could cost the connection.
        if payload.len() > PAYLOAD_MAX {
            return Err(XsClientError::Xs(XsError::E2BIG));
        }
        let _permit = match &self.limit {
            Some(s) => Some(s.acquire().await.map_err(|_| XsClientError::Closed)?),
            None => None,
        };
        let (reply, rx) = oneshot::channel();
        let packet = Packet::new(ty, 0, tx_id, payload);
        self.cmds
            .send(Cmd::Request { packet, reply })
            .map_err(|_| XsClientError::Closed)?;
        rx.await.map_err(|_| XsClientError::Closed)?
    }

    pub async fn read(&self, path: &str) -> Result<Vec<u8>, XsClientError> {
        self.request(MsgType::Read, 0, nul(path)).await
    }

    /// READ as text; `None` when the node does not exist.
    pub async fn read_opt(&self, path: &str) -> Result<Option<String>, XsClientError> {
        match self.read(path).await {
            Ok(v) => Ok(Some(String::from_utf8_lossy(&v).into_owned())),
            Err(XsClientError::Xs(XsError::ENOENT)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn write(&self, path: &str, value: impl AsRef<[u8]>) -> Result<(), XsClientError> {
        self.request(MsgType::Write, 0, write_payload(path, value.as_ref()))
            .await
            .map(drop)
    }

    pub async fn mkdir(&self, path: &str) -> Result<(), XsClientError> {
        self.request(MsgType::Mkdir, 0, nul(path)).await.map(drop)
    }

    pub async fn rm(&self, path: &str) -> Result<(), XsClientError> {
        self.request(MsgType::Rm, 0, nul(path)).await.map(drop)
    }

    pub async fn directory(&self, path: &str) -> Result<Vec<String>, XsClientError> {
        self.request(MsgType::Directory, 0, nul(path))
            .await
            .map(|p| split(&p))
    }

    /// DIRECTORY, and for a directory too big for one reply (E2BIG),
    /// DIRECTORY_PART until the whole list is read (as libxenstore does).
    pub async fn directory_all(&self, path: &str) -> Result<Vec<String>, XsClientError> {
        match self.directory(path).await {
            Err(XsClientError::Xs(XsError::E2BIG)) => {}
            other => return other,
        }
        // Each part: the node's generation, then names from `offset`, each
        // NUL-terminated, and an empty name once the list is done. A
        // generation that moves means the directory changed: start again.
        'again: for _ in 0..TRANSACTION_TRIES {
            let mut names = Vec::new();
            let mut offset = 0usize;
            let mut generation: Option<Vec<u8>> = None;
            loop {
                let mut payload = nul(path);
                payload.extend_from_slice(offset.to_string().as_bytes());
                payload.push(0);
                let part = self.request(MsgType::DirectoryPart, 0, payload).await?;
                let mut fields = part.split(|b| *b == 0);
                let gen = fields.next().ok_or(XsClientError::BadReply)?.to_vec();
                if generation.get_or_insert_with(|| gen.clone()) != &gen {
                    continue 'again;
                }
                let body = part.get(gen.len() + 1..).unwrap_or_default();
                let mut rest = body;
                let mut took = false;
                while let Some(end) = rest.iter().position(|b| *b == 0) {
                    if end == 0 {
                        // The empty name: the list is done.
                        return Ok(names);
                    }
                    names.push(String::from_utf8_lossy(&rest[..end]).into_owned());
                    offset += end + 1;
                    rest = &rest[end + 1..];
                    took = true;
                }
                if !took {
                    return Ok(names);
                }
            }
        }
        Err(XsClientError::Xs(XsError::EAGAIN))
    }

    pub async fn get_perms(&self, path: &str) -> Result<Vec<Perm>, XsClientError> {
        let p = self.request(MsgType::GetPerms, 0, nul(path)).await?;
        split(&p)
            .iter()
            .map(|s| Perm::parse(s.as_bytes()).ok_or(XsClientError::BadReply))
            .collect()
    }

    pub async fn set_perms(&self, path: &str, perms: &[Perm]) -> Result<(), XsClientError> {
        self.request(MsgType::SetPerms, 0, perms_payload(path, perms))
            .await
            .map(drop)
    }

    pub async fn introduce(&self, domid: u32, gfn: u64, evtchn: u32) -> Result<(), XsClientError> {
        let payload = format!("{domid}\0{gfn}\0{evtchn}\0").into_bytes();
        self.request(MsgType::Introduce, 0, payload).await.map(drop)
    }

    pub async fn release(&self, domid: u32) -> Result<(), XsClientError> {
        self.request(MsgType::Release, 0, nul(&domid.to_string()))
            .await
            .map(drop)
    }

    pub async fn get_domain_path(&self, domid: u32) -> Result<String, XsClientError> {
        let p = self
            .request(MsgType::GetDomainPath, 0, nul(&domid.to_string()))
            .await?;
        split(&p).into_iter().next().ok_or(XsClientError::BadReply)
    }

    pub async fn is_domain_introduced(&self, domid: u32) -> Result<bool, XsClientError> {
        let p = self
            .request(MsgType::IsDomainIntroduced, 0, nul(&domid.to_string()))
            .await?;
        Ok(p.starts_with(b"T"))
    }

    pub async fn set_target(&self, domid: u32, target: u32) -> Result<(), XsClientError> {
        let payload = format!("{domid}\0{target}\0").into_bytes();
        self.request(MsgType::SetTarget, 0, payload).await.map(drop)
    }

    /// Watches `path`: the stream yields the path of each change (the first
    /// event names `path` itself). Dropping the stream unwatches.
    pub async fn watch(&self, path: &str) -> Result<WatchStream, XsClientError> {
        let token = format!("xenith-{}", self.tokens.fetch_add(1, Ordering::Relaxed)).into_bytes();
        let (events, rx) = mpsc::unbounded_channel();
        self.cmds
            .send(Cmd::Watch {
                path: path.to_owned(),
                token: token.clone(),
                events,
            })
            .map_err(|_| XsClientError::Closed)?;
        let mut payload = nul(path);
        payload.extend_from_slice(&token);
        payload.push(0);
        if let Err(e) = self.request(MsgType::Watch, 0, payload).await {
            let _ = self.cmds.send(Cmd::Forget { token });
            return Err(e);
        }
        Ok(WatchStream {
            rx,
            path: path.to_owned(),
            token,
            client: self.clone(),
        })
    }

    /// Runs `body` in a transaction, retried while the commit fails with
    /// EAGAIN. `body` must be safe to run again (read, then write).
    pub async fn transaction<T, F, Fut>(&self, mut body: F) -> Result<T, XsClientError>
    where
        F: FnMut(Transaction) -> Fut,
        Fut: Future<Output = Result<T, XsClientError>>,
    {
        for _ in 0..TRANSACTION_TRIES {
            let id = self.request(MsgType::TransactionStart, 0, vec![0]).await?;
            let id: u32 = split(&id)
                .first()
                .and_then(|s| s.parse().ok())
                .ok_or(XsClientError::BadReply)?;
            let tx = Transaction {
                client: self.clone(),
                id,
            };
            match body(tx).await {
                Ok(value) => match self
                    .request(MsgType::TransactionEnd, id, b"T\0".to_vec())
                    .await
                {
                    Ok(_) => return Ok(value),
                    Err(XsClientError::Xs(XsError::EAGAIN)) => continue,
                    Err(e) => return Err(e),
                },
                Err(e) => {
                    let _ = self
                        .request(MsgType::TransactionEnd, id, b"F\0".to_vec())
                        .await;
                    return Err(e);
                }
            }
        }
        Err(XsClientError::Xs(XsError::EAGAIN))
    }
}

/// Operations inside one transaction.
#[derive(Debug, Clone)]
pub struct Transaction {
    client: XsClient,
    id: u32,
}

impl Transaction {
    pub fn id(&self) -> u32 {
        self.id
    }

    pub async fn read(&self, path: &str) -> Result<Vec<u8>, XsClientError> {
        self.client.request(MsgType::Read, self.id, nul(path)).await
    }

    pub async fn write(&self, path: &str, value: impl AsRef<[u8]>) -> Result<(), XsClientError> {
        self.client
            .request(MsgType::Write, self.id, write_payload(path, value.as_ref()))
            .await
            .map(drop)
    }

    pub async fn mkdir(&self, path: &str) -> Result<(), XsClientError> {
        self.client
            .request(MsgType::Mkdir, self.id, nul(path))
            .await
            .map(drop)
    }

    pub async fn rm(&self, path: &str) -> Result<(), XsClientError> {
        self.client
            .request(MsgType::Rm, self.id, nul(path))
            .await
            .map(drop)
    }

    pub async fn directory(&self, path: &str) -> Result<Vec<String>, XsClientError> {
        self.client
            .request(MsgType::Directory, self.id, nul(path))
            .await
            .map(|p| split(&p))
    }

    pub async fn set_perms(&self, path: &str, perms: &[Perm]) -> Result<(), XsClientError> {
        self.client
            .request(MsgType::SetPerms, self.id, perms_payload(path, perms))
            .await
            .map(drop)
    }
}

/// The events of one watch.
#[derive(Debug)]
pub struct WatchStream {
    rx: mpsc::UnboundedReceiver<String>,
    path: String,
    token: Vec<u8>,
    client: XsClient,
}

impl WatchStream {
    /// The next changed path; None once the connection has closed.
    pub async fn next(&mut self) -> Option<String> {
        self.rx.recv().await
    }
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        let mut payload = nul(&self.path);
        payload.extend_from_slice(&self.token);
        payload.push(0);
        let (reply, _) = oneshot::channel();
        let packet = Packet::new(MsgType::Unwatch, 0, 0, payload);
        let _ = self.client.cmds.send(Cmd::Request { packet, reply });
        let _ = self.client.cmds.send(Cmd::Forget {
            token: self.token.clone(),
        });
    }
}

pub(super) fn nul(s: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(s.len() + 1);
    v.extend_from_slice(s.as_bytes());
    v.push(0);
    v
}

fn write_payload(path: &str, value: &[u8]) -> Vec<u8> {
    let mut v = nul(path);
    v.extend_from_slice(value);
    v
}

fn perms_payload(path: &str, perms: &[Perm]) -> Vec<u8> {
    let mut v = nul(path);
    for p in perms {
        v.extend_from_slice(p.to_string().as_bytes());
        v.push(0);
    }
    v
}

pub(super) fn split(payload: &[u8]) -> Vec<String> {
    let body = payload.strip_suffix(&[0]).unwrap_or(payload);
    if body.is_empty() {
        return Vec::new();
    }
    body.split(|b| *b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}
