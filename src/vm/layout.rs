//! The xenstore entries a VM's domain and devices get, as libxl 4.17
//! writes them (docs/libxl-xenstore-layout.md): each entry's path, value,
//! and ACL when one is set explicitly (otherwise the node inherits its
//! parent's, the C daemon's rule, which the toolstack relies on).
//!
//! The entries are plain data; `apply` is the one place that writes them
//! (the domain and device actors use it; the tests compare the result key
//! by key with the reference). Every other path the toolstack reads or
//! writes (control/shutdown, memory/target, the agent's keys, the device
//! model's, the trees a teardown removes) is built here too.

use crate::drivers::{Built, DomId, DomainType};
use crate::xs::{DeviceKind, Perm, PermLetter, XenbusState};

use super::disk::{Disk, DiskMode, VbdBackend};
use super::spec::{Nic, VmSpec};

/// One node to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub value: String,
    /// Set explicitly after writing; None inherits the parent's.
    pub perms: Option<Vec<Perm>>,
}

fn e(path: String, value: impl Into<String>, perms: Option<Vec<Perm>>) -> Entry {
    Entry {
        path,
        value: value.into(),
        perms,
    }
}

fn acl(owner: u32, owner_letter: PermLetter, extra: Option<(PermLetter, u32)>) -> Vec<Perm> {
    let mut v = vec![Perm {
        letter: owner_letter,
        domid: owner,
    }];
    if let Some((letter, domid)) = extra {
        v.push(Perm { letter, domid });
    }
    v
}

/// `n0 rN`: dom0's, the guest reads (libxl's roperm).
pub fn ro(domid: DomId) -> Vec<Perm> {
    acl(
        0,
        PermLetter::None,
        Some((PermLetter::Read, u32::from(domid.0))),
    )
}

/// `nN`: the guest's own (libxl's rwperm).
pub fn rw(domid: DomId) -> Vec<Perm> {
    acl(u32::from(domid.0), PermLetter::None, None)
}

/// `n0`: dom0 only (libxl's noperm).
pub fn none() -> Vec<Perm> {
    acl(0, PermLetter::None, None)
}

/// A frontend's ACL: the guest's, the backend (dom0) reads: `nN r0`.
pub fn frontend_acl(domid: DomId) -> Vec<Perm> {
    acl(
        u32::from(domid.0),
        PermLetter::None,
        Some((PermLetter::Read, 0)),
    )
}

/// The guest's home.
pub fn home(domid: DomId) -> String {
    format!("/local/domain/{domid}")
}

/// `/vm/<uuid>`.
pub fn vm_path(uuid: &uuid::Uuid) -> String {
    format!("/vm/{uuid}")
}

/// Where the toolstack asks the guest to power off, reboot or suspend.
pub fn control_shutdown(domid: DomId) -> String {
    format!("{}/control/shutdown", home(domid))
}

/// The guest's balloon target (KiB), which its balloon driver follows.
pub fn memory_target(domid: DomId) -> String {
    format!("{}/memory/target", home(domid))
}

/// The guest agent's directories (`data`, `attr`), watched as a whole.
pub const GUEST_AGENT_DIRS: [&str; 2] = ["data", "attr"];

/// A directory the guest agent writes below its home.
pub fn guest_dir(domid: DomId, dir: &str) -> String {
    format!("{}/{dir}", home(domid))
}

/// One key the guest agent reports under `data/` (os_name, meminfo_free...).
pub fn guest_data(domid: DomId, key: &str) -> String {
    format!("{}/data/{key}", home(domid))
}

/// The first address of one family ("ipv4", "ipv6") the guest agent
/// reports for a NIC, and its key in `vm.get`'s `ips` ("0/ipv4/0").
pub fn guest_ip(domid: DomId, devid: u32, family: &str) -> (String, String) {
    let key = format!("{devid}/{family}/0");
    (format!("{}/attr/vif/{key}", home(domid)), key)
}

/// Where libxl records the device model's pid.
pub fn device_model_pid(domid: DomId) -> String {
    format!("{}/image/device-model-pid", home(domid))
}

/// The device model's own directory in dom0.
pub fn device_model_dir(domid: DomId) -> String {
    format!("/local/domain/0/device-model/{}", domid.0)
}

/// Where the device model says it runs (`running`).
pub fn device_model_state(domid: DomId) -> String {
    format!("{}/state", device_model_dir(domid))
}

