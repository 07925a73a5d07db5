//! Unix-socket listeners: binding (refusing a socket a live server
//! answers on, replacing a stale one), and one supervised listener actor
//! generic over what it serves. Each connection is its own task; all of
//! them are cancelled when the listener stops.

use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener as StdUnixListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use actix::{Actor, ActorContext, AsyncContext, Context, WrapFuture};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use crate::actors::supervisor::{ChildSpec, ExitSlot, StartError};

/// Why a socket could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("another server is already serving {0}")]
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

/// Binds `path`: refuses one a live server answers on, removes one left by
/// a dead server, then mode 0600 (or 0660 with `group`). Returns the
/// listener and the socket file's inode (to remove only our own later).
///
/// The socket is never reachable with looser permissions, whatever the
/// umask: it is bound in a new directory only its owner may enter (0700),
/// given its mode (and group) there, and only then renamed into place.
pub fn bind(
    path: &Path,
    group: Option<nix::unistd::Gid>,
) -> Result<(StdUnixListener, u64), ListenError> {
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
    let private = private_dir(path)?;
    let staged = private.join("socket");
    let bound = (|| {
        let listener = StdUnixListener::bind(&staged).map_err(io_err("bind", path))?;
        listener
            .set_nonblocking(true)
            .map_err(io_err("configure", path))?;
        let mode = if let Some(gid) = group {
            nix::unistd::chown(&staged, None, Some(gid))
                .map_err(|e| io_err("chown", path)(io::Error::from(e)))?;
            0o660
        } else {
            0o600
        };
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(mode))
            .map_err(io_err("chmod", path))?;
        std::fs::rename(&staged, path).map_err(io_err("rename into place", path))?;
        Ok(listener)
    })();
    let _ = std::fs::remove_file(&staged);
    let _ = std::fs::remove_dir(&private);
    let listener = bound?;
    let inode = std::fs::metadata(path)
        .map_err(io_err("inspect", path))?
        .ino();
    Ok((listener, inode))
}

/// A new directory next to `path` that only this user may enter.
fn private_dir(path: &Path) -> Result<PathBuf, ListenError> {
    use std::os::unix::fs::DirBuilderExt;
    let parent = path.parent().unwrap_or_else(|| Path::new("/"));
    let name = path
        .file_name()
        .map_or_else(|| "socket".into(), |n| n.to_string_lossy().into_owned());
    for attempt in 0..100u32 {
        let dir = parent.join(format!(".{name}.{}.{attempt}", std::process::id()));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {
                // 0700 whatever the umask took away: the umask can only
                // remove bits, and this sets them exactly.
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                    .map_err(io_err("chmod", &dir))?;
                return Ok(dir);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err("create", &dir)(e)),
        }
    }
    Err(ListenError::Io {
        what: "create a private directory next to",
        path: path.to_owned(),
        source: io::Error::from(io::ErrorKind::AlreadyExists),
    })
}

/// What a listener serves on each connection.
pub trait Service: Clone + Send + Sync + Unpin + std::fmt::Debug + 'static {
    /// Serves one connection until it ends or `cancel` fires.
    fn serve(
        &self,
        stream: UnixStream,
        cancel: CancellationToken,
    ) -> impl Future<Output = ()> + 'static;
}

/// A supervised actor that owns a Unix socket and serves its connections.
#[derive(Debug)]
pub struct SocketListener<S: Service> {
    name: &'static str,
    path: PathBuf,
    inode: u64,
    listener: Option<StdUnixListener>,
    service: S,
    cancel: CancellationToken,
    exit: ExitSlot,
}

impl<S: Service> SocketListener<S> {
    /// The child spec: the socket is bound at start, so a socket held by a
    /// live server fails the start with that reason.
    pub fn spec(
        id: &'static str,
        path: PathBuf,
        group: Option<nix::unistd::Gid>,
        service: S,
    ) -> ChildSpec {
        ChildSpec::worker(id, move |exit| {
            let (listener, inode) =
                bind(&path, group).map_err(|e| StartError::new(crate::error::chain(&e)))?;
            tracing::info!(socket = %path.display(), "{id} listening");
            Ok(SocketListener {
                name: id,
                path: path.clone(),
                inode,
                listener: Some(listener),
                service: service.clone(),
                cancel: CancellationToken::new(),
                exit,
            })
        })
    }
}

impl<S: Service> Actor for SocketListener<S> {
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
        let (service, cancel, name) = (self.service.clone(), self.cancel.clone(), self.name);
        ctx.spawn(
            async move {
                loop {
                    match listener.accept().await {
                        Ok((stream, _)) => {
                            actix::spawn(service.serve(stream, cancel.child_token()));
                        }
                        // Out of descriptors and the like: pause instead of spinning.
                        Err(e) => {
                            tracing::warn!(listener = name, error = %e, "accept failed");
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
