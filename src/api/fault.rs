//! `fault.inject`: test how xenith copes (only with --allow-fault-injection).
//!
//! | part           | panic            | kill                 | crash            | hang                        |
//! |----------------|------------------|----------------------|------------------|-----------------------------|
//! | domain         | the domain actor | destroy the domain   | SHUTDOWN_crash   | the guest stops answering   |
//! | emulator       | its actor        | SIGKILL to QEMU      | -                | -                           |
//! | console, agent | its actor        | -                    | -                | -                           |
//! | vbd:DEV, vif:N | its backend      | -                    | -                | the frontend stops following|
//!
//! `hang` acts on the guest, so only a simulated guest can do it.

use actix::{Actor, Addr, Context, Handler};
use serde::Deserialize;

use super::{Api, ApiError, ErrorCode};
use crate::actors::agent::{AgentActor, AGENT_ID};
use crate::actors::backend::BackendActor;
use crate::actors::console::{ConsoleActor, CONSOLE_ID};
use crate::actors::domain::VmHandle;
use crate::actors::emulator::{EmulatorActor, InjectKill, EMULATOR_ID};
use crate::actors::InjectPanic;
use crate::drivers::{DomId, GuestFault, HypervisorError, ShutdownReason};

/// What to break.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    Panic,
    Kill,
    Crash,
    Hang,
}

fn unsupported(part: &str, kind: FaultKind) -> ApiError {
    ApiError::new(
        ErrorCode::InvalidParams,
        format!("fault {kind:?} is not supported for part {part:?}"),
    )
    .with_details(vec![part.to_owned()])
}

/// The running actor `id` of a VM (NOT_FOUND when it has none).
async fn child<A>(handle: &VmHandle, vm: &str, id: &str) -> Result<Addr<A>, ApiError>
where
    A: Actor<Context = Context<A>>,
{
    let sup = handle.supervisor().ok_or_else(|| halted(vm))?;
    sup.child::<A>(id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::NotFound,
                format!("VM {vm} has no running {id} (it runs only while the domain does)"),
            )
            .with_details(vec![id.to_owned()])
        })
}

/// Makes the actor's handler panic: the send fails, which is the point.
async fn panic_in<A>(handle: &VmHandle, vm: &str, id: &str) -> Result<(), ApiError>
where
    A: Actor<Context = Context<A>> + Handler<InjectPanic>,
{
    let addr = child::<A>(handle, vm, id).await?;
    let _ = addr.send(InjectPanic).await;
    Ok(())
}

impl Api {
    /// `fault.inject {vm, part, kind}`.
    pub async fn fault_inject(
        &self,
        vm: &str,
        part: &str,
        kind: FaultKind,
    ) -> Result<(), ApiError> {
        if !self.inner.settings.allow_faults {
            return Err(ApiError::new(
                ErrorCode::NotAllowed,
                "fault injection is off (start xenithd with --allow-fault-injection)",
            ));
        }
        let handle = self.resolve(vm).await?;
        let domid = handle.snapshot().domid.map(DomId);
        let device = part
            .split_once(':')
            .filter(|(k, _)| matches!(*k, "vbd" | "vif"));
        match (part, kind) {
            ("domain", FaultKind::Panic) => {
                let addr = handle.domain_addr().ok_or_else(|| {
                    ApiError::new(ErrorCode::InternalError, "the domain actor is not running")
                })?;
                let _ = addr.send(InjectPanic).await;
                Ok(())
            }
            ("domain", FaultKind::Crash | FaultKind::Kill | FaultKind::Hang) => {
                let domid = domid.ok_or_else(|| halted(vm))?;
                self.hypervisor_fault(move |h| match kind {
                    FaultKind::Crash => h.shutdown(domid, ShutdownReason::Crash),
                    FaultKind::Hang => h.inject_guest_fault(domid, GuestFault::Hang),
                    _ => h.destroy(domid),
                })
                .await
            }
            ("emulator", FaultKind::Panic) => {
                panic_in::<EmulatorActor>(&handle, vm, EMULATOR_ID).await
            }
            ("emulator", FaultKind::Kill) => child::<EmulatorActor>(&handle, vm, EMULATOR_ID)
                .await?
                .send(InjectKill)
                .await
                .map_err(ApiError::internal)?
                .map_err(|e| ApiError::new(ErrorCode::InternalError, e)),
            ("console", FaultKind::Panic) => {
                panic_in::<ConsoleActor>(&handle, vm, CONSOLE_ID).await
            }
            ("agent", FaultKind::Panic) => panic_in::<AgentActor>(&handle, vm, AGENT_ID).await,
            (p, FaultKind::Panic) if device.is_some() => {
                panic_in::<BackendActor>(&handle, vm, p).await
            }
            (p, FaultKind::Hang) => {
                let Some((kind, name)) = device else {
                    return Err(unsupported(p, FaultKind::Hang));
                };
                let spec = handle.spec();
                let devid = match kind {
                    "vbd" => spec
                        .disks
                        .iter()
                        .find(|d| d.device == name)
                        .map(|d| d.devid),
                    _ => spec
                        .nics
                        .iter()
                        .find(|n| n.devid.to_string() == name)
                        .map(|n| n.devid),
                }
                .ok_or_else(|| {
                    ApiError::new(ErrorCode::NotFound, format!("VM {vm} has no device {p}"))
                        .with_details(vec![p.to_owned()])
                })?;
                let kind = if kind == "vbd" { "vbd" } else { "vif" };
                let domid = domid.ok_or_else(|| halted(vm))?;
                self.hypervisor_fault(move |h| {
                    h.inject_guest_fault(domid, GuestFault::HangFrontend { kind, devid })
                })
                .await
            }
            _ => Err(unsupported(part, kind)),
        }
    }

    async fn hypervisor_fault(
        &self,
        call: impl FnOnce(&dyn crate::drivers::Hypervisor) -> Result<(), HypervisorError>
            + Send
            + 'static,
    ) -> Result<(), ApiError> {
        let driver = self.inner.driver.clone();
        match tokio::task::spawn_blocking(move || call(driver.as_ref())).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e @ HypervisorError::Unsupported(_))) => {
                Err(ApiError::new(ErrorCode::InvalidParams, e.to_string()))
            }
            Ok(Err(e)) => Err(ApiError::internal(e)),
            Err(e) => Err(ApiError::internal(e)),
        }
    }
}

fn halted(vm: &str) -> ApiError {
    ApiError::new(
        ErrorCode::VmBadPowerState,
        format!("VM {vm} has no running domain"),
    )
    .with_details(vec![vm.to_owned(), "Running".into(), "Halted".into()])
}
