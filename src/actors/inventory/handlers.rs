//! What the inventory does with its requests. Creations and removals run
//! concurrently with other requests (their slow steps are on the blocking
//! pool); a name is reserved while its VM is being created.

use actix::{ActorFutureExt, Context, Handler, MessageResult, ResponseActFuture, WrapFuture};

use super::messages::{Create, List, Remove, Resolve};
use super::state::{adopt, boot_image, prepare_images, InventoryActor};
use super::InventoryError;
use crate::actors::domain::{Operation, VmHandle, VmSnapshot};
use crate::actors::events::EventKind;
use crate::vm::VmRecord;

fn ready<T: 'static>(
    r: Result<T, InventoryError>,
) -> ResponseActFuture<InventoryActor, Result<T, InventoryError>> {
    Box::pin(actix::fut::ready(r))
}

impl Handler<Create> for InventoryActor {
    type Result = ResponseActFuture<Self, Result<uuid::Uuid, InventoryError>>;

    fn handle(&mut self, Create(file): Create, _ctx: &mut Context<Self>) -> Self::Result {
        let uuid = uuid::Uuid::new_v4();
        let spec = match file.validate(&uuid) {
            Ok(spec) => spec,
            Err(e) => return ready(Err(InventoryError::InvalidSpec(e))),
        };
        let name = spec.name.clone();
        if let Some(existing) = self.names.get(&name) {
            return ready(Err(InventoryError::NameTaken {
                name,
                uuid: Some(*existing),
            }));
        }
        if self.reserved.contains_key(&name) {
            return ready(Err(InventoryError::NameTaken { name, uuid: None }));
        }
        self.reserved.insert(name.clone(), spec.kernel.clone());
        let record = VmRecord { uuid, spec };
        let (env, domains) = (self.env.clone(), self.domains.clone());
        let work = async move {
            env.records
                .persist(record.clone())
                .await
                .map_err(InventoryError::Record)?;
            let image = boot_image(&record);
            match adopt(&env, &domains, record).await {
                Ok(handle) => {
                    prepare_images(&env, image.into_iter().collect());
                    Ok(handle)
                }
                Err(e) => {
                    if let Err(error) = env.records.forget(uuid).await {
                        let error = crate::error::chain(&error);
                        tracing::warn!(%uuid, %error, "cannot remove the record of a VM whose creation failed");
                    }
                    Err(InventoryError::Supervisor(e))
                }
            }
        };
        Box::pin(work.into_actor(self).map(move |r, act, _ctx| {
            act.reserved.remove(&name);
            let handle = r?;
            tracing::info!(vm = %name, %uuid, "VM created");
            act.register(handle.clone());
            act.tell(&handle, EventKind::Add);
            Ok(uuid)
        }))
    }
}

impl Handler<Remove> for InventoryActor {
    type Result = ResponseActFuture<Self, Result<VmSnapshot, InventoryError>>;

    fn handle(&mut self, Remove(key): Remove, _ctx: &mut Context<Self>) -> Self::Result {
        let Some(vm) = self.resolve(&key) else {
            return ready(Err(InventoryError::NotFound(key)));
        };
        let (env, domains) = (self.env.clone(), self.domains.clone());
        let work = async move {
            // Halted, and from now on refusing every operation.
            vm.run(Operation::Retire).await?;
            if let Err(e) = env.records.forget(vm.uuid).await {
                let _ = vm.run(Operation::Unretire).await;
                return Err(InventoryError::Record(e));
            }
            if let Err(e) = domains.remove_child(vm.uuid.to_string()).await {
                let error = crate::error::chain(&e);
                tracing::warn!(vm = %vm.name(), %error, "cannot stop the VM's supervisor");
            }
            let (console, uuid) = (env.console.clone(), vm.uuid);
            match crate::drivers::blocking::run(move || console.remove(&uuid)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(vm = %vm.name(), error = %e, "cannot remove the console log")
                }
                Err(e) => {
                    tracing::warn!(vm = %vm.name(), error = %e, "cannot remove the console log")
                }
            }
            Ok(vm)
        };
        Box::pin(
            work.into_actor(self)
                .map(|r: Result<VmHandle, _>, act, _ctx| {
                    let vm = r?;
                    tracing::info!(vm = %vm.name(), uuid = %vm.uuid, "VM removed");
                    act.unregister(vm.uuid);
                    act.tidy_images();
                    act.tell(&vm, EventKind::Del);
                    Ok(vm.snapshot())
                }),
        )
    }
}

impl Handler<Resolve> for InventoryActor {
    type Result = Option<VmHandle>;

    fn handle(&mut self, Resolve(key): Resolve, _ctx: &mut Context<Self>) -> Self::Result {
        self.resolve(&key)
    }
}

impl Handler<List> for InventoryActor {
    type Result = MessageResult<List>;

    fn handle(&mut self, _msg: List, _ctx: &mut Context<Self>) -> Self::Result {
        let mut vms: Vec<(String, VmHandle)> = self
            .vms
            .values()
            .map(|vm| (vm.name(), vm.clone()))
            .collect();
        vms.sort_by(|a, b| a.0.cmp(&b.0));
        MessageResult(vms.into_iter().map(|(_, vm)| vm).collect())
    }
}