/// Everything a domain's teardown removes: its home, /vm/UUID, /libxl/N,
/// its backends (VBDs, VIFs, console) and its device model's directory.
pub fn domain_trees(uuid: &uuid::Uuid, domid: DomId) -> Vec<String> {
    let n = domid.0;
    let mut trees = vec![home(domid), vm_path(uuid), format!("/libxl/{n}")];
    for kind in crate::xs::DeviceKind::ALL {
        trees.push(format!("/local/domain/0/backend/{kind}/{n}"));
    }
    trees.push(format!("/local/domain/0/backend/{QDISK}/{n}"));
    trees.push(format!("/local/domain/0/backend/console/{n}"));
    trees.push(device_model_dir(domid));
    trees
}

/// The console ring's size limit libxl sets (LIBXL_XENCONSOLE_LIMIT).
pub const CONSOLE_LIMIT: u64 = 1_048_576;

/// `start_time` as libxl writes it: seconds, a dot, two digits of hundredths.
pub fn start_time(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:02}", d.as_secs(), d.subsec_micros() / 10_000)
}

/// What `libxl__domain_make` writes (one transaction, right after the
/// domain is created): the home, its directories, control/, /vm/UUID,
/// /libxl/N.
pub fn domain_make(uuid: &uuid::Uuid, domid: DomId, spec: &VmSpec) -> Vec<Entry> {
    let h = home(domid);
    let n = domid.0;
    let mut v = vec![
        e(h.clone(), "", Some(ro(domid))),
        e(format!("{h}/vm"), vm_path(uuid), None),
        e(format!("{h}/name"), spec.name.clone(), None),
        e(format!("{h}/cpu"), "", Some(ro(domid))),
        e(format!("{h}/memory"), "", Some(ro(domid))),
        e(format!("{h}/device"), "", Some(ro(domid))),
        e(
            format!("{h}/device/suspend/event-channel"),
            "",
            Some(rw(domid)),
        ),
        e(format!("{h}/control"), "", Some(ro(domid))),
    ];
    if spec.domain_type == DomainType::Hvm {
        v.push(e(format!("{h}/hvmloader"), "", Some(ro(domid))));
    }
    for key in [
        "shutdown",
        "feature-poweroff",
        "feature-reboot",
        "feature-suspend",
    ] {
        v.push(e(format!("{h}/control/{key}"), "", Some(rw(domid))));
    }
    if spec.domain_type == DomainType::Hvm {
        for key in ["feature-s3", "feature-s4"] {
            v.push(e(format!("{h}/control/{key}"), "", Some(rw(domid))));
        }
    }
    v.push(e(format!("{h}/control/sysrq"), "", Some(rw(domid))));
    for dir in ["data", "drivers", "feature", "attr", "error"] {
        v.push(e(format!("{h}/{dir}"), "", Some(rw(domid))));
    }
    v.push(e(
        format!("{h}/control/platform-feature-multiprocessor-suspend"),
        "1",
        None,
    ));
    v.push(e(
        format!("{h}/control/platform-feature-xs_reset_watches"),
        "1",
        None,
    ));
    let vm = vm_path(uuid);
    v.push(e(vm.clone(), "", Some(ro(domid))));
    v.push(e(format!("{vm}/uuid"), uuid.to_string(), None));
    v.push(e(format!("{vm}/name"), spec.name.clone(), None));
    v.push(e(format!("/libxl/{n}"), "", Some(none())));
    v.push(e(format!("/libxl/{n}/device"), "", Some(none())));
    let ty = match spec.domain_type {
        DomainType::Pv => "pv",
        DomainType::Pvh => "pvh",
        DomainType::Hvm => "hvm",
    };
    v.push(e(format!("/libxl/{n}/type"), ty, None));
    v.push(e(format!("/libxl/{n}/dm-version"), "qemu_xen", None));
    v
}

