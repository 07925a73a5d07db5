//! The emulator actor: an HVM domain's device model (a QEMU process) and
//! its QMP connection.
//!
//! - start: if the domain's QEMU already runs (this actor restarted, or
//!   xenithd did), connect to it again; else launch it (daemonized, with a
//!   pidfile and a QMP socket). Then the QMP handshake and `query-status`;
//!   then record it where libxl and QEMU do (`image/device-model-pid`,
//!   `/local/domain/0/device-model/N/state = running`).
//! - QEMU dies (its QMP connection ends, and nobody asked it to quit): the
//!   domain cannot run without its device model, so it is crashed
//!   (`SHUTDOWN_crash`, as xenopsd does) and the VM's on_crash follows. The
//!   actor then ends normally: transient, it is not restarted; the domain's
//!   teardown (or restart) deals with it.
//! - [`Quit`]: QMP `quit`, then wait for QEMU to go (SIGKILL past a timeout).
//! - A panic: restarted alone, it finds the same QEMU and reconnects; the
//!   domain does not notice.

mod handle;
mod handlers;
mod messages;
mod state;

use std::time::Duration;

pub use handle::{EmulatorError, EmulatorHandle};
pub use messages::{InjectKill, Quit, Status};
pub use state::EmulatorActor;

/// How long QEMU may take to answer its QMP socket.
pub const QMP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `quit` may take before QEMU is killed.
pub const QUIT_TIMEOUT: Duration = Duration::from_secs(5);

/// What `vm.get` shows of the emulator.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EmulatorStatus {
    pub pid: i32,
    /// QEMU's run state: "prelaunch" (started with -S), "running", "paused"...
    pub status: String,
}
