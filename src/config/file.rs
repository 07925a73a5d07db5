//! The configuration file's shape (DTOs) and its validation.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{
    Config, ConfigError, HypervisorChoice, IntensityConfig, LogFormat, Overrides, RpcConfig,
    SimConfig,
};

/// The whole file. Every table and key is optional; missing ones take
/// their defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigFile {
    pub daemon: DaemonSection,
    pub rpc: RpcSection,
    pub supervisor: SupervisorSection,
    pub sim: SimSection,
    pub emulator: EmulatorSection,
    pub console: ConsoleSection,
    pub tls: TlsSection,
    pub network: NetworkSection,
    pub storage: StorageSection,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    pub qemu_img: String,
    pub lvm: String,
}

impl Default for StorageSection {
    fn default() -> Self {
        Self {
            qemu_img: "qemu-img".into(),
            lvm: "lvm".into(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkSection {
    pub create_bridges: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    pub listen: String,
    pub cert: String,
    pub key: String,
    pub client_ca: String,
    pub tokens_file: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmulatorSection {
    pub qemu: String,
    pub qemu_xen: String,
}

impl Default for EmulatorSection {
    fn default() -> Self {
        Self {
            qemu: "qemu-system-x86_64".into(),
            qemu_xen: "/usr/libexec/xen-qemu-system-i386".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleSection {
    pub log_max_kib: u64,
}

impl Default for ConsoleSection {
    fn default() -> Self {
        Self { log_max_kib: 256 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonSection {
    pub socket: String,
    pub state_dir: String,
    pub hypervisor: HypervisorChoice,
    pub xenstore: String,
    pub allow_fault_injection: bool,
    pub log_format: LogFormat,
    pub log_level: String,
}

impl Default for DaemonSection {
    fn default() -> Self {
        Self {
            socket: String::new(),
            state_dir: String::new(),
            hypervisor: HypervisorChoice::Auto,
            xenstore: "auto".into(),
            allow_fault_injection: false,
            log_format: LogFormat::Text,
            log_level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RpcSection {
    pub socket_group: String,
    pub max_frame_bytes: u64,
    pub max_requests_in_flight: u64,
    pub event_backlog: u64,
}

impl Default for RpcSection {
    fn default() -> Self {
        Self {
            socket_group: String::new(),
            max_frame_bytes: 1 << 20,
            max_requests_in_flight: 128,
            event_backlog: 4096,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisorSection {
    pub max_restarts: u32,
    pub period_s: u64,
    pub domains_max_restarts: u32,
}

impl Default for SupervisorSection {
    fn default() -> Self {
        Self {
            max_restarts: 5,
            period_s: 30,
            domains_max_restarts: 1000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimSection {
    pub total_mib: u64,
    pub dom0_mib: u64,
    pub cpus: u32,
}

impl Default for SimSection {
    fn default() -> Self {
        Self {
            total_mib: 65536,
            dom0_mib: 1024,
            cpus: 16,
        }
    }
}

impl ConfigFile {
    /// Reads and parses a file; errors name the key (or the line, for syntax).
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            key: None,
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let de = toml::Deserializer::new(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let at = e.path().to_string();
            let inner = e.into_inner();
            let message = inner.message().trim().to_owned();
            // "unknown field `x`, expected ..." is reported at the parent: name the key itself.
            // The path names the key, an unknown one included; at the top
            // level ("."), an unknown table is named only in the message.
            let key = match at.as_str() {
                "." => message
                    .strip_prefix("unknown field `")
                    .and_then(|rest| rest.split('`').next())
                    .map(str::to_owned),
                path => Some(path.to_owned()),
            };
            let message = match (&key, inner.span()) {
                (None, Some(span)) => {
                    let line = text[..span.start.min(text.len())].lines().count().max(1);
                    format!("line {line}: {message}")
                }
                _ => message,
            };
            ConfigError {
                file: path.to_owned(),
                key,
                message: message.replace('\n', " "),
            }
        })
    }

    /// Checks every value and resolves the runtime configuration.
    pub fn validate(self, source: Option<&Path>, o: Overrides) -> Result<Config, ConfigError> {
        let file = source
            .map(Path::to_owned)
            .unwrap_or_else(|| PathBuf::from("(defaults)"));
        let bad = |key: &str, msg: String| ConfigError::key(&file, key, msg);
        let abs = |key: &str, value: &str| -> Result<Option<PathBuf>, ConfigError> {
            match value {
                "" => Ok(None),
                v if v.starts_with('/') => Ok(Some(PathBuf::from(v))),
                v => Err(bad(key, format!("{v:?} is not an absolute path"))),
            }
        };
        let d = self.daemon;
        let socket = match o.socket {
            Some(p) => p,
            None => abs("daemon.socket", &d.socket)?.unwrap_or_else(crate::paths::default_socket),
        };
        let state_dir = match o.state_dir {
            Some(p) => p,
            None => abs("daemon.state_dir", &d.state_dir)?
                .unwrap_or_else(crate::paths::default_state_dir),
        };
        let xenstore = match o.xenstore {
            Some(x) => x,
            None => d.xenstore.parse().map_err(|e| bad("daemon.xenstore", e))?,
        };
        tracing_subscriber::EnvFilter::try_new(&d.log_level)
            .map_err(|e| bad("daemon.log_level", format!("{:?}: {e}", d.log_level)))?;

        let r = self.rpc;
        let socket_group = match r.socket_group.as_str() {
            "" => None,
            name => match nix::unistd::Group::from_name(name) {
                Ok(Some(g)) => Some(g.gid),
                Ok(None) => {
                    return Err(bad("rpc.socket_group", format!("no group named {name:?}")))
                }
                Err(e) => {
                    return Err(bad(
                        "rpc.socket_group",
                        format!("cannot look up {name:?}: {e}"),
                    ))
                }
            },
        };
        let max_frame_bytes = in_range(
            &file,
            "rpc.max_frame_bytes",
            r.max_frame_bytes,
            4096,
            64 << 20,
        )?;
        let max_in_flight = in_range(
            &file,
            "rpc.max_requests_in_flight",
            r.max_requests_in_flight,
            1,
            65536,
        )?;

        let event_backlog = in_range(&file, "rpc.event_backlog", r.event_backlog, 16, 1 << 20)?;

        let s = self.supervisor;
        let period_s = in_range(&file, "supervisor.period_s", s.period_s, 1, 86400)?;

        let sim = self.sim;
        in_range(&file, "sim.total_mib", sim.total_mib, 256, 1 << 32)?;
        in_range(&file, "sim.cpus", u64::from(sim.cpus), 1, 4096)?;
        if sim.dom0_mib >= sim.total_mib {
            return Err(bad(
                "sim.dom0_mib",
                format!("{} is not below sim.total_mib", sim.dom0_mib),
            ));
        }

        for (key, v) in [
            ("emulator.qemu", &self.emulator.qemu),
            ("emulator.qemu_xen", &self.emulator.qemu_xen),
            ("storage.qemu_img", &self.storage.qemu_img),
            ("storage.lvm", &self.storage.lvm),
        ] {
            if v.is_empty() {
                return Err(bad(key, "is empty".into()));
            }
        }
        let t = self.tls;
        let tls = match t.listen.as_str() {
            "" => None,
            addr => {
                let listen = addr
                    .parse()
                    .map_err(|_| bad("tls.listen", format!("{addr:?} is not an address:port")))?;
                let need = |key: &str, v: &str| -> Result<PathBuf, ConfigError> {
                    abs(key, v)?.ok_or_else(|| bad(key, "is needed when tls.listen is set".into()))
                };
                let config = super::tls::TlsConfig {
                    listen,
                    cert: need("tls.cert", &t.cert)?,
                    key: need("tls.key", &t.key)?,
                    client_ca: abs("tls.client_ca", &t.client_ca)?,
                    tokens_file: abs("tls.tokens_file", &t.tokens_file)?,
                };
                config.load().map_err(|e| bad(e.key, e.message))?;
                Some(config)
            }
        };
        let log_max_kib = in_range(
            &file,
            "console.log_max_kib",
            self.console.log_max_kib,
            4,
            1 << 20,
        )?;

        Ok(Config {
            source: source.map(Path::to_owned),
            socket,
            state_dir,
            hypervisor: o.hypervisor.unwrap_or(d.hypervisor),
            xenstore,
            allow_fault_injection: o.allow_fault_injection || d.allow_fault_injection,
            force_embedded_xenstore: o.force_embedded_xenstore,
            log_format: o.log_format.unwrap_or(d.log_format),
            log_filter: d.log_level,
            rpc: RpcConfig {
                socket_group,
                max_frame_bytes,
                max_in_flight,
                event_backlog,
            },
            supervisor: IntensityConfig {
                max_restarts: s.max_restarts,
                domains_max_restarts: s.domains_max_restarts,
                period: Duration::from_secs(period_s as u64),
            },
            sim: SimConfig {
                total_mib: sim.total_mib,
                dom0_mib: sim.dom0_mib,
                cpus: sim.cpus,
            },
            qemu: PathBuf::from(self.emulator.qemu),
            qemu_xen: PathBuf::from(self.emulator.qemu_xen),
            qemu_img: PathBuf::from(self.storage.qemu_img),
            lvm: PathBuf::from(self.storage.lvm),
            console_log_max_bytes: log_max_kib as u64 * 1024,
            tls,
            create_bridges: self.network.create_bridges,
        })
    }
}

fn in_range(file: &Path, key: &str, value: u64, min: u64, max: u64) -> Result<usize, ConfigError> {
    match usize::try_from(value) {
        Ok(v) if (min..=max).contains(&value) => Ok(v),
        _ => Err(ConfigError::key(
            file,
            key,
            format!("{value} is outside {min}..={max}"),
        )),
    }
}
