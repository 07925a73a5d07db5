//! The console actor's state, its start and its log.

use std::io;
use std::path::Path;
use std::sync::Arc;

use actix::{Actor, AsyncContext, Context};
use tokio::io::AsyncWriteExt;

use super::ConsoleConfig;
use crate::actors::child::ChildId;
use crate::actors::supervisor::{ChildSpec, ExitSlot, Restart, StartError};
use crate::drivers::{DomId, Hv};

/// The open log and its size.
#[derive(Debug)]
pub(super) struct Log {
    file: tokio::fs::File,
    size: u64,
}

/// The console actor.
#[derive(Debug)]
pub struct ConsoleActor {
    pub(super) domid: DomId,
    pub(super) uuid: uuid::Uuid,
    pub(super) config: Arc<ConsoleConfig>,
    pub(super) log: Option<Log>,
    output: Option<tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>>,
    pub(super) exit: ExitSlot,
}

pub(super) async fn open_log(path: &Path) -> io::Result<Log> {
    let file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await?;
    let size = file.metadata().await?.len();
    Ok(Log { file, size })
}

impl ConsoleActor {
    /// The child spec: the console is open before it counts as started.
    pub fn spec(
        domid: DomId,
        uuid: uuid::Uuid,
        name: String,
        hv: Hv,
        config: Arc<ConsoleConfig>,
    ) -> ChildSpec {
        ChildSpec::worker_async(ChildId::CONSOLE, move |exit| {
            let (hv, config, name) = (hv.clone(), config.clone(), name.clone());
            async move {
                let output = hv
                    .open_console(domid, name)
                    .await
                    .map_err(|e| StartError::new(crate::error::chain(&e)))?;
                tokio::fs::create_dir_all(&config.dir)
                    .await
                    .map_err(|e| StartError::new(format!("{}: {e}", config.dir.display())))?;
                let path = config.log_path(&uuid);
                let log = open_log(&path)
                    .await
                    .map_err(|e| StartError::new(format!("{}: {e}", path.display())))?;
                Ok(ConsoleActor {
                    domid,
                    uuid,
                    config,
                    log: Some(log),
                    output: Some(output),
                    exit,
                })
            }
        })
        .restart(Restart::Transient)
    }
}

/// Appends `chunk`, rotating first if it would pass the limit.
pub(super) async fn append(
    mut log: Log,
    chunk: Vec<u8>,
    config: &ConsoleConfig,
    uuid: &uuid::Uuid,
) -> io::Result<Log> {
    if log.size > 0 && log.size + chunk.len() as u64 > config.max_bytes {
        log.file.flush().await?;
        tokio::fs::rename(config.log_path(uuid), config.old_log_path(uuid)).await?;
        log = open_log(&config.log_path(uuid)).await?;
    }
    log.file.write_all(&chunk).await?;
    // tokio's file writes in the background: make it visible to readers.
    log.file.flush().await?;
    log.size += chunk.len() as u64;
    Ok(log)
}

impl Actor for ConsoleActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(rx) = self.output.take() {
            ctx.add_stream(futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|chunk| (chunk, rx))
            }));
        }
    }
}
