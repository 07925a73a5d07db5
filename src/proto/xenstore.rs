//! The xenstored socket service. Each connection is an actor
//! (`XsConnection`): it registers with the xenstored actor as a privileged
//! (dom0) client, sends its requests there in batches (everything already
//! read, in one message), and writes the replies and watch events that come
//! back on its outbound channel, in order. A connection actor is a temporary
//! worker in OTP terms: never restarted (a failed connection is closed, its
//! client reconnects), and stopped with its listener (the cancel token).

use actix::{Actor, ActorContext, ActorFutureExt, AsyncContext, Context, WrapFuture};
use futures_util::{FutureExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use std::sync::Arc;

use crate::actors::xenstored::{OutBudget, XenstoredHandle, OUT_SOFT_LIMIT};
use crate::proto::socket::Service;
use crate::xs::{ConnId, Outbound, XsCodec};

/// The most requests one batch carries to the store.
const MAX_BATCH: usize = 64;

/// Serves xenstore clients on a Unix socket.
#[derive(Debug, Clone)]
pub struct XsService {
    store: XenstoredHandle,
}

impl XsService {
    pub fn new(store: XenstoredHandle) -> Self {
        Self { store }
    }
}

impl Service for XsService {
    fn serve(
        &self,
        stream: UnixStream,
        cancel: CancellationToken,
    ) -> impl std::future::Future<Output = ()> + 'static {
        serve(stream, self.store.clone(), cancel)
    }
}

async fn serve(stream: UnixStream, store: XenstoredHandle, cancel: CancellationToken) {
    let budget = Arc::new(OutBudget::default());
    let (conn, outbound) = match store.connect_with(None, Some(budget.clone())).await {
        Ok(c) => c,
        Err(error) => {
            tracing::warn!(%error, "xenstore connection refused");
            return;
        }
    };
    XsConnection {
        io: Some((stream, outbound, cancel)),
        store,
        conn,
        budget,
    }
    .start();
}

/// One client connection.
#[derive(Debug)]
pub struct XsConnection {
    io: Option<(
        UnixStream,
        mpsc::UnboundedReceiver<Outbound>,
        CancellationToken,
    )>,
    store: XenstoredHandle,
    conn: ConnId,
    budget: Arc<OutBudget>,
}

impl Actor for XsConnection {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let Some((stream, outbound, cancel)) = self.io.take() else {
            return;
        };
        let io = run(
            stream,
            outbound,
            cancel,
            self.store.clone(),
            self.conn,
            self.budget.clone(),
        );
        ctx.spawn(io.into_actor(self).map(|_, _, ctx| ctx.stop()));
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.store.disconnect(self.conn);
    }
}

/// The connection's I/O: until the peer goes, the store closes it, or the
/// listener stops.
async fn run(
    stream: UnixStream,
    outbound: mpsc::UnboundedReceiver<Outbound>,
    cancel: CancellationToken,
    store: XenstoredHandle,
    conn: ConnId,
    budget: Arc<OutBudget>,
) {
    let (rd, wr) = stream.into_split();
    let reading = async {
        let mut reader = FramedRead::new(rd, XsCodec);
        loop {
            // A client that does not read its replies is not read from.
            budget.ready(OUT_SOFT_LIMIT).await;
            let Some(first) = reader.next().await else {
                break;
            };
            let mut batch = Vec::new();
            let mut next = Some(first);
            while let Some(frame) = next {
                match frame {
                    Ok(p) => batch.push(p),
                    Err(error) => {
                        tracing::debug!(%error, "dropping a xenstore connection");
                        if !batch.is_empty() {
                            let _ = store.send(conn, batch);
                        }
                        return;
                    }
                }
                // A batch is what is at hand, up to a bound: the budget is
                // looked at again before the next one.
                next = if batch.len() < MAX_BATCH {
                    reader.next().now_or_never().flatten()
                } else {
                    None
                };
            }
            budget.sent(batch.len());
            if store.send(conn, batch).is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = reading => {}
        _ = write_out(wr, outbound, &budget) => {}
        _ = cancel.cancelled() => {}
    }
}

/// Writes everything queued for this connection, a batch per write, until
/// the store closes it or the peer goes away.
async fn write_out(
    mut wr: tokio::net::unix::OwnedWriteHalf,
    mut outbound: mpsc::UnboundedReceiver<Outbound>,
    budget: &OutBudget,
) {
    let mut buf = Vec::with_capacity(8192);
    while let Some(first) = outbound.recv().await {
        let mut next = Some(first);
        let mut closing = false;
        while let Some(item) = next {
            match item {
                Outbound::Packet(p) => p.encode_into(&mut buf),
                Outbound::Close => closing = true,
            }
            next = if closing {
                None
            } else {
                outbound.try_recv().ok()
            };
        }
        if wr.write_all(&buf).await.is_err() || closing {
            return;
        }
        budget.written(buf.len());
        // Capacity a burst made is not kept for the connection's life.
        buf.clear();
        buf.shrink_to(8192);
    }
}
