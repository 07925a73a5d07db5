//! Device backend actors with the simulated guest's frontends: plug,
//! connect, crash and re-sync, unplug.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use std::sync::Arc;

use xenith::actors::backend::{BackendActor, DeviceSpec, DeviceStatus, Hotplug, Release, Unplug};
use xenith::actors::supervisor::{ChildSpec, Strategy, SupervisorFlags, SupervisorHandle};
use xenith::actors::InjectPanic;
use xenith::drivers::devices::DeviceHost;
use xenith::drivers::xenstore::XsClient;
use xenith::drivers::{BootImage, DomainConfig};
use xenith::vm::{layout, VmSpecFile};
use xenith::xs::{DeviceKind, XenbusState};

async fn status(sup: &SupervisorHandle, id: &str) -> Option<(XenbusState, XenbusState)> {
    let addr = sup.child::<BackendActor>(id).await.unwrap()?;
    addr.send(DeviceStatus).await.ok()
}

async fn eventually_connected(sup: &SupervisorHandle, id: &str, xs: &XsClient) {
    let t0 = Instant::now();
    while status(sup, id).await != Some((XenbusState::Connected, XenbusState::Connected)) {
        if t0.elapsed() > Duration::from_secs(5) {
            let mut dump = Vec::new();
            for p in [
                "/local/domain/1/device/vbd/51712",
                "/local/domain/0/backend/vbd/1/51712",
                "/local/domain/1/control",
                "/local/domain/1/data",
            ] {
                for k in xs.directory(p).await.unwrap_or_default() {
                    dump.push(format!(
                        "{p}/{k} = {:?} {:?}",
                        xs.read_opt(&format!("{p}/{k}")).await.unwrap(),
                        xs.get_perms(&format!("{p}/{k}")).await.unwrap()
                    ));
                }
            }
            panic!("{id}: {:?}\n{}", status(sup, id).await, dump.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[actix::test]
async fn backends_connect_survive_a_panic_and_unplug_cleanly() {
    common::quiet_injected_panics();
    let _ = tracing_subscriber::fmt()
        .with_env_filter("xenith=debug")
        .with_test_writer()
        .try_init();
    let w = common::world::World::start().await;
    let (root, sim, hv, xs) = (&w.root, &w.sim, &w.hv, &w.xs);

    // A PV VM with one disk and one NIC, its domain built and its tree written.
    let uuid = uuid::Uuid::new_v4();
    let spec = VmSpecFile::from_toml(
        "name=\"d\"\ntype=\"pv\"\nmemory_mib=128\nkernel=\"/k\"\n[[disks]]\npath=\"/images/d.img\"\ndevice=\"xvda\"\n[[nics]]\n",
    )
    .unwrap()
    .validate(&uuid)
    .unwrap();
    let cfg = DomainConfig {
        uuid: *uuid.as_bytes(),
        domain_type: spec.domain_type,
        memory_mib: 128,
        vcpus: 1,
    };
    let d = hv.create_domain(cfg).await.unwrap();
    let built = hv
        .build_domain(
            d,
            BootImage {
                kernel: "/k".into(),
                ramdisk: None,
                cmdline: String::new(),
                firmware: Default::default(),
            },
        )
        .await
        .unwrap();
    let mut entries = layout::domain_make(&uuid, d, &spec);
    entries.extend(layout::build_post(
        &uuid,
        d,
        &spec,
        &built,
        std::time::SystemTime::now(),
    ));
    layout::apply(xs, &entries).await.unwrap();
    xs.introduce(u32::from(d.0), built.store_gfn, built.store_port)
        .await
        .unwrap();
    hv.unpause(d).await.unwrap();

    // A file-backed disk (a loop device on the simulated host) and a NIC.
    let vbd = DeviceSpec {
        kind: DeviceKind::Vbd,
        name: "xvda".into(),
        trees: layout::vbd(d, &spec.disks[0], true, xenith::vm::VbdBackend::Blkback),
        hotplug: Hotplug::Disk {
            path: spec.disks[0].path.clone(),
            read_only: false,
        },
    };
    let vif = DeviceSpec {
        kind: DeviceKind::Vif,
        name: "0".into(),
        trees: layout::vif(d, &spec.nics[0]),
        hotplug: Hotplug::Nic {
            interface: format!("vif{}.0", d.0),
            bridge: spec.nics[0].bridge.clone(),
        },
    };
    let devices = sim.sim_devices();
    let host: Arc<dyn DeviceHost> = devices.clone();
    let (vbd_back, vbd_front) = (vbd.trees.backend.clone(), vbd.trees.frontend.clone());
    let vm = ChildSpec::supervisor(
        "vm",
        SupervisorFlags::new(Strategy::OneForOne, 10, Duration::from_secs(60)),
        vec![
            BackendActor::spec(vbd, xs.clone(), host.clone()),
            BackendActor::spec(vif, xs.clone(), host.clone()),
        ],
    );
    root.handle().start_child(vm).await.unwrap();
    let sup = root.handle().child_supervisor("vm").await.unwrap().unwrap();
    eventually_connected(&sup, "vbd:xvda", xs).await;
    eventually_connected(&sup, "vif:0", xs).await;
    assert_eq!(
        xs.read_opt(&format!("{vbd_back}/physical-device"))
            .await
            .unwrap()
            .as_deref(),
        Some("7:0")
    );
    assert_eq!(
        xs.read_opt(&format!("{vbd_back}/physical-device-path"))
            .await
            .unwrap()
            .as_deref(),
        Some("/dev/loop0")
    );
    assert_eq!(
        host.loop_devices(),
        vec![("/dev/loop0".into(), "/images/d.img".into())]
    );
    // netback's interface is up on the NIC's bridge.
    let iface = devices.interface(&format!("vif{}.0", d.0)).unwrap();
    assert!(iface.up);
    assert_eq!(iface.bridge.as_deref(), Some("xenbr0"));
    let ip = xs
        .read_opt(&format!("/local/domain/{}/attr/vif/0/ipv4/0", d.0))
        .await
        .unwrap();
    assert!(ip.is_some(), "the guest's agent reported its address");

    // A panic in the vbd backend: restarted alone, re-synced, the guest undisturbed.
    let front_before = xs.read_opt(&format!("{vbd_front}/ring-ref")).await.unwrap();
    let addr = sup
        .child::<BackendActor>("vbd:xvda")
        .await
        .unwrap()
        .unwrap();
    assert!(addr.send(InjectPanic).await.is_err());
    let t0 = Instant::now();
    while sup
        .tree()
        .await
        .unwrap()
        .find(&["vbd:xvda"])
        .unwrap()
        .restarts
        != 1
    {
        assert!(t0.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let tree = sup.tree().await.unwrap();
    assert_eq!(tree.find(&["vif:0"]).unwrap().restarts, 0);
    // The restarted backend read the state back (no rewrite): still Connected on both sides.
    let addr = sup
        .child::<BackendActor>("vbd:xvda")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        addr.send(DeviceStatus).await.unwrap().0,
        XenbusState::Connected
    );
    assert_eq!(
        xs.read_opt(&format!("{vbd_front}/state"))
            .await
            .unwrap()
            .as_deref(),
        Some("4")
    );
    assert_eq!(
        xs.read_opt(&format!("{vbd_front}/ring-ref")).await.unwrap(),
        front_before
    );

    // Unplug: Closing, the frontend closes, Closed, both trees gone, the
    // loop device released, the actor ends normally.
    addr.send(Unplug).await.unwrap().unwrap();
    assert_eq!(xs.read_opt(&vbd_back).await.unwrap(), None);
    assert_eq!(xs.read_opt(&vbd_front).await.unwrap(), None);
    assert!(host.loop_devices().is_empty());
    let t0 = Instant::now();
    loop {
        let node = sup
            .tree()
            .await
            .unwrap()
            .find(&["vbd:xvda"])
            .cloned()
            .unwrap();
        if node.state == "stopped" {
            assert_eq!(node.last_exit.as_deref(), Some("normal"));
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // The domain goes: the NIC is released without the guest; netback
    // removes its interface.
    let addr = sup.child::<BackendActor>("vif:0").await.unwrap().unwrap();
    addr.send(Release).await.unwrap().unwrap();
    assert_eq!(
        xs.read_opt(&format!("/local/domain/0/backend/vif/{}/0", d.0))
            .await
            .unwrap(),
        None
    );
    assert!(
        devices.interfaces().is_empty(),
        "{:?}",
        devices.interfaces()
    );
}
