//! Where xenith's files live (CONTRACT.md "Paths"). The daemon and the shell
//! resolve them the same way, through these functions.

use std::path::{Path, PathBuf};

use nix::unistd::Uid;

/// Name of the embedded xenstored's socket, next to the RPC socket.
pub const XENSTORED_SOCKET_NAME: &str = "xenstored.sock";

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The RPC socket: `$XENITH_SOCKET`, else `/run/xenith/xenith.sock` for
/// root, else `$XDG_RUNTIME_DIR/xenith/xenith.sock`, else
/// `/tmp/xenith-$UID/xenith.sock`. (`--socket` and the config file come first.)
pub fn default_socket() -> PathBuf {
    if let Some(p) = env_path("XENITH_SOCKET") {
        return p;
    }
    let uid = Uid::effective();
    if uid.is_root() {
        return PathBuf::from("/run/xenith/xenith.sock");
    }
    if let Some(dir) = env_path("XDG_RUNTIME_DIR") {
        return dir.join("xenith").join("xenith.sock");
    }
    PathBuf::from(format!("/tmp/xenith-{uid}/xenith.sock"))
}

/// The state directory: `$XENITH_STATE_DIR`, else `/var/lib/xenith` for
/// root, else `$XDG_STATE_HOME/xenith`, else `~/.local/state/xenith`.
pub fn default_state_dir() -> PathBuf {
    if let Some(p) = env_path("XENITH_STATE_DIR") {
        return p;
    }
    if Uid::effective().is_root() {
        return PathBuf::from("/var/lib/xenith");
    }
    if let Some(dir) = env_path("XDG_STATE_HOME") {
        return dir.join("xenith");
    }
    let home = env_path("HOME").unwrap_or_else(|| PathBuf::from("/"));
    home.join(".local/state/xenith")
}

/// The embedded xenstored's socket: `xenstored.sock` beside the RPC socket.
pub fn embedded_xenstored_socket(rpc_socket: &Path) -> PathBuf {
    rpc_socket
        .parent()
        .unwrap_or(Path::new("/"))
        .join(XENSTORED_SOCKET_NAME)
}

/// The configuration file read when `--config` is not given, if it exists.
pub const SYSTEM_CONFIG: &str = "/etc/xenith/xenith.toml";
