//! The console actor: what xenconsoled does for console 0 of a running
//! domain, as far as the toolstack is concerned. It reads the guest's
//! console output (`Hypervisor::open_console`) and appends it to the VM's
//! console log, `<state dir>/console/<uuid>.log` (like xenconsoled's
//! `--log=guest` files). The log is rotated to `<uuid>.log.1` when it passes
//! its size limit, so a VM's console costs bounded disk and no memory.
//! `vm.console` reads the log's last lines, also after the VM stopped.
//!
//! Transient: it ends normally when the domain dies (its output stream
//! ends); after a panic it is restarted alone and reopens the console. Output
//! written meanwhile waited in the console ring and is not lost.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix::{
    Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler, StreamHandler, WrapFuture,
};
use tokio::io::AsyncWriteExt;

use super::supervisor::{ChildSpec, ExitSlot, Restart, StartError};
use super::InjectPanic;
use crate::drivers::{DomId, Hypervisor};

/// The supervisor id of a VM's console actor.
pub const CONSOLE_ID: &str = "console";

/// Where console logs go and how big one may grow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleConfig {
    pub dir: PathBuf,
    /// Past this, the log is rotated (one old log is kept).
    pub max_bytes: u64,
}

impl ConsoleConfig {
    /// The current log of a VM.
    pub fn log_path(&self, uuid: &uuid::Uuid) -> PathBuf {
        self.dir.join(format!("{uuid}.log"))
    }

    fn old_log_path(&self, uuid: &uuid::Uuid) -> PathBuf {
        self.dir.join(format!("{uuid}.log.1"))
    }

    /// The last `lines` lines of a VM's console log (both files), lossily
    /// decoded (empty when the VM never ran), and the offset just past them
    /// (for [`ConsoleConfig::since`]). Blocking: call it off the arbiter
    /// threads.
    pub fn tail(&self, uuid: &uuid::Uuid, lines: usize) -> io::Result<(String, u64)> {
        let bytes = self.both(uuid)?;
        let end = bytes.len() as u64;
        let text = String::from_utf8_lossy(&bytes);
        // A trailing partial line (a prompt) counts as a line.
        let starts: Vec<usize> = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .filter(|&i| i < text.len())
            .collect();
        let from = match starts.len().checked_sub(lines) {
            Some(skip) => starts.get(skip).copied().unwrap_or(text.len()),
            None => 0,
        };
        Ok((text[from..].to_owned(), end))
    }

    /// What was written past `offset` (as a previous call returned it),
    /// and the new offset: `vm console --follow`. If the log was rotated
    /// past the offset meanwhile, what is kept is returned from its start.
    pub fn since(&self, uuid: &uuid::Uuid, offset: u64) -> io::Result<(String, u64)> {
        let bytes = self.both(uuid)?;
        let end = bytes.len() as u64;
        let from = if offset <= end { offset as usize } else { 0 };
        Ok((String::from_utf8_lossy(&bytes[from..]).into_owned(), end))
    }

    fn both(&self, uuid: &uuid::Uuid) -> io::Result<Vec<u8>> {
        let mut bytes = read_or_empty(&self.old_log_path(uuid))?;
        bytes.extend(read_or_empty(&self.log_path(uuid))?);
        Ok(bytes)
    }

