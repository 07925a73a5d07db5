//! The work of each operation, run without access to the actor: what the
//! domain actor's one operation path waits for, and whose outcome it
//! applies.

use std::sync::Arc;
use std::time::Duration;

use super::devices::{plan, Plan};
use super::env::Ctx;
use super::error::VmError;
use super::lifecycle::{self, Running};
use super::messages::{Operation, VmOp};
use super::state::{Outcome, PowerState};
use super::SHUTDOWN_TIMEOUT;
use crate::drivers::{DomId, DomainType, ShutdownReason};
use crate::vm::layout;
use crate::xs::DeviceKind;

/// The work of `op` on a VM in this state.
pub(super) async fn work(
    c: Ctx,
    running: Option<Running>,
    state: PowerState,
    op: Operation,
) -> Outcome {
    match op {
        // A Suspended VM has no domain: a hard stop throws its image away.
        Operation::Power(
            VmOp::Kill | VmOp::Shutdown { force: true, .. } | VmOp::Reboot { force: true },
        ) if state == PowerState::Suspended && running.is_none() => {
            if let Err(e) = super::save::discard(&c).await {
                return Outcome::Failed(e);
            }
            match op {
                Operation::Power(VmOp::Reboot { .. }) => start(&c, false).await,
                _ => Outcome::Halted,
            }
        }
        Operation::Power(op) => power(c, running, op).await,
        Operation::Suspend { timeout, job } => match running {
            Some(r) => super::save::suspend(&c, &r, timeout, job).await,
            None => Outcome::Halted,
        },
        Operation::Resume { paused } => super::save::resume(&c, running, paused).await,
        Operation::Device(change) => match plan(&c.spec, &c.uuid, change) {
            Ok(plan) => match reconfigure(&c, running.as_ref(), state, plan).await {
                Ok(outcome) => outcome,
                Err(e) => Outcome::Failed(e),
            },
            Err(e) => Outcome::Failed(e),
        },
        // The gate did it all (the actor's flag).
        Operation::Retire | Operation::Unretire => Outcome::Done,
    }
}

async fn power(c: Ctx, running: Option<Running>, op: VmOp) -> Outcome {
    if let VmOp::Start { paused } = op {
        return start(&c, paused).await;
    }
    let Some(r) = running else {
        return Outcome::Halted;
    };
    match op {
        VmOp::Start { .. } => Outcome::Done,
        VmOp::Shutdown {
            force: true,
            timeout: _,
            fallback: _,
        } => match hard_stop(&c, &r, ShutdownReason::Poweroff).await {
            Ok(()) => {
                lifecycle::teardown(&c, &r).await;
                Outcome::Halted
            }
            Err(e) => Outcome::Failed(e),
        },
        VmOp::Shutdown {
            force: false,
            timeout,
            fallback,
        } => ask_guest(&c, &r, ShutdownReason::Poweroff, timeout, fallback).await,
        VmOp::Reboot { force: true } => match hard_stop(&c, &r, ShutdownReason::Reboot).await {
            Ok(()) => {
                lifecycle::teardown(&c, &r).await;
                start(&c, false).await
            }
            Err(e) => Outcome::Failed(e),
        },
        VmOp::Reboot { force: false } => {
            ask_guest(&c, &r, ShutdownReason::Reboot, SHUTDOWN_TIMEOUT, false).await
        }
        VmOp::Pause => match c.env.hv.pause(r.domid).await {
            Ok(()) => Outcome::State(PowerState::Paused),
            Err(e) => Outcome::Failed(e.into()),
        },
        VmOp::Unpause => match c.env.hv.unpause(r.domid).await {
            Ok(()) => Outcome::State(PowerState::Running),
            Err(e) => Outcome::Failed(e.into()),
        },
        VmOp::Kill => {
            lifecycle::teardown(&c, &r).await;
            Outcome::Halted
        }
        VmOp::SetMemoryTarget { mib } => match set_memory_target(&c, r.domid, mib).await {
            Ok(()) => Outcome::Done,
            Err(e) => Outcome::Failed(e),
        },
    }
}

/// Starts the VM and follows its domain.
pub(super) async fn start(c: &Ctx, paused: bool) -> Outcome {
    match lifecycle::start(c, paused).await {
        Ok(running) => match c.env.hv.subscribe(running.domid).await {
            Ok(events) => Outcome::Started {
                running,
                events,
                paused,
            },
            Err(e) => {
                lifecycle::teardown(c, &running).await;
                Outcome::FailedHalted(e.into())
            }
        },
        Err(e) => Outcome::FailedHalted(e),
    }
}

