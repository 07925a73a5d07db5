//! What the inventory does with its requests. Creations and removals run
//! concurrently with other requests (their slow steps are on the blocking
//! pool); a name is reserved while its VM is being created.

use actix::{ActorFutureExt, Context, Handler, MessageResult, ResponseActFuture, WrapFuture};

use std::sync::Arc;

use super::disks;
use super::messages::{Create, List, Reconfigure, Remove, Resolve};
use super::state::{adopt, boot_image, prepare_images, InventoryActor};
use super::vdis;
use super::InventoryError;
use crate::actors::domain::{DeviceChange, Operation, VmEnv, VmError, VmHandle, VmSnapshot};
use crate::actors::events::EventKind;
use crate::actors::supervisor::SupervisorHandle;
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
        // Everything but the VDIs checked before anything is attached.
        let probe = match vdis::probe(&file, &uuid) {
            Ok(spec) => spec,
            Err(e) => return ready(Err(InventoryError::InvalidSpec(e))),
        };
        let name = probe.name.clone();
        if let Some(existing) = self.names.get(&name) {
            return ready(Err(InventoryError::NameTaken {
                name,
                uuid: Some(*existing),
            }));
        }
        if self.reserved.contains_key(&name) {
            return ready(Err(InventoryError::NameTaken { name, uuid: None }));
        }
        self.reserved.insert(name.clone(), probe.kernel.clone());
        let (env, domains) = (self.env.clone(), self.domains.clone());
        let storage = env.storage.clone();
        // The VDIs its disks name attached (one writer each), the spec
        // validated with their volumes, its disks' identities read (on the
        // blocking pool); then, back in the actor, checked against every
        // VM's and held while it is made.
        let prepared = async move {
            let vdis = vdis::attach(&storage, uuid, &file.disks).await?;
            let held = vdis::attached_for(&file.disks, &vdis);
            let spec = match file.validate_with(&uuid, &vdis) {
                Ok(spec) => spec,
                Err(e) => {
                    vdis::detach(&storage, uuid, held).await;
                    return Err(InventoryError::InvalidSpec(e));
                }
            };
            let s = spec.clone();
            match crate::drivers::blocking::run(move || disks::uses_of(uuid, &s)).await {
                Ok(uses) => Ok((spec, uses)),
                Err(e) => {
                    vdis::detach(&storage, uuid, held).await;
                    Err(InventoryError::Vm(VmError::step("read the disks", &e)))
                }
            }
        };
        let name2 = name.clone();
        let checked = prepared.into_actor(self).map(move |r, act, _ctx| {
            let (spec, uses) = r.map_err(|e| (e, None))?;
            if let Some((new, held)) = act.disks.conflict(&uses) {
                return Err((disks::in_use(new, held), Some(Box::new(spec))));
            }
            let macs: Vec<String> = spec.nics.iter().map(|n| n.mac.clone()).collect();
            act.warn_shared_macs(uuid, &name2, &macs);
            Ok((act.disks.reserve(uses), VmRecord { uuid, spec }))
        });
        Box::pin(
            checked
                .then(move |r, act, _ctx| {
                    async move {
                        match r {
                            Ok((token, record)) => {
                                let spec = Box::new(record.spec.clone());
                                let made = make_vm(env, domains, record).await;
                                (Some(token), made.map_err(|e| (e, Some(spec))))
                            }
                            Err(e) => (None, Err(e)),
                        }
                    }
                    .into_actor(act)
                })
                .map(move |(token, r), act, _ctx| {
                    act.reserved.remove(&name);
                    let uses = token.map(|t| act.disks.release(t)).unwrap_or_default();
                    let handle = match r {
                        Ok(handle) => handle,
                        Err((e, spec)) => {
                            if let Some(spec) = spec {
                                let storage = act.env.storage.clone();
                                actix::spawn(async move {
                                    vdis::detach(&storage, uuid, vdis::uses(&spec)).await;
                                });
                            }
                            return Err(e);
                        }
                    };
                    tracing::info!(vm = %name, %uuid, "VM created");
                    act.disks.set(uuid, uses);
                    act.register(handle.clone());
                    act.tell(&handle, EventKind::Add);
                    Ok(uuid)
                }),
        )
    }
}

