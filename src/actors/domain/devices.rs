//! Device hotplug (`vbd.plug`, `vbd.unplug`, `vif.plug`, `vif.unplug`),
//! run by the domain actor like its other operations: one at a time, with
//! the mailbox waiting. On a running VM the device's backend actor is
//! started (plug) or asked to close and removed (unplug); in every state
//! the VM's spec and record change, so the device stays (or stays gone)
//! across restarts of the VM and of xenithd.

use actix::{ActorFutureExt, AsyncContext, Context, Handler, Message, ResponseFuture, WrapFuture};
use tokio::sync::oneshot;

use super::lifecycle::{child_error, device_spec, step_error, timed};
use super::{DomainActor, PowerState};
use crate::actors::backend::{release_orphan, BackendActor, Unplug, XenbusState};
use crate::actors::events::EventKind;
use crate::api::{ApiError, ErrorCode};
use crate::vm::{DiskFile, NicFile, VmRecord, VmSpec};

/// A change to a VM's devices.
#[derive(Debug, Clone)]
pub enum DeviceChange {
    PlugDisk(DiskFile),
    UnplugDisk(String),
    PlugNic(NicFile),
    /// The NIC's device id, as text ("0", "1"...).
    UnplugNic(String),
}

/// Applies a [`DeviceChange`]; answers the device's name.
#[derive(Debug)]
pub struct Reconfigure(pub DeviceChange);

impl Message for Reconfigure {
    type Result = Result<String, ApiError>;
}

/// What a change comes to, before it is carried out.
struct Plan {
    spec: VmSpec,
    /// "vbd" or "vif", and the device's name ("xvdb", "1").
    kind: &'static str,
    name: String,
    plug: bool,
}

fn not_found(kind: &str, name: &str) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        format!("the VM has no {kind} {name:?}"),
    )
    .with_details(vec![name.to_owned()])
}

fn plan(current: &VmSpec, uuid: &uuid::Uuid, change: DeviceChange) -> Result<Plan, ApiError> {
    let invalid = |e: crate::vm::VmSpecError| {
        ApiError::new(ErrorCode::InvalidParams, e.to_string()).with_details(vec![e.field])
    };
    Ok(match change {
        DeviceChange::PlugDisk(d) => {
            let (spec, disk) = current.with_disk(d).map_err(invalid)?;
            Plan {
                spec,
                kind: "vbd",
                name: disk.device,
                plug: true,
            }
        }
        DeviceChange::PlugNic(n) => {
            let (spec, nic) = current.with_nic(uuid, n).map_err(invalid)?;
            Plan {
                spec,
                kind: "vif",
                name: nic.devid.to_string(),
                plug: true,
            }
        }
        DeviceChange::UnplugDisk(device) => {
            let spec = current
                .without_disk(&device)
                .ok_or_else(|| not_found("disk", &device))?;
            Plan {
                spec,
                kind: "vbd",
                name: device,
                plug: false,
            }
        }
        DeviceChange::UnplugNic(device) => {
            let spec = device
                .parse::<u32>()
                .ok()
                .and_then(|devid| current.without_nic(devid))
                .ok_or_else(|| not_found("nic", &device))?;
            Plan {
                spec,
                kind: "vif",
                name: device,
                plug: false,
            }
        }
    })
}

impl Handler<Reconfigure> for DomainActor {
    type Result = ResponseFuture<Result<String, ApiError>>;

    fn handle(
        &mut self,
        Reconfigure(change): Reconfigure,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        use PowerState::*;
        if !matches!(self.state, Halted | Running | Paused) {
            let e = ApiError::new(
                ErrorCode::VmBadPowerState,
                format!(
                    "cannot change the devices of a VM that is {}",
                    self.state.name()
                ),
            )
            .with_details(vec![
                self.c.uuid.to_string(),
                "Running".into(),
                self.state.name().into(),
            ]);
            return Box::pin(std::future::ready(Err(e)));
        }
        let plan = match plan(&self.c.spec, &self.c.uuid, change) {
            Ok(p) => p,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        let (tx, rx) = oneshot::channel();
        let c = self.c.clone();
        let domid = self.running.as_ref().map(|r| r.domid);
        let child_id = format!("{}:{}", plan.kind, plan.name);
        self.publish(Some(if plan.plug { "plug" } else { "unplug" }));
        let work = async move {
            if let Some(domid) = domid {
                if plan.plug {
                    let spec = c
                        .device_child(domid, &plan.spec, plan.kind, &plan.name)
                        .ok_or_else(|| {
                            ApiError::new(ErrorCode::InternalError, "the new device has no backend")
                        })?;
                    timed("plug a device", async {
                        c.vm_sup
                            .start_child(spec)
                            .await
                            .map_err(|e| child_error(&format!("plug {child_id}"), e))
                    })
                    .await?;
                    c.tell_device(domid, &child_id, EventKind::Add, XenbusState::InitWait);
                } else {
                    if let Ok(Some(addr)) = c.vm_sup.child::<BackendActor>(child_id.clone()).await {
                        timed("unplug a device", async {
                            addr.send(Unplug)
                                .await
                                .map_err(|e| step_error("unplug", e))?
                                .map_err(|e| step_error("unplug", e))
                        })
                        .await?;
                    } else if let Some(device) = device_spec(domid, &c.spec, plan.kind, &plan.name)
                    {
                        // Its actor is gone (crashed for good): release it here.
                        timed("unplug a device", async {
                            release_orphan(&c.xs, &c.driver.devices(), &device)
                                .await
                                .map_err(|e| step_error("unplug", crate::error::chain(&e)))
                        })
                        .await?;
                    }
                    let _ = c.vm_sup.remove_child(child_id.clone()).await;
                    c.tell_device(domid, &child_id, EventKind::Del, XenbusState::Closed);
                }
            }
            let record = VmRecord {
                uuid: c.uuid,
                spec: plan.spec.clone(),
            };
            let records = c.records.clone();
            tokio::task::spawn_blocking(move || records.save(&record))
                .await
                .map_err(ApiError::internal)?
                .map_err(|e| step_error("save the VM record", crate::error::chain(&e)))?;
            Ok::<_, ApiError>((plan, child_id))
        };
        ctx.wait(work.into_actor(self).map(move |r, act, _ctx| {
            let result = r.map(|(plan, child_id)| {
                act.c.spec = std::sync::Arc::new(plan.spec);
                if let Some(running) = act.running.as_mut() {
                    if plan.plug {
                        running.device_ids.push(child_id);
                    } else {
                        running.device_ids.retain(|id| *id != child_id);
                    }
                }
                plan.name
            });
            act.publish(None);
            let _ = tx.send(result);
        }));
        Box::pin(async move {
            rx.await.unwrap_or_else(|_| {
                Err(ApiError::new(
                    ErrorCode::InternalError,
                    "the VM's domain actor stopped during the operation",
                ))
            })
        })
    }
}
