//! The hypervisor interface, shaped after libxenctrl: domain control, what
//! the toolstack asks of Xen. Calls may block (they are hypercalls on a real
//! host): callers go through the async adapter ([`super::hv::Hv`]), which
//! runs them on the blocking pool with a timeout. What a host brings beside
//! it (devices, the boot image cache, fault injection, xenstore wiring) has
//! its own small trait, composed by [`super::select`].

use serde::Serialize;

/// Which backend drives the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HypervisorKind {
    /// The simulated hypervisor (no Xen involved).
    Sim,
    /// Real Xen through libxenctrl.
    Xen,
}

impl HypervisorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HypervisorKind::Sim => "sim",
            HypervisorKind::Xen => "xen",
        }
    }
}

/// The host's physical facts, as `xc_physinfo` and `xc_version` report them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PhysInfo {
    pub xen_version: String,
    pub total_mib: u64,
    pub free_mib: u64,
    pub cpus: u32,
}

/// A domain's id (`domid_t`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
pub struct DomId(pub u16);

impl DomId {
    pub const DOM0: DomId = DomId(0);
    /// The first id above the ordinary domains' range (DOMID_FIRST_RESERVED).
    pub const FIRST_RESERVED: u16 = 0x7ff0;
}

impl std::fmt::Display for DomId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// How a guest is virtualised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DomainType {
    Pv,
    Pvh,
    Hvm,
}

/// The firmware hvmloader hands an HVM guest to (libxl's `bios`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    /// SeaBIOS (`hvmloader/bios = "seabios"`).
    #[default]
    Bios,
    /// OVMF, UEFI (`hvmloader/bios = "ovmf"`).
    Uefi,
}

impl Firmware {
    /// Its name for hvmloader (the `hvmloader/bios` key).
    pub fn hvmloader_name(self) -> &'static str {
        match self {
            Firmware::Bios => "seabios",
            Firmware::Uefi => "ovmf",
        }
    }
}

/// Why a domain shut down, with Xen's codes (SHUTDOWN_* in sched.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShutdownReason {
    Poweroff = 0,
    Reboot = 1,
    Suspend = 2,
    Crash = 3,
    Watchdog = 4,
    SoftReset = 5,
}

impl std::fmt::Display for ShutdownReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Poweroff => "poweroff",
            Self::Reboot => "reboot",
            Self::Suspend => "suspend",
            Self::Crash => "crash",
            Self::Watchdog => "watchdog",
            Self::SoftReset => "soft_reset",
        })
    }
}

impl ShutdownReason {
    pub fn code(self) -> u32 {
        self as u32
    }

    pub fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            0 => Self::Poweroff,
            1 => Self::Reboot,
            2 => Self::Suspend,
            3 => Self::Crash,
            4 => Self::Watchdog,
            5 => Self::SoftReset,
            _ => return None,
        })
    }

    /// The word a toolstack writes to control/shutdown to ask for it.
    pub fn control_word(self) -> Option<&'static str> {
        match self {
            Self::Poweroff => Some("poweroff"),
            Self::Reboot => Some("reboot"),
            Self::Suspend => Some("suspend"),
            _ => None,
        }
    }

    pub fn from_control_word(word: &str) -> Option<Self> {
        match word {
            "poweroff" | "halt" => Some(Self::Poweroff),
            "reboot" => Some(Self::Reboot),
            "suspend" => Some(Self::Suspend),
            _ => None,
        }
    }
}

/// What `create_domain` needs (xc_domain_create, max vcpus, max memory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainConfig {
    pub uuid: [u8; 16],
    pub domain_type: DomainType,
    pub memory_mib: u64,
    pub vcpus: u32,
}

/// What the domain builder loads (libxenguest's xc_dom_* sequence).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootImage {
    pub kernel: std::path::PathBuf,
    pub ramdisk: Option<std::path::PathBuf>,
    pub cmdline: String,
    /// An HVM guest's firmware (the others have none).
    pub firmware: Firmware,
}

/// What building a domain sets up for xenstore and the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Built {
    pub store_port: u32,
    pub store_gfn: u64,
    pub console_port: u32,
    pub console_gfn: u64,
}

/// A domain as the hypervisor reports it (xc_domain_getinfo).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DomainInfo {
    pub domid: DomId,
    #[serde(skip)]
    pub uuid: [u8; 16],
    pub domain_type: DomainType,
    pub paused: bool,
    pub dying: bool,
    /// Set once the domain has shut down, with the reason.
    pub shutdown: Option<ShutdownReason>,
    pub memory_kib: u64,
    pub max_memory_kib: u64,
    pub vcpus: u32,
    pub cpu_time_ns: u64,
}

