//! The domain actor: owns one VM's lifecycle state machine (Halted,
//! Running, Paused, Suspended, Crashed) and runs its operations one at a
//! time, each through one gate, one busy marker and one reply (the mailbox
//! waits while one runs): power operations, device changes, the removal.
//! It follows the domain's shutdown and death notifications and applies
//! the VM's on_poweroff, on_reboot and on_crash actions. Its state is
//! published in a snapshot (`vm.get` and `vm.list` read it without
//! queueing behind an operation).
//!
//! A domain actor that restarts re-syncs from the hypervisor (the domain
//! with its uuid) without disturbing the domain or its devices.
//!
//! - state.rs: the actor, its start and the one operation path;
//! - messages.rs: the operations; handlers.rs: the gate and the domain's
//!   own events; ops.rs: each operation's work; lifecycle.rs: the start,
//!   teardown, plug and unplug steps; devices.rs: device changes planned;
//!   vdis.rs: the VDIs a running VM's disks are, activated in their SRs;
//!   save.rs: suspend and resume through the VM's suspend image;
//! - env.rs: what the steps use; error.rs: [`VmError`]; handle.rs: the
//!   typed [`VmHandle`]; faults.rs: `fault.inject` on a VM.

mod devices;
mod env;
mod error;
mod faults;
mod handle;
mod handlers;
pub mod lifecycle;
mod messages;
mod ops;
mod save;
mod state;
mod stop;
mod vdis;

use std::time::Duration;

pub use devices::DeviceChange;
pub use env::{Ctx, VmEnv, VmParts};
pub use error::VmError;
pub use faults::FaultKind;
pub use handle::{VmDetails, VmHandle, VM_FLAGS};
pub use messages::{OpReply, Operation, Run, VmOp};
pub use save::SUSPEND_TIMEOUT;
pub use state::{DomainActor, PowerState, VmSnapshot};

/// How long a clean shutdown or reboot waits for the guest by default.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(60);
