//! The inventory's state and its start: every VM the records name, taken
//! back onto the domains the hypervisor runs.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use actix::{Actor, Context};
use tokio::sync::watch;

use crate::actors::agent::GuestMetrics;
use crate::actors::domain::{VmEnv, VmHandle};
use crate::actors::events::{EventClass, EventKind};
use crate::actors::slot::AddrSlot;
use crate::actors::supervisor::{
    ChildSpec, StartError, Supervisor, SupervisorError, SupervisorHandle,
};
use crate::drivers::{BootImage, DomId};
use crate::vm::VmRecord;

use super::disks::{self, DiskUse, Disks};

/// The inventory actor.
#[derive(Debug)]
pub struct InventoryActor {
    pub(super) env: Arc<VmEnv>,
    pub(super) domains: SupervisorHandle,
    /// Every VM, by uuid, and names to uuids.
    pub(super) vms: BTreeMap<uuid::Uuid, VmHandle>,
    pub(super) names: HashMap<String, uuid::Uuid>,
    /// Names of VMs being created (their record is being written, their
    /// supervisor started), with their kernels.
    pub(super) reserved: HashMap<String, Option<PathBuf>>,
    /// Every VM's disks: one writer each.
    pub(super) disks: Disks,
    count: Arc<watch::Sender<usize>>,
    slot: AddrSlot<InventoryActor>,
}

impl InventoryActor {
    /// The child spec: at (re)start, every VM of the records is taken back
    /// (its supervisor started under `domains`, re-syncing with its domain
    /// if one runs) before the inventory counts as started.
    pub fn spec(
        env: Arc<VmEnv>,
        domains: AddrSlot<Supervisor>,
        slot: AddrSlot<InventoryActor>,
        count: Arc<watch::Sender<usize>>,
    ) -> ChildSpec {
        ChildSpec::worker_async("inventory", move |_exit| {
            let (env, domains, slot, count) =
                (env.clone(), domains.clone(), slot.clone(), count.clone());
            async move {
                let domains = domains
                    .get()
                    .map(SupervisorHandle::from)
                    .ok_or_else(|| StartError::new("the domains supervisor is not running"))?;
                let records = env
                    .records
                    .load()
                    .await
                    .map_err(|e| StartError::new(crate::error::chain(&e)))?;
                let mut inventory = InventoryActor {
                    env,
                    domains,
                    vms: BTreeMap::new(),
                    names: HashMap::new(),
                    reserved: HashMap::new(),
                    disks: Disks::default(),
                    count,
                    slot,
                };
                inventory.adopt_all(records).await;
                Ok(inventory)
            }
        })
    }

    /// Takes every record's VM back, in the records' order (by name); a VM
    /// that cannot be taken back is logged and left out.
    async fn adopt_all(&mut self, records: Vec<VmRecord>) {
        self.log_foreign_domains(&records).await;
        let specs: Vec<_> = records.iter().map(|r| (r.uuid, r.spec.clone())).collect();
        // The SRs' records of which VM names which VDI follow the VMs'.
        let attached: Vec<_> = specs
            .iter()
            .flat_map(|(uuid, spec)| super::vdis::attachments(*uuid, spec))
            .collect();
        if let Err(e) = self.env.storage.reconcile(attached).await {
            tracing::warn!(error = %crate::error::chain(&e), "cannot tell the SRs which VMs name their VDIs");
        }
        let mut uses: HashMap<uuid::Uuid, Vec<DiskUse>> =
            crate::drivers::blocking::run(move || {
                specs
                    .iter()
                    .map(|(uuid, spec)| (*uuid, disks::uses_of(*uuid, spec)))
                    .collect()
            })
            .await
            .unwrap_or_default();
        let mut images = Vec::new();
        for record in records {
            let (uuid, name) = (record.uuid, record.spec.name.clone());
            // Two records with one name (written before names were reserved,
            // or by hand): the older keeps the name; the other is taken back
            // too, named by its uuid only, flagged in vm.list and vm.get.
            let conflict = self.names.get(&name).copied();
            if let Some(other) = conflict {
                tracing::warn!(vm = %name, %uuid, keeps_the_name = %other, "two VMs have one name: this one is named by its uuid only (remove it, or the other)");
            }
            let vm_disks = uses.remove(&uuid).unwrap_or_default();
            if let Some((new, held)) = self.disks.conflict(&vm_disks) {
                // Defined before one writer per disk was checked: kept, and said.
                let e = disks::in_use(new, held);
                tracing::warn!(vm = %name, %uuid, device = %new.device, error = %e, "a disk this VM shares");
            }
            images.extend(boot_image(&record));
            match adopt(&self.env, &self.domains, record).await {
                Ok(handle) => {
                    self.disks.set(uuid, vm_disks);
                    if conflict.is_some() {
                        handle.set_name_conflict();
                        self.vms.insert(uuid, handle);
                        self.count.send_replace(self.vms.len());
                    } else {
                        self.register(handle);
                    }
                }
                Err(e) => {
                    let error = crate::error::chain(&e);
                    tracing::error!(vm = %name, %uuid, %error, "cannot take this VM back");
                }
            }
        }
        prepare_images(&self.env, images);
        self.tidy_images();
    }

    /// Domains running that no VM record names (made by xl, or another
    /// toolstack): listed in the log, and left alone.
    async fn log_foreign_domains(&self, records: &[VmRecord]) {
        let Ok(all) = self.env.hv.list_domains().await else {
            return;
        };
        for d in all {
            if d.domid != DomId::DOM0 && !records.iter().any(|r| *r.uuid.as_bytes() == d.uuid) {
                tracing::info!(
                    domid = %d.domid,
                    uuid = %uuid::Uuid::from_bytes(d.uuid),
                    "a domain xenith does not know: left alone"
                );
            }
        }
    }