    /// Forgets a VM's console logs (`vm.remove`).
    pub fn remove(&self, uuid: &uuid::Uuid) -> io::Result<()> {
        for path in [self.log_path(uuid), self.old_log_path(uuid)] {
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}

fn read_or_empty(path: &Path) -> io::Result<Vec<u8>> {
    match std::fs::read(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        r => r,
    }
}

/// The open log and its size.
#[derive(Debug)]
struct Log {
    file: tokio::fs::File,
    size: u64,
}

/// The console actor.
#[derive(Debug)]
pub struct ConsoleActor {
    domid: DomId,
    uuid: uuid::Uuid,
    config: Arc<ConsoleConfig>,
    log: Option<Log>,
    output: Option<tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>>,
    exit: ExitSlot,
}

async fn open_log(path: &Path) -> io::Result<Log> {
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
        driver: Arc<dyn Hypervisor>,
        config: Arc<ConsoleConfig>,
    ) -> ChildSpec {
        ChildSpec::worker_async(CONSOLE_ID, move |exit| {
            let (driver, config, name) = (driver.clone(), config.clone(), name.clone());
            async move {
                let output = tokio::task::spawn_blocking(move || driver.open_console(domid, &name))
                    .await
                    .map_err(StartError::new)?
                    .map_err(|e| StartError::new(format!("open the console: {e}")))?;
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
async fn append(
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

impl StreamHandler<Vec<u8>> for ConsoleActor {
    fn handle(&mut self, chunk: Vec<u8>, ctx: &mut Context<Self>) {
        let Some(log) = self.log.take() else {
            return;
        };
        let (config, uuid) = (self.config.clone(), self.uuid);
        // One write at a time, in order: the mailbox waits for it.
        ctx.wait(
            async move { append(log, chunk, &config, &uuid).await }
                .into_actor(self)
                .map(|r, act, ctx| match r {
                    Ok(log) => act.log = Some(log),
                    Err(e) => {
                        act.exit.error(format!("cannot write the console log: {e}"));
                        ctx.stop();
                    }
                }),
        );
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        // The domain is gone: a normal end.
        tracing::debug!(domid = %self.domid, "console closed");
        ctx.stop();
    }
}

impl Handler<InjectPanic> for ConsoleActor {
    type Result = ();

    fn handle(&mut self, _msg: InjectPanic, _ctx: &mut Context<Self>) {
        panic!(
            "injected panic in the console actor of domain {}",
            self.domid
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_counts_lines_across_both_logs() {
        let dir = tempfile::tempdir().unwrap();
        let config = ConsoleConfig {
            dir: dir.path().to_owned(),
            max_bytes: 1024,
        };
        let uuid = uuid::Uuid::new_v4();
        assert_eq!(config.tail(&uuid, 10).unwrap().0, "");
        std::fs::write(config.old_log_path(&uuid), "a\nb\n").unwrap();
        std::fs::write(config.log_path(&uuid), "c\nd\nlogin: ").unwrap();
        assert_eq!(config.tail(&uuid, 2).unwrap().0, "d\nlogin: ");
        assert_eq!(config.tail(&uuid, 4).unwrap().0, "b\nc\nd\nlogin: ");
        assert_eq!(config.tail(&uuid, 100).unwrap().0, "a\nb\nc\nd\nlogin: ");
        assert_eq!(config.tail(&uuid, 0).unwrap().0, "");
        let (_, end) = config.tail(&uuid, 1).unwrap();
        std::fs::write(config.log_path(&uuid), "c\nd\nlogin: root\n").unwrap();
        assert_eq!(
            config.since(&uuid, end).unwrap(),
            ("root\n".to_owned(), end + 5)
        );
        // Rotated meanwhile (the offset is past the end): from the start.
        assert_eq!(
            config.since(&uuid, 1000).unwrap().0,
            "a\nb\nc\nd\nlogin: root\n"
        );
        config.remove(&uuid).unwrap();
        assert_eq!(config.tail(&uuid, 10).unwrap().0, "");
    }

    #[tokio::test]
    async fn append_rotates_past_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let config = ConsoleConfig {
            dir: dir.path().to_owned(),
            max_bytes: 10,
        };
        let uuid = uuid::Uuid::new_v4();
        let mut log = open_log(&config.log_path(&uuid)).await.unwrap();
        for chunk in ["12345\n", "6789\n", "abc\n"] {
            log = append(log, chunk.as_bytes().to_vec(), &config, &uuid)
                .await
                .unwrap();
        }
        drop(log);
        assert_eq!(
            std::fs::read_to_string(config.old_log_path(&uuid)).unwrap(),
            "12345\n"
        );
        assert_eq!(
            std::fs::read_to_string(config.log_path(&uuid)).unwrap(),
            "6789\nabc\n"
        );
        assert_eq!(config.tail(&uuid, 2).unwrap().0, "6789\nabc\n");
    }
}
