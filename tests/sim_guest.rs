//! The simulated guest, driven the way a toolstack and a backend would:
//! it only acts through xenstore, as its own domain.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use xenith::drivers::xenstore::XsClient;
use xenith::drivers::{BootImage, DomId, DomainConfig, DomainEvent, DomainType, ShutdownReason};
use xenith::xs::{Perm, PermLetter};

fn owned_by(domid: u32) -> Vec<Perm> {
    vec![Perm {
        letter: PermLetter::None,
        domid,
    }]
}

fn readable_by(domid: u32) -> Vec<Perm> {
    vec![
        Perm {
            letter: PermLetter::None,
            domid: 0,
        },
        Perm {
            letter: PermLetter::Read,
            domid,
        },
    ]
}

async fn wait_value(xs: &XsClient, path: &str, want: &str) {
    let t0 = Instant::now();
    loop {
        if xs.read_opt(path).await.unwrap().as_deref() == Some(want) {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{path} never became {want:?} (is {:?})",
            xs.read_opt(path).await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

use common::world::World;

async fn world() -> World {
    World::start().await
}

/// What a toolstack does before unpausing: the domain's tree and one vbd
/// and one vif, both sides.
async fn create(w: &World, cmdline: &str) -> DomId {
    let cfg = DomainConfig {
        uuid: [1; 16],
        domain_type: DomainType::Pv,
        memory_mib: 256,
        vcpus: 1,
    };
    let d = w.hv.create_domain(cfg).await.unwrap();
    let image = BootImage {
        kernel: "/boot/vmlinuz".into(),
        ramdisk: None,
        cmdline: cmdline.into(),
        firmware: Default::default(),
    };
    let built = w.hv.build_domain(d, image).await.unwrap();
    let n = u32::from(d.0);
    let xs = &w.xs;
    xs.introduce(n, built.store_gfn, built.store_port)
        .await
        .unwrap();
    let home = format!("/local/domain/{n}");
    xs.write(&home, "").await.unwrap();
    xs.set_perms(&home, &readable_by(n)).await.unwrap();
    for dir in ["control", "data", "attr", "device"] {
        xs.write(&format!("{home}/{dir}"), "").await.unwrap();
        xs.set_perms(&format!("{home}/{dir}"), &owned_by(n))
            .await
            .unwrap();
    }
    xs.write(&format!("{home}/control/shutdown"), "")
        .await
        .unwrap();
    xs.set_perms(&format!("{home}/control/shutdown"), &owned_by(n))
        .await
        .unwrap();
    for (kind, devid) in [("vbd", 51712), ("vif", 0)] {
        let back = format!("/local/domain/0/backend/{kind}/{n}/{devid}");
        let front = format!("{home}/device/{kind}/{devid}");
        xs.write(&format!("{back}/frontend"), &front).await.unwrap();
        xs.write(&format!("{back}/state"), "1").await.unwrap();
        xs.set_perms(&back, &readable_by(n)).await.unwrap();
        xs.set_perms(&format!("{back}/state"), &readable_by(n))
            .await
            .unwrap();
        xs.write(&format!("{front}/backend"), &back).await.unwrap();
        xs.write(&format!("{front}/backend-id"), "0").await.unwrap();
        xs.write(&format!("{front}/state"), "1").await.unwrap();
        for key in ["", "/backend", "/backend-id", "/state"] {
            xs.set_perms(&format!("{front}{key}"), &owned_by(n))
                .await
                .unwrap();
        }
    }
    d
}

#[actix::test]
async fn a_guest_advertises_connects_its_frontends_reports_and_powers_off() {
    let w = world().await;
    let d = create(&w, "console=hvc0").await;
    let n = d.0;
    let home = format!("/local/domain/{n}");
    let xs = &w.xs;
    let mut events = w.hv.subscribe(d).await.unwrap();
    // Nothing happens while paused.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        xs.read_opt(&format!("{home}/control/feature-poweroff"))
            .await
            .unwrap(),
        None
    );
    w.hv.unpause(d).await.unwrap();
    for f in ["poweroff", "reboot", "suspend"] {
        wait_value(xs, &format!("{home}/control/feature-{f}"), "1").await;
    }
    wait_value(xs, &format!("{home}/data/os_distro"), "debian").await;
    assert_eq!(
        xs.read_opt(&format!("{home}/data/meminfo_total"))
            .await
            .unwrap()
            .as_deref(),
        Some("262144")
    );

    // The handshake, both devices: backend InitWait -> frontend Initialised -> backend Connected -> Connected.
    for (kind, devid) in [("vbd", 51712), ("vif", 0)] {
        let back = format!("/local/domain/0/backend/{kind}/{n}/{devid}");
        let front = format!("{home}/device/{kind}/{devid}");
        xs.write(&format!("{back}/state"), "2").await.unwrap();
        wait_value(xs, &format!("{front}/state"), "3").await;
        assert!(xs
            .read_opt(&format!("{front}/event-channel"))
            .await
            .unwrap()
            .is_some());
        xs.write(&format!("{back}/state"), "4").await.unwrap();
        wait_value(xs, &format!("{front}/state"), "4").await;
    }
    assert!(xs
        .read_opt(&format!("{home}/device/vbd/51712/ring-ref"))
        .await
        .unwrap()
        .is_some());
    assert!(xs
        .read_opt(&format!("{home}/device/vif/0/tx-ring-ref"))
        .await
        .unwrap()
        .is_some());
    wait_value(
        xs,
        &format!("{home}/attr/vif/0/ipv4/0"),
        &format!("10.128.0.{n}"),
    )
    .await;

    // Paused, the guest does not answer; unpaused, it closes as asked.
    w.hv.pause(d).await.unwrap();
    let back = format!("/local/domain/0/backend/vbd/{n}/51712");
    xs.write(&format!("{back}/state"), "5").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        xs.read_opt(&format!("{home}/device/vbd/51712/state"))
            .await
            .unwrap()
            .as_deref(),
        Some("4")
    );
    w.hv.unpause(d).await.unwrap();
    wait_value(xs, &format!("{home}/device/vbd/51712/state"), "6").await;

    // A clean shutdown: acknowledged, then the domain shuts down with that reason.
    xs.write(&format!("{home}/control/shutdown"), "poweroff")
        .await
        .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap();
    assert_eq!(event, Some(DomainEvent::Shutdown(ShutdownReason::Poweroff)));
    assert_eq!(
        xs.read_opt(&format!("{home}/control/shutdown"))
            .await
            .unwrap()
            .as_deref(),
        Some("")
    );
    assert_eq!(
        w.hv.domain_info(d).await.unwrap().shutdown,
        Some(ShutdownReason::Poweroff)
    );
}

#[actix::test]
async fn a_guest_without_an_agent_reports_nothing_and_a_hung_frontend_never_connects() {
    let w = world().await;
    let d = create(&w, "xenith.agent=0 xenith.hang=1").await;
    let home = format!("/local/domain/{}", d.0);
    w.hv.unpause(d).await.unwrap();
    wait_value(&w.xs, &format!("{home}/control/feature-reboot"), "1").await;
    let back = format!("/local/domain/0/backend/vbd/{}/51712", d.0);
    w.xs.write(&format!("{back}/state"), "2").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        w.xs.read_opt(&format!("{home}/device/vbd/51712/state"))
            .await
            .unwrap()
            .as_deref(),
        Some("1")
    );
    assert_eq!(
        w.xs.read_opt(&format!("{home}/data/os_name"))
            .await
            .unwrap(),
        None
    );
    // Reboot: acknowledged with the reboot reason.
    let mut events = w.hv.subscribe(d).await.unwrap();
    w.xs.write(&format!("{home}/control/shutdown"), "reboot")
        .await
        .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap();
    assert_eq!(event, Some(DomainEvent::Shutdown(ShutdownReason::Reboot)));
}
