//! The RPC service: each connection of the RPC socket is served as its own
//! task (by the generic supervised listener in `proto::socket`). Requests on one connection run
//! concurrently (up to a limit) and are answered as each completes.

use std::path::PathBuf;

use futures_util::stream::FuturesUnordered;
use futures_util::{SinkExt, StreamExt};
use rmpv::Value;
use tokio::net::UnixStream;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

use super::codec::MsgpackCodec;
use super::methods::parse_call;
use super::wire::{self, Incoming};
use crate::actors::supervisor::ChildSpec;
use crate::api::Api;
use crate::config::RpcConfig;
use crate::proto::socket::{Service, SocketListener};

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
        serve(stream, self.api.clone(), self.config.clone(), cancel)
    }
}

/// Serves one connection until it closes, is cancelled, or sends a frame
/// that cannot be decoded (which closes this connection only).
///
/// Reading and writing are separate: a writer task sends the replies, so a
/// client that is slow to read its replies never stops this side from
/// reading (and the client from writing): with both on one loop, two full
/// socket buffers deadlock.
async fn serve(stream: UnixStream, api: Api, config: RpcConfig, cancel: CancellationToken) {
    let (rd, wr) = stream.into_split();
    let (out, mut replies) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let writer = async move {
        let mut writer = FramedWrite::new(wr, MsgpackCodec::new(usize::MAX));
        while let Some(frame) = replies.recv().await {
            if writer.send(frame).await.is_err() {
                break;
            }
        }
    };
    let reading = async move {
        let mut reader = FramedRead::new(rd, MsgpackCodec::new(config.max_frame_bytes));
        let mut in_flight = FuturesUnordered::new();
        let mut open = true;
        loop {
            if !open && in_flight.is_empty() {
                break;
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                frame = reader.next(), if open && in_flight.len() < config.max_in_flight => match frame {
                    None => open = false,
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
                            if out.send(wire::response_err(invalid.id, &invalid.error)).is_err() {
                                break;
                            }
                        }
                    },
                },
                Some(response) = in_flight.next(), if !in_flight.is_empty() => {
                    if out.send(response).is_err() {
                        break;
                    }
                }
            }
        }
        // Dropping `out` lets the writer finish what is queued, then stop.
    };
    tokio::join!(reading, writer);
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
