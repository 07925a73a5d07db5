//! Messages the emulator actor answers.

use actix::Message;

use super::EmulatorStatus;

/// QEMU's run state (`query-status`).
#[derive(Debug)]
pub struct Status;

impl Message for Status {
    type Result = Result<EmulatorStatus, String>;
}

/// Stops QEMU (QMP quit); the actor then ends normally.
#[derive(Debug)]
pub struct Quit;

impl Message for Quit {
    type Result = ();
}

/// Fault injection (`fault.inject` part emulator, kind kill): SIGKILL QEMU.
#[derive(Debug)]
pub struct InjectKill;

impl Message for InjectKill {
    type Result = Result<(), String>;
}