/// What `libxl__build_post` writes once the image is built: memory, domid,
/// store, vcpus, /vm/UUID image keys and start_time.
pub fn build_post(
    uuid: &uuid::Uuid,
    domid: DomId,
    spec: &VmSpec,
    built: &Built,
    started: std::time::SystemTime,
) -> Vec<Entry> {
    let h = home(domid);
    let kib = spec.memory_mib * 1024;
    let mut v = vec![
        e(format!("{h}/memory/static-max"), kib.to_string(), None),
        e(format!("{h}/memory/target"), kib.to_string(), None),
        e(format!("{h}/memory/videoram"), "0", None),
        e(format!("{h}/domid"), domid.0.to_string(), None),
        e(
            format!("{h}/store/port"),
            built.store_port.to_string(),
            None,
        ),
        e(
            format!("{h}/store/ring-ref"),
            built.store_gfn.to_string(),
            None,
        ),
    ];
    for i in 0..spec.vcpus {
        v.push(e(format!("{h}/cpu/{i}/availability"), "online", None));
    }
    let vm = vm_path(uuid);
    match spec.domain_type {
        DomainType::Pv => {
            v.push(e(format!("{vm}/image/ostype"), "linux", None));
            if let Some(k) = &spec.kernel {
                v.push(e(
                    format!("{vm}/image/kernel"),
                    k.display().to_string(),
                    None,
                ));
            }
            if let Some(r) = &spec.ramdisk {
                v.push(e(
                    format!("{vm}/image/ramdisk"),
                    r.display().to_string(),
                    None,
                ));
            }
            if !spec.cmdline.is_empty() {
                v.push(e(format!("{vm}/image/cmdline"), spec.cmdline.clone(), None));
            }
        }
        DomainType::Hvm => {
            v.push(e(format!("{vm}/image/ostype"), "hvm", None));
            v.push(e(format!("{vm}/rtc/timeoffset"), "", None));
            // What hvmloader reads (libxl's build_post and dm spawn):
            // ACPI on with S3/S4, qemu-xen's DSDT, the firmware (SeaBIOS
            // or OVMF: hvmloader assumes rombios without the key), no
            // memory relocation.
            for (key, value) in [
                ("platform/acpi", "1"),
                ("platform/acpi_s3", "1"),
                ("platform/acpi_s4", "1"),
                ("platform/acpi_laptop_slate", "0"),
                ("platform/device-model", "qemu_xen"),
                ("hvmloader/bios", spec.firmware.hvmloader_name()),
                ("hvmloader/allow-memory-relocate", "0"),
            ] {
                v.push(e(format!("{h}/{key}"), value, None));
            }
        }
        DomainType::Pvh => {}
    }
    v.push(e(format!("{vm}/start_time"), start_time(started), None));
    v
}

/// Console 0: `/local/domain/N/console` (read-only for the guest, except
/// backend-id) and its backend for xenconsoled in dom0.
pub fn console(domid: DomId, built: &Built) -> Vec<Entry> {
    let h = home(domid);
    let n = domid.0;
    let back = format!("/local/domain/0/backend/console/{n}/0");
    vec![
        e(format!("{h}/console"), "", Some(ro(domid))),
        e(format!("{h}/console/backend"), back.clone(), None),
        e(
            format!("{h}/console/backend-id"),
            "0",
            Some(frontend_acl(domid)),
        ),
        e(
            format!("{h}/console/limit"),
            CONSOLE_LIMIT.to_string(),
            None,
        ),
        e(format!("{h}/console/type"), "xenconsoled", None),
        e(format!("{h}/console/output"), "pty", None),
        e(format!("{h}/console/tty"), "", None),
        e(
            format!("{h}/console/port"),
            built.console_port.to_string(),
            None,
        ),
        e(
            format!("{h}/console/ring-ref"),
            built.console_gfn.to_string(),
            None,
        ),
        e(back.clone(), "", Some(ro(domid))),
        e(format!("{back}/frontend-id"), n.to_string(), None),
        e(format!("{back}/online"), "1", None),
        e(
            format!("{back}/state"),
            XenbusState::Initialising.value(),
            None,
        ),
        e(format!("{back}/protocol"), "vt100", None),
        e(format!("{back}/frontend"), format!("{h}/console"), None),
    ]
}

/// A device's two sides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceTrees {
    pub backend: String,
    pub frontend: String,
    pub entries: Vec<Entry>,
}

impl DeviceTrees {
    /// A node of the backend's directory (`state`, `online`...).
    pub fn backend_node(&self, key: &str) -> String {
        format!("{}/{key}", self.backend)
    }

    /// A node of the frontend's directory.
    pub fn frontend_node(&self, key: &str) -> String {
        format!("{}/{key}", self.frontend)
    }
}

fn device(
    domid: DomId,
    kind: DeviceKind,
    devid: u32,
    back: Vec<(&str, String)>,
    front: Vec<(&str, String)>,
) -> DeviceTrees {
    device_at(domid, kind.as_str(), kind, devid, back, front)
}

/// The backend directory of QEMU's disk backend (xen-block).
pub const QDISK: &str = "qdisk";

