//! What xenithd makes sure of before it touches anything: that it is the
//! only daemon of its state directory (a lock held for its life) and of its
//! sockets (a live server answering on one is another daemon), and which
//! xenstored it may use with the hypervisor it drives.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};

use super::DaemonError;
use crate::config::XenstoreChoice;
use crate::drivers::HypervisorKind;

/// The lock file in the state directory: the holder's pid in it.
pub const LOCK_FILE: &str = "xenithd.lock";

/// Sockets where a host's own xenstored listens.
const HOST_XENSTORED_SOCKETS: &[&str] = &["/run/xenstored/socket", "/var/run/xenstored/socket"];

/// How long a Xen host's xenstored may take to appear (a boot race).
const HOST_XENSTORED_WAIT: Duration = Duration::from_secs(30);

/// The state directory's lock, held (flock, exclusive) for the daemon's
/// life: a second daemon on the same directory is refused before it reads a
/// record, whatever socket it was given.
#[derive(Debug)]
pub struct StateLock {
    _file: Flock<File>,
    path: PathBuf,
}

impl StateLock {
    /// Takes the lock of `state_dir` (created 0700 if missing), writing this
    /// process's pid into it; fails naming the holder's.
    pub fn acquire(state_dir: &Path) -> Result<StateLock, DaemonError> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(|e| DaemonError::StateDir(state_dir.to_owned(), e))?;
        let path = state_dir.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| DaemonError::StateDir(path.clone(), e))?;
        let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(DaemonError::AlreadyRunning {
                    pid: text.trim().parse::<i32>().ok(),
                    path,
                });
            }
            Err((_, errno)) => {
                return Err(DaemonError::StateDir(path, std::io::Error::from(errno)));
            }
        };
        let pid = std::process::id();
        let written = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{pid}"))
            .and_then(|()| file.sync_all());
        written.map_err(|e| DaemonError::StateDir(path.clone(), e))?;
        Ok(StateLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Fails when a live server answers on `socket` (another xenithd, or
/// another xenstored), naming its pid (from the socket's peer credentials).
/// A socket nobody answers on is left for the listener to replace.
pub fn check_socket(socket: &Path) -> Result<(), DaemonError> {
    let Ok(stream) = std::os::unix::net::UnixStream::connect(socket) else {
        return Ok(());
    };
    let pid = nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
        .ok()
        .map(|c| c.pid());
    Err(DaemonError::AlreadyRunning {
        pid,
        path: socket.to_owned(),
    })
}

/// Which xenstored to use: `("host", socket)` or `("embedded", socket)`.
///
/// On Xen the host's xenstored is the real one: `auto` waits (a while, for
/// a boot race) for its socket rather than ever falling back to the
/// embedded one, and `embedded` is refused unless `force`d. Elsewhere
/// `auto` is the host's when its socket exists, the embedded one otherwise.
pub async fn resolve_xenstore(
    choice: &XenstoreChoice,
    rpc_socket: &Path,
    hypervisor: HypervisorKind,
    force: bool,
) -> Result<(&'static str, PathBuf), DaemonError> {
    let embedded = crate::paths::embedded_xenstored_socket(rpc_socket);
    let host_socket = || {
        HOST_XENSTORED_SOCKETS
            .iter()
            .map(Path::new)
            .find(|p| p.exists())
            .map(Path::to_owned)
    };
    match (choice, hypervisor) {
        (XenstoreChoice::Socket(p), _) => Ok(("host", p.clone())),
        (XenstoreChoice::Embedded, HypervisorKind::Xen) if !force => Err(DaemonError::Refused(
            "--xenstore embedded with the xen hypervisor: the host's xenstored is the one \
                 its guests and backends use (--force-embedded-xenstore runs the embedded one \
                 anyway)"
                .into(),
        )),
        (XenstoreChoice::Embedded, _) => Ok(("embedded", embedded)),
        (XenstoreChoice::Auto, HypervisorKind::Xen) => {
            let deadline = tokio::time::Instant::now() + HOST_XENSTORED_WAIT;
            loop {
                if let Some(p) = host_socket() {
                    return Ok(("host", p));
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(DaemonError::Refused(format!(
                        "no xenstored runs on this Xen host (none of {} exists after {:?}): \
                         start Xen's services first (Debian: systemctl start xen)",
                        HOST_XENSTORED_SOCKETS.join(", "),
                        HOST_XENSTORED_WAIT
                    )));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        (XenstoreChoice::Auto, HypervisorKind::Sim) => match host_socket() {
            Some(p) => Ok(("host", p)),
            None => Ok(("embedded", embedded)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_of_one_state_dir_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateLock::acquire(dir.path()).unwrap();
        let text = std::fs::read_to_string(first.path()).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
        // flock locks belong to the open file: a second open is refused.
        match StateLock::acquire(dir.path()) {
            Err(DaemonError::AlreadyRunning { pid, path }) => {
                assert_eq!(pid, i32::try_from(std::process::id()).ok());
                assert_eq!(path, dir.path().join(LOCK_FILE));
            }
            other => panic!("{other:?}"),
        }
        drop(first);
        StateLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn a_live_socket_is_another_daemon_a_dead_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        assert!(check_socket(&path).is_ok());
        let live = std::os::unix::net::UnixListener::bind(&path).unwrap();
        match check_socket(&path) {
            Err(DaemonError::AlreadyRunning { pid, .. }) => {
                assert_eq!(pid, Some(i32::try_from(std::process::id()).unwrap()))
            }
            other => panic!("{other:?}"),
        }
        drop(live);
        assert!(check_socket(&path).is_ok(), "a stale socket");
    }

    #[tokio::test]
    async fn the_embedded_xenstored_is_refused_with_xen_unless_forced() {
        let rpc = Path::new("/run/x/xenith.sock");
        let e = resolve_xenstore(&XenstoreChoice::Embedded, rpc, HypervisorKind::Xen, false)
            .await
            .unwrap_err();
        assert!(matches!(e, DaemonError::Refused(_)), "{e:?}");
        let (kind, path) =
            resolve_xenstore(&XenstoreChoice::Embedded, rpc, HypervisorKind::Xen, true)
                .await
                .unwrap();
        assert_eq!(
            (kind, path.as_path()),
            ("embedded", Path::new("/run/x/xenstored.sock"))
        );
    }
}
