//! `fault.inject`: breaking a VM's parts on purpose, to test how xenith
//! copes (the daemon must run with --allow-fault-injection).
//!
//! | part           | panic            | kill                 | crash            | hang                        |
//! |----------------|------------------|----------------------|------------------|-----------------------------|
//! | domain         | the domain actor | destroy the domain   | SHUTDOWN_crash   | the guest stops answering   |
//! | emulator       | its actor        | SIGKILL to QEMU      | -                | -                           |
//! | console, agent | its actor        | -                    | -                | -                           |
//! | vbd:DEV, vif:N | its backend      | -                    | -                | the frontend stops following|
//!
//! `hang` acts on the guest, so only a simulated guest can do it.

use serde::Deserialize;

use super::error::VmError;
use super::handle::VmHandle;
use actix::{Actor, Context, Handler};

use crate::actors::agent::AgentActor;
use crate::actors::backend::BackendActor;
use crate::actors::child::{ChildHandle, ChildId};
use crate::actors::console::ConsoleActor;
use crate::actors::emulator::{EmulatorActor, EmulatorHandle};
use crate::actors::supervisor::SupervisorHandle;
use crate::actors::InjectPanic;
use crate::drivers::{DomId, GuestFault, ShutdownReason};
use crate::xs::DeviceKind;

/// What to break.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    Panic,
    Kill,
    Crash,
    Hang,
}

impl FaultKind {
    fn name(self) -> &'static str {
        match self {
            FaultKind::Panic => "panic",
            FaultKind::Kill => "kill",
            FaultKind::Crash => "crash",
            FaultKind::Hang => "hang",
        }
    }
}

fn unsupported(part: &str, kind: FaultKind) -> VmError {
    VmError::Unsupported(format!(
        "fault {} is not supported for part {part:?}",
        kind.name()
    ))
}

impl VmHandle {
    fn not_running(&self, id: &ChildId) -> VmError {
        VmError::NotRunning {
            vm: self.name(),
            id: id.to_string(),
        }
    }

    /// The VM's running domain.
    fn domid(&self) -> Result<DomId, VmError> {
        let s = self.snapshot();
        s.domid.map(DomId).ok_or(VmError::BadPowerState {
            vm: self.uuid,
            op: "inject a fault into",
            state: s.power_state,
            expected: super::PowerState::Running,
        })
    }

    /// The VM's own supervisor (its actors' parent).
    fn sup(&self) -> Result<SupervisorHandle, VmError> {
        self.supervisor().ok_or(VmError::Unavailable)
    }

    /// `fault.inject {vm, part, kind}` on this VM.
    pub async fn inject(&self, part: &str, kind: FaultKind) -> Result<(), VmError> {
        let id = ChildId::parse(part).ok_or_else(|| unsupported(part, kind))?;
        match (&id, kind) {
            (ChildId::Domain, FaultKind::Panic) => {
                self.panic_child::<super::DomainActor>(&id).await
            }
            (ChildId::Domain, FaultKind::Crash | FaultKind::Kill | FaultKind::Hang) => {
                let domid = self.domid()?;
                let hv = &self.env().hv;
                match kind {
                    FaultKind::Crash => Ok(hv.shutdown(domid, ShutdownReason::Crash).await?),
                    FaultKind::Kill => Ok(hv.destroy(domid).await?),
                    _ => self.guest_fault(domid, GuestFault::Hang).await,
                }
            }
            (ChildId::Emulator, FaultKind::Kill) => {
                let emulator = EmulatorHandle::find(&self.sup()?)
                    .await
                    .ok_or_else(|| self.not_running(&id))?;
                emulator
                    .inject_kill()
                    .await
                    .map_err(|e| VmError::step("kill the device model", &e))
            }
            (ChildId::Emulator, FaultKind::Panic) => self.panic_child::<EmulatorActor>(&id).await,
            (ChildId::Console, FaultKind::Panic) => self.panic_child::<ConsoleActor>(&id).await,
            (ChildId::Agent, FaultKind::Panic) => self.panic_child::<AgentActor>(&id).await,
            (ChildId::Device(..), FaultKind::Panic) => self.panic_child::<BackendActor>(&id).await,
            (ChildId::Device(kind, name), FaultKind::Hang) => {
                let spec = self.spec();
                let devid = match kind {
                    DeviceKind::Vbd => spec
                        .disks
                        .iter()
                        .find(|d| d.device == *name)
                        .map(|d| d.devid),
                    DeviceKind::Vif => spec
                        .nics
                        .iter()
                        .find(|n| n.devid.to_string() == *name)
                        .map(|n| n.devid),
                }
                .ok_or_else(|| VmError::NoDevice {
                    what: "device",
                    name: part.to_owned(),
                })?;
                let domid = self.domid()?;
                let fault = GuestFault::HangFrontend { kind: *kind, devid };
                self.guest_fault(domid, fault).await
            }
            _ => Err(unsupported(part, kind)),
        }
    }

    /// Makes the VM's running actor `id` panic (its supervisor's policy
    /// then applies).
    async fn panic_child<A>(&self, id: &ChildId) -> Result<(), VmError>
    where
        A: Actor<Context = Context<A>> + Handler<InjectPanic>,
    {
        let child = ChildHandle::<A>::find(&self.sup()?, id)
            .await
            .ok_or_else(|| self.not_running(id))?;
        if child.inject_panic().await {
            Ok(())
        } else {
            Err(self.not_running(id))
        }
    }

    /// A misbehaviour of the guest itself: only a simulated one can.
    async fn guest_fault(&self, domid: DomId, fault: GuestFault) -> Result<(), VmError> {
        let faults = self.env().faults.clone().ok_or_else(|| {
            VmError::Unsupported(
                "guest fault injection is not supported by this hypervisor backend".into(),
            )
        })?;
        crate::drivers::blocking::run(move || faults.inject(domid, fault))
            .await
            .map_err(|e| VmError::step("inject the guest fault", &e))?
            .map_err(|e| VmError::step("inject the guest fault", &e))
    }
}