/// A device whose backend type (`backend/TYPE/...`) is not its frontend's
/// kind (a qdisk VBD).
fn device_at(
    domid: DomId,
    backend_type: &str,
    kind: DeviceKind,
    devid: u32,
    back: Vec<(&str, String)>,
    front: Vec<(&str, String)>,
) -> DeviceTrees {
    let n = domid.0;
    let backend = format!("/local/domain/0/backend/{backend_type}/{n}/{devid}");
    let frontend = format!("{}/device/{kind}/{devid}", home(domid));
    let mut entries = vec![e(backend.clone(), "", Some(ro(domid)))];
    entries.push(e(format!("{backend}/frontend"), frontend.clone(), None));
    entries.extend(
        back.into_iter()
            .map(|(k, v)| e(format!("{backend}/{k}"), v, None)),
    );
    entries.push(e(frontend.clone(), "", Some(frontend_acl(domid))));
    entries.push(e(format!("{frontend}/backend"), backend.clone(), None));
    entries.extend(
        front
            .into_iter()
            .map(|(k, v)| e(format!("{frontend}/{k}"), v, Some(frontend_acl(domid)))),
    );
    DeviceTrees {
        backend,
        frontend,
        entries,
    }
}

/// A disk, both sides, state 1: for blkback (`phy`, a hotplug step gives
/// it the block device) or for QEMU's qdisk (`params` = `FORMAT:PATH`,
/// which QEMU opens itself; no hotplug script), as libxl writes each.
pub fn vbd(domid: DomId, disk: &Disk, pv: bool, backend: VbdBackend) -> DeviceTrees {
    let rw_mode = disk.mode == DiskMode::Rw;
    let path = disk.path.display().to_string();
    let mut back = match backend {
        VbdBackend::Blkback => vec![
            ("params", path),
            ("script", "/etc/xen/scripts/block".to_owned()),
            ("type", "phy".to_owned()),
        ],
        VbdBackend::Qdisk => vec![
            ("params", format!("{}:{path}", disk.format.as_str())),
            ("type", QDISK.to_owned()),
        ],
    };
    back.extend([
        ("frontend-id", domid.0.to_string()),
        ("online", "1".to_owned()),
        ("removable", "0".to_owned()),
        ("bootable", "1".to_owned()),
        ("state", XenbusState::Initialising.value().to_owned()),
        ("dev", disk.device.clone()),
        ("mode", if rw_mode { "w" } else { "r" }.to_owned()),
        ("device-type", "disk".to_owned()),
        ("discard-enable", if rw_mode { "1" } else { "0" }.to_owned()),
        ("specification", "xen".to_owned()),
    ]);
    let mut front = vec![
        ("backend-id", "0".to_owned()),
        ("state", XenbusState::Initialising.value().to_owned()),
        ("virtual-device", disk.devid.to_string()),
        ("device-type", "disk".to_owned()),
        ("trusted", "1".to_owned()),
    ];
    if pv {
        front.push(("protocol", "x86_64-abi".to_owned()));
    }
    let backend_type = match backend {
        VbdBackend::Blkback => DeviceKind::Vbd.as_str(),
        VbdBackend::Qdisk => QDISK,
    };
    device_at(
        domid,
        backend_type,
        DeviceKind::Vbd,
        disk.devid,
        back,
        front,
    )
}

/// A NIC (netback), both sides, state 1; `hotplug-status` empty so that
/// netback waits for the hotplug step.
pub fn vif(domid: DomId, nic: &Nic) -> DeviceTrees {
    let back = vec![
        ("frontend-id", domid.0.to_string()),
        ("online", "1".to_owned()),
        ("state", XenbusState::Initialising.value().to_owned()),
        ("script", "/etc/xen/scripts/vif-bridge".to_owned()),
        ("mac", nic.mac.clone()),
        ("bridge", nic.bridge.clone()),
        ("handle", nic.devid.to_string()),
        ("type", "vif".to_owned()),
        ("hotplug-status", String::new()),
    ];
    let front = vec![
        ("backend-id", "0".to_owned()),
        ("state", XenbusState::Initialising.value().to_owned()),
        ("handle", nic.devid.to_string()),
        ("mac", nic.mac.clone()),
        ("trusted", "1".to_owned()),
    ];
    let mut trees = device(domid, DeviceKind::Vif, nic.devid, back, front);
    // mtu is a read-only front key: the backend's (n0 rN).
    trees.entries.push(e(
        format!("{}/mtu", trees.frontend),
        "1500",
        Some(ro(domid)),
    ));
    trees
}

/// One request of [`apply`]'s transaction.
type Request<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<(), crate::drivers::xenstore::XsClientError>> + 'a>,
>;