/// Sets a running domain's balloon target: the hypervisor's side (on Xen,
/// the domain's maximum, as `xl mem-set` does), then `memory/target` (KiB),
/// which the guest's balloon driver follows.
async fn set_memory_target(c: &Ctx, domid: DomId, mib: u64) -> Result<(), VmError> {
    // No lower than a VM's least memory, no higher than this VM's.
    let (min, max) = (crate::vm::MIN_MEMORY_MIB, c.spec.memory_mib);
    if !(min..=max).contains(&mib) {
        return Err(VmError::InvalidParam {
            field: "mib".into(),
            message: format!("mib: {mib} is outside {min}..={max} (the VM's memory)"),
        });
    }
    c.env.hv.set_memory_target(domid, mib).await?;
    let kib = mib.saturating_mul(1024);
    c.env
        .xs
        .write(&layout::memory_target(domid), &kib.to_string())
        .await
        .map_err(|e| VmError::step("write memory/target", &e))
}

/// Shuts the domain down at once; one that is gone already (destroyed
/// behind xenith's back a moment ago) is as good as shut down.
async fn hard_stop(c: &Ctx, r: &Running, reason: ShutdownReason) -> Result<(), VmError> {
    match c.env.hv.shutdown(r.domid, reason).await {
        Err(e)
            if matches!(
                e.hypervisor(),
                Some(crate::drivers::HypervisorError::NoSuchDomain(_))
            ) =>
        {
            Ok(())
        }
        r => Ok(r?),
    }
}

/// Asks the guest to shut down (or reboot) through control/shutdown; the
/// domain actor then waits for the domain to do so (stop.rs).
async fn ask_guest(
    c: &Ctx,
    r: &Running,
    reason: ShutdownReason,
    timeout: Duration,
    fallback: bool,
) -> Outcome {
    let word = reason.control_word().unwrap_or("poweroff");
    // An HVM guest without PV drivers reads no control/shutdown: a
    // poweroff is its ACPI power button (libxl's fallback).
    if reason == ShutdownReason::Poweroff && c.spec.domain_type == DomainType::Hvm {
        match c.env.hv.listens_for_shutdown(r.domid).await {
            Ok(false) => {
                return match c.env.hv.power_button(r.domid).await {
                    Ok(()) => {
                        tracing::info!(vm = %c.spec.name, domid = %r.domid, "no PV drivers: ACPI power button pressed");
                        Outcome::StopRequested {
                            reason,
                            timeout,
                            fallback,
                        }
                    }
                    Err(e) => Outcome::Failed(VmError::step("press the ACPI power button", &e)),
                }
            }
            Ok(true) => {}
            Err(e) => {
                tracing::debug!(vm = %c.spec.name, error = %crate::error::chain(&e), "cannot tell whether the guest has PV drivers")
            }
        }
    }
    match c
        .env
        .xs
        .write(&layout::control_shutdown(r.domid), word)
        .await
    {
        Ok(()) => Outcome::StopRequested {
            reason,
            timeout,
            fallback,
        },
        Err(e) => Outcome::Failed(VmError::step("ask the guest to shut down", &e)),
    }
}

/// Carries out a device change: on a running domain the device's backend
/// is plugged or unplugged; then the VM's record is saved with the new spec.
async fn reconfigure(
    c: &Ctx,
    running: Option<&Running>,
    state: PowerState,
    plan: Plan,
) -> Result<Outcome, VmError> {
    let id = crate::actors::child::ChildId::Device(plan.kind, plan.name.clone());
    if let Some(r) = running {
        // The disk concerned, if it is a VDI's (activated while plugged).
        let vdi_disk = |spec: &crate::vm::VmSpec| -> Vec<crate::vm::Disk> {
            spec.disks
                .iter()
                .filter(|d| plan.kind == DeviceKind::Vbd && d.device == plan.name)
                .cloned()
                .collect()
        };
        if plan.plug {
            // A running guest connects the device before the plug answers;
            // a paused one does when it runs again.
            let connect = state == PowerState::Running;
            let disk = vdi_disk(&plan.spec);
            super::vdis::activate(c, &disk).await?;
            let plugged =
                lifecycle::plug_device(c, r.domid, &plan.spec, plan.kind, &plan.name, connect)
                    .await;
            if let Err(e) = plugged {
                super::vdis::deactivate(c, &disk).await;
                return Err(e);
            }
        } else if let Some(device) =
            lifecycle::device_spec(r.domid, &c.spec, c.env.hv.kind(), plan.kind, &plan.name)
        {
            lifecycle::unplug_device(c, r.domid, &device, true).await?;
            super::vdis::deactivate(c, &vdi_disk(&c.spec)).await;
        }
    }
    let record = crate::vm::VmRecord {
        uuid: c.uuid,
        spec: plan.spec.clone(),
    };
    c.env
        .records
        .persist(record)
        .await
        .map_err(|e| VmError::step("save the VM record", &e))?;
    Ok(Outcome::Reconfigured {
        spec: Arc::new(plan.spec),
        id,
        plugged: plan.plug,
        name: plan.name,
    })
}
