//! The RPC listener: a supervised actor that owns the Unix socket and
//! serves each connection as its own task. Requests on one connection run
//! concurrently (up to a limit) and are answered as each completes.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener as StdUnixListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use actix::{Actor, ActorContext, AsyncContext, Context, WrapFuture};
use futures_util::stream::FuturesUnordered;
use futures_util::{SinkExt, StreamExt};
use rmpv::Value;
use tokio::net::{UnixListener, UnixStream};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

use super::codec::MsgpackCodec;
use super::methods::parse_call;
use super::wire::{self, Incoming};
use crate::actors::supervisor::{ChildSpec, ExitSlot, StartError};
use crate::api::Api;
use crate::config::RpcConfig;

/// Why the socket could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("another xenithd is serving {0}")]
    InUse(PathBuf),
    #[error("{0} exists and is not a socket")]
    NotASocket(PathBuf),
    #[error("cannot {what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ListenError + 'a {
    move |source| ListenError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// Binds the socket: refuses one a live daemon answers on, removes one left
/// by a dead daemon, then 0600 (or 0660 with the configured group).
pub fn bind(path: &Path, config: &RpcConfig) -> Result<(StdUnixListener, u64), ListenError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(ListenError::NotASocket(path.into()))
        }
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(ListenError::InUse(path.into())),
            Err(_) => {
                tracing::info!(socket = %path.display(), "removing stale socket");
                std::fs::remove_file(path).map_err(io_err("remove stale", path))?;
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("inspect", path)(e)),
    }
    let listener = StdUnixListener::bind(path).map_err(io_err("bind", path))?;
    listener
        .set_nonblocking(true)
        .map_err(io_err("configure", path))?;
    let mode = if let Some(gid) = config.socket_group {
        nix::unistd::chown(path, None, Some(gid))
            .map_err(|e| io_err("chown", path)(io::Error::from(e)))?;
        0o660
    } else {
        0o600
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io_err("chmod", path))?;
    let inode = std::fs::metadata(path)
        .map_err(io_err("inspect", path))?
        .ino();
    Ok((listener, inode))
}

/// The listener actor.
#[derive(Debug)]
pub struct RpcListener {
    path: PathBuf,
    inode: u64,
    listener: Option<StdUnixListener>,
    config: RpcConfig,
    api: Api,
    cancel: CancellationToken,
    exit: ExitSlot,
}

impl RpcListener {
    /// The child spec: binding happens at start, so a socket held by a live
    /// daemon fails xenithd's start with that reason.
    pub fn spec(path: PathBuf, config: RpcConfig, api: Api) -> ChildSpec {
        ChildSpec::worker("rpc", move |exit| {
            let (listener, inode) =
                bind(&path, &config).map_err(|e| StartError(crate::error::chain(&e)))?;
            tracing::info!(socket = %path.display(), "serving MessagePack-RPC");
            Ok(RpcListener {
                path: path.clone(),
                inode,
                listener: Some(listener),
                config: config.clone(),
                api: api.clone(),
                cancel: CancellationToken::new(),
                exit,
            })
        })
    }
}

impl Actor for RpcListener {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let listener = match self.listener.take().map(UnixListener::from_std) {
            Some(Ok(l)) => l,
            Some(Err(e)) => {
                self.exit.error(format!("cannot register the socket: {e}"));
                ctx.stop();
                return;
            }
            None => return,
        };
        let (api, config, cancel) = (self.api.clone(), self.config.clone(), self.cancel.clone());
        ctx.spawn(
            async move {
                loop {
                    match listener.accept().await {
                        Ok((stream, _)) => {
                            actix::spawn(serve(
                                stream,
                                api.clone(),
                                config.clone(),
                                cancel.child_token(),
                            ));
                        }
                        // Out of descriptors and the like: pause instead of spinning.
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }
            .into_actor(self),
        );
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.cancel.cancel();
        // Remove the socket only if it is still the one this incarnation made.
        let ours = std::fs::metadata(&self.path)
            .map(|m| m.ino() == self.inode)
            .unwrap_or(false);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Serves one connection until it closes, is cancelled, or sends a frame
/// that cannot be decoded (which closes this connection only).
async fn serve(stream: UnixStream, api: Api, config: RpcConfig, cancel: CancellationToken) {
    let (rd, wr) = stream.into_split();
    let mut reader = FramedRead::new(rd, MsgpackCodec::new(config.max_frame_bytes));
    let mut writer = FramedWrite::new(wr, MsgpackCodec::new(usize::MAX));
    let mut in_flight = FuturesUnordered::new();
    let mut reading = true;
    loop {
        if !reading && in_flight.is_empty() {
            break;
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            frame = reader.next(), if reading && in_flight.len() < config.max_in_flight => match frame {
                None => reading = false,
                Some(Err(error)) => {
                    tracing::debug!(%error, "closing an RPC connection");
                    break;
                }
                Some(Ok(frame)) => match wire::parse(frame) {
                    Ok(Incoming::Request { id, method, params }) => {
                        in_flight.push(answer(api.clone(), id, method, params));
                    }
                    // Clients have nothing to notify the daemon of.
                    Ok(Incoming::Notification { .. }) => {}
                    Err(invalid) => {
                        if writer.send(wire::response_err(invalid.id, &invalid.error)).await.is_err() {
                            break;
                        }
                    }
                },
            },
            Some(response) = in_flight.next(), if !in_flight.is_empty() => {
                if writer.send(response).await.is_err() {
                    break;
                }
            }
        }
    }
}

async fn answer(api: Api, id: u32, method: String, params: Value) -> Vec<u8> {
    let result = match parse_call(&method, params) {
        Ok(call) => api.execute(call).await,
        Err(e) => Err(e),
    };
    match result.and_then(|reply| wire::response_ok(id, &reply)) {
        Ok(frame) => frame,
        Err(error) => wire::response_err(Some(id), &error),
    }
}