/// Writes entries in one transaction: each value, then its explicit ACL.
pub async fn apply(
    xs: &crate::drivers::xenstore::XsClient,
    entries: &[Entry],
) -> Result<(), crate::drivers::xenstore::XsClientError> {
    xs.transaction(|tx| async move {
        // Every request of the transaction goes out at once, in order (the
        // connection keeps the order and xenstored answers a connection's
        // requests in turn): one round trip for the whole tree instead of
        // one per node. The first failure fails the transaction.
        let tx = &tx;
        let requests = entries.iter().flat_map(|e| {
            let write = Box::pin(tx.write(&e.path, &e.value)) as Request<'_>;
            let perms = e
                .perms
                .as_ref()
                .map(|perms| Box::pin(tx.set_perms(&e.path, perms)) as Request<'_>);
            std::iter::once(write).chain(perms)
        });
        futures_util::future::try_join_all(requests).await.map(drop)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::storage::VdiFormat;
    use crate::drivers::HypervisorKind;

    fn disk(format: VdiFormat) -> Disk {
        Disk {
            path: "/srv/sr/a.qcow2".into(),
            device: "xvdb".into(),
            mode: DiskMode::Rw,
            devid: 51728,
            vdi: Some(uuid::Uuid::nil()),
            format,
        }
    }

    fn value<'a>(trees: &'a DeviceTrees, path: &str) -> Option<&'a str> {
        trees
            .entries
            .iter()
            .find(|e| e.path == path)
            .map(|e| e.value.as_str())
    }

    #[test]
    fn a_qcow2_disk_on_xen_is_served_by_qdisk_as_libxl_writes_it() {
        let d = disk(VdiFormat::Qcow2);
        assert_eq!(d.backend(HypervisorKind::Xen), VbdBackend::Qdisk);
        // The simulated host's blkback reads any format; raw goes to blkback.
        assert_eq!(d.backend(HypervisorKind::Sim), VbdBackend::Blkback);
        assert_eq!(
            disk(VdiFormat::Raw).backend(HypervisorKind::Xen),
            VbdBackend::Blkback
        );

        let t = vbd(DomId(5), &d, true, VbdBackend::Qdisk);
        let back = "/local/domain/0/backend/qdisk/5/51728";
        assert_eq!(t.backend, back);
        assert_eq!(t.frontend, "/local/domain/5/device/vbd/51728");
        assert_eq!(
            value(&t, &format!("{back}/params")),
            Some("qcow2:/srv/sr/a.qcow2")
        );
        assert_eq!(value(&t, &format!("{back}/type")), Some("qdisk"));
        assert_eq!(value(&t, &format!("{back}/dev")), Some("xvdb"));
        assert_eq!(value(&t, &format!("{back}/mode")), Some("w"));
        assert_eq!(value(&t, &format!("{back}/state")), Some("1"));
        assert_eq!(value(&t, &format!("{back}/frontend-id")), Some("5"));
        assert_eq!(value(&t, &format!("{back}/script")), None);
        assert_eq!(
            value(&t, "/local/domain/5/device/vbd/51728/backend"),
            Some(back)
        );
        assert_eq!(
            value(&t, "/local/domain/5/device/vbd/51728/virtual-device"),
            Some("51728")
        );

        let b = vbd(DomId(5), &disk(VdiFormat::Raw), true, VbdBackend::Blkback);
        assert_eq!(b.backend, "/local/domain/0/backend/vbd/5/51728");
        assert_eq!(value(&b, &format!("{}/type", b.backend)), Some("phy"));
        assert_eq!(
            value(&b, &format!("{}/params", b.backend)),
            Some("/srv/sr/a.qcow2")
        );

        let trees = domain_trees(&uuid::Uuid::nil(), DomId(5));
        assert!(trees.contains(&"/local/domain/0/backend/qdisk/5".to_owned()));
    }

    #[test]
    fn an_hvm_guests_firmware_is_named_for_hvmloader() {
        let built = Built {
            store_port: 1,
            store_gfn: 2,
            console_port: 3,
            console_gfn: 4,
        };
        let bios = |text: &str| {
            let spec = crate::vm::VmSpecFile::from_toml(&format!(
                "name=\"h\"\ntype=\"hvm\"\nmemory_mib=64\n{text}"
            ))
            .and_then(|s| s.validate(&uuid::Uuid::nil()))
            .unwrap();
            build_post(
                &uuid::Uuid::nil(),
                DomId(7),
                &spec,
                &built,
                std::time::UNIX_EPOCH,
            )
            .into_iter()
            .find(|e| e.path == "/local/domain/7/hvmloader/bios")
            .map(|e| e.value)
        };
        assert_eq!(bios("").as_deref(), Some("seabios"));
        assert_eq!(bios("firmware=\"uefi\"").as_deref(), Some("ovmf"));
    }
}
