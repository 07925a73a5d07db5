//! xenithd's configuration: a TOML file read into DTOs that refuse unknown
//! keys, then validated into the runtime [`Config`]. Flags override the file;
//! the file overrides the built-in defaults. config/xenith.toml shows every
//! key at its default.

mod file;
pub mod tls;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use file::ConfigFile;

/// A configuration error: names the file and the key, on one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {}{message}", file.display(), key.as_ref().map(|k| format!("key {k}: ")).unwrap_or_default())]
pub struct ConfigError {
    pub file: PathBuf,
    pub key: Option<String>,
    pub message: String,
}

impl ConfigError {
    pub(crate) fn key(file: &Path, key: &str, message: impl Into<String>) -> Self {
        Self {
            file: file.to_owned(),
            key: Some(key.to_owned()),
            message: message.into(),
        }
    }
}

/// Which hypervisor backend to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum HypervisorChoice {
    /// Xen when /dev/xen/privcmd exists; refused on a Xen dom0 without it;
    /// the simulated hypervisor elsewhere.
    Auto,
    /// The simulated hypervisor.
    Sim,
    /// Real Xen.
    Xen,
}

/// Which xenstored to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XenstoreChoice {
    /// The host's xenstored when its socket exists, the embedded one otherwise.
    Auto,
    Embedded,
    /// The socket of an existing xenstored.
    Socket(PathBuf),
}

impl std::str::FromStr for XenstoreChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "embedded" => Ok(Self::Embedded),
            p if p.starts_with('/') => Ok(Self::Socket(PathBuf::from(p))),
            other => Err(format!(
                "{other:?} is not auto, embedded or an absolute socket path"
            )),
        }
    }
}

/// How logs are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The RPC server's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcConfig {
    /// Owner-only (0600) unless a group is named, then 0660 with that group.
    pub socket_group: Option<nix::unistd::Gid>,
    pub max_frame_bytes: usize,
    pub max_in_flight: usize,
    /// How many events a subscriber may fall behind before it loses some.
    pub event_backlog: usize,
}

/// The root supervisor's restart intensity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntensityConfig {
    pub max_restarts: u32,
    pub period: Duration,
    /// The domains supervisor's: VM supervisors it restarts per minute
    /// before it gives up (and the `vms` supervisor starts it, and the
    /// inventory that takes every VM back, again).
    pub domains_max_restarts: u32,
}

/// The simulated host's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimConfig {
    pub total_mib: u64,
    pub dom0_mib: u64,
    pub cpus: u32,
}

/// The validated configuration xenithd runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The file it came from, if any.
    pub source: Option<PathBuf>,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub hypervisor: HypervisorChoice,
    pub xenstore: XenstoreChoice,
    pub allow_fault_injection: bool,
    pub log_format: LogFormat,
    pub log_filter: String,
    pub rpc: RpcConfig,
    pub supervisor: IntensityConfig,
    pub sim: SimConfig,
    /// The QEMU binary device models run on the simulated host (a path,
    /// or a name in $PATH).
    pub qemu: PathBuf,
    /// The QEMU built for Xen (Debian's qemu-system-xen) that serves
    /// qcow2 disks (qdisk) and HVM guests on a Xen host.
    pub qemu_xen: PathBuf,
    /// The storage tools (`[storage]`): a path, or a name in $PATH.
    pub qemu_img: PathBuf,
    pub lvm: PathBuf,
    /// A VM's console log is rotated past this size.
    pub console_log_max_bytes: u64,
    /// The TLS listener, if configured.
    pub tls: Option<tls::TlsConfig>,
    /// Whether a NIC's missing bridge is created (`[network]`), or its
    /// plug fails.
    pub create_bridges: bool,
    /// `--force-embedded-xenstore`: run the embedded xenstored even on a
    /// Xen host (refused otherwise: the host's xenstored is the real one).
    pub force_embedded_xenstore: bool,
}

/// What the command line can override (CONTRACT.md flags).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    pub socket: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub hypervisor: Option<HypervisorChoice>,
    pub xenstore: Option<XenstoreChoice>,
    pub allow_fault_injection: bool,
    pub log_format: Option<LogFormat>,
    pub force_embedded_xenstore: bool,
}

impl Config {
    /// Reads `path` (or, without one, /etc/xenith/xenith.toml if it exists,
    /// else nothing) and applies the overrides.
    pub fn load(path: Option<&Path>, overrides: Overrides) -> Result<Self, ConfigError> {
        let system = Path::new(crate::paths::SYSTEM_CONFIG);
        let path = path.or_else(|| system.exists().then_some(system));
        let file = match path {
            Some(p) => ConfigFile::read(p)?,
            None => ConfigFile::default(),
        };
        file.validate(path, overrides)
    }

    /// The built-in defaults with these overrides (no file).
    pub fn defaults(overrides: Overrides) -> Result<Self, ConfigError> {
        ConfigFile::default().validate(None, overrides)
    }
}
