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

mod handlers;
mod state;

use std::io;
use std::path::{Path, PathBuf};

pub use state::ConsoleActor;

use crate::actors::child::ChildHandle;

/// The typed handle to a VM's running console actor.
pub type ConsoleHandle = ChildHandle<ConsoleActor>;

/// What reading a console log can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("the console log")]
    Log(#[source] io::Error),
    #[error(transparent)]
    Pool(#[from] crate::drivers::blocking::PoolError),
}

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
        // An offset past the end (the log was rotated) reads from the start.
        let from = usize::try_from(offset)
            .ok()
            .filter(|&o| o <= bytes.len())
            .unwrap_or(0);
        Ok((String::from_utf8_lossy(&bytes[from..]).into_owned(), end))
    }

    fn both(&self, uuid: &uuid::Uuid) -> io::Result<Vec<u8>> {
        let mut bytes = read_or_empty(&self.old_log_path(uuid))?;
        bytes.extend(read_or_empty(&self.log_path(uuid))?);
        Ok(bytes)
    }

    /// [`tail`](Self::tail) (no `offset`) or [`since`](Self::since), on
    /// the blocking pool.
    pub async fn read(
        self: &std::sync::Arc<Self>,
        uuid: uuid::Uuid,
        lines: usize,
        offset: Option<u64>,
    ) -> Result<(String, u64), ConsoleError> {
        let config = self.clone();
        crate::drivers::blocking::run(move || match offset {
            Some(offset) => config.since(&uuid, offset),
            None => config.tail(&uuid, lines),
        })
        .await?
        .map_err(ConsoleError::Log)
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

#[cfg(test)]
mod tests {
    use super::state::{append, open_log};
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