/// A change in a domain's life, as VIRQ_DOM_EXC and @releaseDomain tell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainEvent {
    /// The domain shut down (it still exists until destroyed).
    Shutdown(ShutdownReason),
    /// The domain is gone.
    Destroyed,
}

/// A hypervisor call failed.
#[derive(Debug, thiserror::Error)]
pub enum HypervisorError {
    /// The backend cannot be used on this host.
    #[error("the {0} hypervisor backend is unavailable: {1}")]
    Unavailable(&'static str, String),
    #[error("no domain {0}")]
    NoSuchDomain(DomId),
    #[error("not enough free memory: {needed_mib} MiB needed, {free_mib} MiB free")]
    NotEnoughMemory { needed_mib: u64, free_mib: u64 },
    #[error("invalid domain configuration: {0}")]
    InvalidConfig(String),
    #[error("no free domain id")]
    NoFreeDomid,
    /// The backend does not offer this.
    #[error("{0} is not supported by this hypervisor backend")]
    Unsupported(&'static str),
    /// A call failed with an errno, as libxenctrl reports it.
    #[error("{call} failed")]
    Call {
        call: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// What the toolstack needs from the hypervisor.
pub trait Hypervisor: Send + Sync + std::fmt::Debug {
    fn kind(&self) -> HypervisorKind;

    /// Host memory, CPUs and the hypervisor's version (`xl info`).
    fn physinfo(&self) -> Result<PhysInfo, HypervisorError>;

    /// A count that moves whenever this driver has changed the host's free
    /// memory (a domain created, built or destroyed, a memory target set),
    /// after the change. A caller that keeps a `physinfo` reads it before
    /// the `physinfo` and reads again once it has moved. Changes made by
    /// anyone else (another toolstack, a guest's balloon) are not counted.
    fn memory_changes(&self) -> u64;

    /// Creates an empty, paused domain with its memory and vcpus reserved.
    /// A domain that does not fit fails with `NotEnoughMemory` and leaves
    /// nothing behind.
    fn create_domain(&self, config: &DomainConfig) -> Result<DomId, HypervisorError>;

    /// Loads the kernel (and ramdisk, command line) and allocates the
    /// xenstore and console event channels and pages.
    fn build_domain(&self, domid: DomId, image: &BootImage) -> Result<Built, HypervisorError>;

    fn unpause(&self, domid: DomId) -> Result<(), HypervisorError>;

    fn pause(&self, domid: DomId) -> Result<(), HypervisorError>;

    /// Shuts the domain down with `reason` at once (xc_domain_shutdown): the
    /// hard way; a clean shutdown asks the guest through control/shutdown.
    fn shutdown(&self, domid: DomId, reason: ShutdownReason) -> Result<(), HypervisorError>;

    /// Destroys the domain and frees its memory.
    fn destroy(&self, domid: DomId) -> Result<(), HypervisorError>;

    /// Whether a guest reads `control/shutdown`: a PV or PVH guest always
    /// does; an HVM guest once its PV drivers are up (it has set its
    /// event channel callback). Hosts whose guests always listen say so.
    fn listens_for_shutdown(&self, _domid: DomId) -> Result<bool, HypervisorError> {
        Ok(true)
    }

    /// Presses an HVM guest's ACPI power button (a clean shutdown of a
    /// guest without PV drivers).
    fn power_button(&self, _domid: DomId) -> Result<(), HypervisorError> {
        Err(HypervisorError::Unsupported("the ACPI power button"))
    }

    fn domain_info(&self, domid: DomId) -> Result<DomainInfo, HypervisorError>;

    /// Every domain, dom0 included.
    fn list_domains(&self) -> Result<Vec<DomainInfo>, HypervisorError>;

    /// The hypervisor's side of a balloon target: the domain may hold no
    /// more than `mib` (plus slack). The guest's side is xenstore's
    /// `memory/target`, which the toolstack writes and the guest's balloon
    /// driver follows.
    fn set_memory_target(&self, domid: DomId, mib: u64) -> Result<(), HypervisorError>;

    /// This domain's shutdown and destruction, as they happen.
    fn subscribe(
        &self,
        domid: DomId,
    ) -> Result<tokio::sync::mpsc::UnboundedReceiver<DomainEvent>, HypervisorError>;

    /// The domain's console output (console 0, what xenconsoled reads from
    /// the console ring): first what the guest wrote that nobody read yet,
    /// then what it writes. One reader at a time: a second open replaces
    /// the first, whose stream ends. The stream ends when the domain dies.
    /// `name` is the VM's name (xenconsoled names its logs by it).
    fn open_console(
        &self,
        domid: DomId,
        name: &str,
    ) -> Result<tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>, HypervisorError>;
}