/// Persists a new VM's record and starts its supervisor; undoes the
/// record if the supervisor does not start.
async fn make_vm(
    env: Arc<VmEnv>,
    domains: SupervisorHandle,
    record: VmRecord,
) -> Result<VmHandle, InventoryError> {
    let uuid = record.uuid;
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
            vdis::detach(&env.storage, vm.uuid, vdis::uses(&vm.spec())).await;
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

impl Handler<Reconfigure> for InventoryActor {
    type Result = ResponseActFuture<Self, Result<(uuid::Uuid, String), InventoryError>>;

    /// A disk plugged is checked against every VM's disks and held while
    /// the VM plugs it (a VDI it names attached first); a NIC's MAC another
    /// VM has is warned of; a disk unplugged lets its VDI go.
    fn handle(
        &mut self,
        Reconfigure(key, change): Reconfigure,
        _ctx: &mut Context<Self>,
    ) -> Self::Result {
        let Some(vm) = self.resolve(&key) else {
            return ready(Err(InventoryError::NotFound(key)));
        };
        if let DeviceChange::PlugNic(nic) = &change {
            if let Some(mac) = &nic.mac {
                self.warn_shared_macs(vm.uuid, &vm.name(), &[mac.to_ascii_lowercase()]);
            }
        }
        let storage = self.env.storage.clone();
        let DeviceChange::PlugDisk(disk, _) = &change else {
            let unplugged = match &change {
                DeviceChange::UnplugDisk(device) => {
                    let vdi = vm
                        .spec()
                        .disks
                        .iter()
                        .find(|d| d.device == *device)
                        .and_then(|d| d.vdi);
                    Some((device.clone(), vdi))
                }
                _ => None,
            };
            let work = async move {
                let done = vm.reconfigure(change).await?;
                if let Some((device, Some(vdi))) = &unplugged {
                    storage.detach_disk(*vdi, vm.uuid, device).await;
                }
                Ok((vm.uuid, done, unplugged))
            };
            return Box::pin(work.into_actor(self).map(
                |r: Result<_, InventoryError>, act, _ctx| {
                    let (uuid, device, unplugged) = r?;
                    if let Some((device, _)) = unplugged {
                        act.disks.take_out(uuid, &device);
                    }
                    Ok((uuid, device))
                },
            ));
        };
        let disk = disk.clone();
        if let Err(e) = vdis::probe_disk(&vm.spec(), &disk) {
            return ready(Err(InventoryError::Vm(e.into())));
        }
        let (uuid, name) = (vm.uuid, vm.name());
        let store = storage.clone();
        let prepared = async move {
            let found = vdis::attach(&store, uuid, std::slice::from_ref(&disk)).await?;
            let held = vdis::attached_for(std::slice::from_ref(&disk), &found);
            let path = match &disk.vdi {
                Some(key) => found.get(key).map(|v| v.path.clone()),
                None => disk.path.clone(),
            }
            .unwrap_or_default();
            let (mode, device) = (disk.mode, disk.device.clone());
            let identity = crate::drivers::blocking::run(move || disks::DiskUse {
                key: disks::DiskKey::of(&path),
                vm: uuid,
                name,
                device,
                path,
                mode,
            })
            .await;
            match identity {
                Ok(new) => Ok((new, DeviceChange::PlugDisk(disk, found), held)),
                Err(e) => {
                    vdis::detach(&store, uuid, held).await;
                    Err(InventoryError::Vm(VmError::step("read the disk", &e)))
                }
            }
        };
        let checked = prepared.into_actor(self).map(move |r, act, _ctx| {
            let (new, change, held) = r?;
            let new = [new];
            if let Some((n, holder)) = act.disks.conflict(&new) {
                let e = disks::in_use(n, holder);
                let storage = act.env.storage.clone();
                actix::spawn(async move { vdis::detach(&storage, uuid, held).await });
                return Err(e);
            }
            Ok((act.disks.reserve(new.to_vec()), change, held))
        });
        Box::pin(
            checked
                .then(move |r, act, _ctx| {
                    async move {
                        match r {
                            Ok((token, change, held)) => {
                                let done = vm.reconfigure(change).await;
                                if done.is_err() {
                                    vdis::detach(&storage, uuid, held).await;
                                }
                                (Some(token), done.map(|d| (uuid, d)).map_err(Into::into))
                            }
                            Err(e) => (None, Err(e)),
                        }
                    }
                    .into_actor(act)
                })
                .map(|(token, r), act, _ctx| {
                    let held = token.map(|t| act.disks.release(t)).unwrap_or_default();
                    let done = r?;
                    act.disks.add(held);
                    Ok(done)
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