    /// Adds a VM to the inventory (its name is free: checked before).
    pub(super) fn register(&mut self, vm: VmHandle) {
        self.names.insert(vm.name(), vm.uuid);
        self.vms.insert(vm.uuid, vm);
        self.count.send_replace(self.vms.len());
    }

    /// Forgets a VM.
    pub(super) fn unregister(&mut self, uuid: uuid::Uuid) {
        if let Some(vm) = self.vms.remove(&uuid) {
            self.names.retain(|_, u| *u != vm.uuid);
        }
        self.disks.forget(uuid);
        self.count.send_replace(self.vms.len());
    }

    /// Warns of NICs whose MAC another VM's NIC has (a VM's own MACs are
    /// unique, checked with its spec; across VMs it is worth a warning:
    /// two running VMs with one MAC on one bridge break each other's
    /// traffic).
    pub(super) fn warn_shared_macs(&self, uuid: uuid::Uuid, name: &str, macs: &[String]) {
        for vm in self.vms.values().filter(|vm| vm.uuid != uuid) {
            let spec = vm.spec();
            for nic in spec.nics.iter().filter(|n| macs.contains(&n.mac)) {
                tracing::warn!(vm = %name, other = %spec.name, mac = %nic.mac, "a MAC another VM's NIC has");
            }
        }
    }

    /// A VM by uuid or name.
    pub(super) fn resolve(&self, key: &str) -> Option<VmHandle> {
        let uuid = uuid::Uuid::parse_str(key)
            .ok()
            .or_else(|| self.names.get(key).copied())?;
        self.vms.get(&uuid).cloned()
    }

    /// Publishes a VM's addition (with its state) or removal.
    pub(super) fn tell(&self, vm: &VmHandle, kind: EventKind) {
        let uuid = vm.uuid.to_string();
        match kind {
            EventKind::Del => {
                let name = vm.name();
                self.env
                    .events
                    .publish(EventClass::Vm, uuid.clone(), kind, || {
                        serde_json::json!({
                            "uuid": uuid,
                            "name": name,
                            "power_state": "Halted",
                            "domid": null,
                        })
                    })
            }
            _ => {
                let s = vm.snapshot();
                self.env.events.publish(EventClass::Vm, uuid, kind, || {
                    s.event_snapshot(&GuestMetrics::default())
                })
            }
        }
    }

    /// Lets the host drop, in the background, what it prepared for kernels
    /// no VM defined uses any more (a removed VM's, a kernel replaced since
    /// it was prepared).
    pub(super) fn tidy_images(&self) {
        // Taken first: what is prepared for a VM defined meanwhile stays.
        let since = std::time::SystemTime::now();
        let kernels: Vec<PathBuf> = self
            .vms
            .values()
            .filter_map(|vm| vm.spec().kernel.clone())
            .chain(self.reserved.values().flatten().cloned())
            .collect();
        let images = self.env.images.clone();
        tokio::spawn(async move {
            match crate::drivers::blocking::run(move || images.release(&kernels, since)).await {
                Ok(Ok(0)) => {}
                Ok(Ok(removed)) => {
                    tracing::info!(removed, "prepared boot images no VM uses removed")
                }
                Ok(Err(e)) => {
                    let error = crate::error::chain(&e);
                    tracing::warn!(%error, "cannot remove prepared boot images");
                }
                Err(e) => tracing::warn!(error = %e, "cannot remove prepared boot images"),
            }
        });
    }
}

/// Starts a VM's supervisor (Halted, or re-synced with its running domain);
/// one that already runs (the inventory restarted alone) is started again.
pub(super) async fn adopt(
    env: &Arc<VmEnv>,
    domains: &SupervisorHandle,
    record: VmRecord,
) -> Result<VmHandle, SupervisorError> {
    let uuid = record.uuid;
    let (child, handle) = VmHandle::build(record.clone(), env.clone());
    match domains.start_child(child).await {
        Err(SupervisorError::AlreadyExists(_)) => {
            domains.remove_child(uuid.to_string()).await?;
            let (child, handle) = VmHandle::build(record, env.clone());
            domains.start_child(child).await?;
            Ok(handle)
        }
        r => r.map(|()| handle),
    }
}

/// What a VM boots from, if its spec names a kernel.
pub(super) fn boot_image(record: &VmRecord) -> Option<BootImage> {
    Some(BootImage {
        kernel: record.spec.kernel.clone()?,
        ramdisk: record.spec.ramdisk.clone(),
        cmdline: record.spec.cmdline.clone(),
        firmware: record.spec.firmware,
    })
}

/// Gets VMs' boot images ready in the background (a Xen host caches each
/// kernel decompressed), so that their first start does not wait.
pub(super) fn prepare_images(env: &VmEnv, images: Vec<BootImage>) {
    if images.is_empty() {
        return;
    }
    let host = env.images.clone();
    tokio::spawn(crate::drivers::blocking::run(move || {
        for image in images {
            if let Err(e) = host.prepare(&image) {
                let error = crate::error::chain(&e);
                tracing::warn!(kernel = %image.kernel.display(), %error, "cannot prepare the boot image (the start will say why)");
            }
        }
    }));
}

impl Actor for InventoryActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        use actix::AsyncContext;
        self.slot.publish(ctx.address());
    }
}
