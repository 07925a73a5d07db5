//! The xenstore layout xenith writes for a VM, applied to the embedded
//! xenstored and checked key by key (value and effective ACL, inheritance
//! included) against what libxl 4.17 writes (docs/libxl-xenstore-layout.md).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use xenith::drivers::{Built, DomId};
use xenith::vm::layout;
use xenith::vm::VmSpecFile;

const SPEC: &str = r#"
name = "web"
type = "pv"
memory_mib = 512
vcpus = 2
kernel = "/boot/vmlinuz"
ramdisk = "/boot/initrd.img"
cmdline = "root=/dev/xvda ro"
[[disks]]
path = "/dev/vg/disk"
device = "xvda"
mode = "rw"
[[nics]]
bridge = "xenbr0"
mac = "00:16:3e:12:34:56"
"#;

/// (path, value or None for "any", effective ACL as xenstore-ls -p prints it).
fn expected(uuid: &uuid::Uuid) -> Vec<(String, Option<String>, &'static str)> {
    let h = "/local/domain/5";
    let vm = format!("/vm/{uuid}");
    let be = "/local/domain/0/backend/vbd/5/51712";
    let fe = "/local/domain/5/device/vbd/51712";
    let vbe = "/local/domain/0/backend/vif/5/0";
    let vfe = "/local/domain/5/device/vif/0";
    let cbe = "/local/domain/0/backend/console/5/0";
    let s = |x: &str| Some(x.to_owned());
    let mut v: Vec<(String, Option<String>, &'static str)> = vec![
        // libxl__domain_make
        (h.into(), s(""), "n0,r5"),
        (format!("{h}/vm"), Some(vm.clone()), "n0,r5"),
        (format!("{h}/name"), s("web"), "n0,r5"),
        (format!("{h}/cpu"), s(""), "n0,r5"),
        (format!("{h}/memory"), s(""), "n0,r5"),
        (format!("{h}/device"), s(""), "n0,r5"),
        (format!("{h}/device/suspend/event-channel"), s(""), "n5"),
        (format!("{h}/control"), s(""), "n0,r5"),
        (format!("{h}/control/shutdown"), s(""), "n5"),
        (format!("{h}/control/feature-poweroff"), s(""), "n5"),
        (format!("{h}/control/feature-reboot"), s(""), "n5"),
        (format!("{h}/control/feature-suspend"), s(""), "n5"),
        (format!("{h}/control/sysrq"), s(""), "n5"),
        (
            format!("{h}/control/platform-feature-multiprocessor-suspend"),
            s("1"),
            "n0,r5",
        ),
        (
            format!("{h}/control/platform-feature-xs_reset_watches"),
            s("1"),
            "n0,r5",
        ),
        (format!("{h}/data"), s(""), "n5"),
        (format!("{h}/drivers"), s(""), "n5"),
        (format!("{h}/feature"), s(""), "n5"),
        (format!("{h}/attr"), s(""), "n5"),
        (format!("{h}/error"), s(""), "n5"),
        (vm.clone(), s(""), "n0,r5"),
        (format!("{vm}/uuid"), Some(uuid.to_string()), "n0,r5"),
        (format!("{vm}/name"), s("web"), "n0,r5"),
        ("/libxl/5".into(), s(""), "n0"),
        ("/libxl/5/type".into(), s("pv"), "n0"),
        ("/libxl/5/device".into(), s(""), "n0"),
        ("/libxl/5/dm-version".into(), s("qemu_xen"), "n0"),
        // libxl__build_post
        (format!("{h}/memory/static-max"), s("524288"), "n0,r5"),
        (format!("{h}/memory/target"), s("524288"), "n0,r5"),
        (format!("{h}/memory/videoram"), s("0"), "n0,r5"),
        (format!("{h}/domid"), s("5"), "n0,r5"),
        (format!("{h}/store/port"), s("1"), "n0,r5"),
        (format!("{h}/store/ring-ref"), s("131070"), "n0,r5"),
        (format!("{h}/cpu/0/availability"), s("online"), "n0,r5"),
        (format!("{h}/cpu/1/availability"), s("online"), "n0,r5"),
        (format!("{vm}/image/ostype"), s("linux"), "n0,r5"),
        (format!("{vm}/image/kernel"), s("/boot/vmlinuz"), "n0,r5"),
        (
            format!("{vm}/image/ramdisk"),
            s("/boot/initrd.img"),
            "n0,r5",
        ),
        (
            format!("{vm}/image/cmdline"),
            s("root=/dev/xvda ro"),
            "n0,r5",
        ),
        (format!("{vm}/start_time"), None, "n0,r5"),
        // console 0
        (format!("{h}/console"), s(""), "n0,r5"),
        (
            format!("{h}/console/backend"),
            Some(cbe.to_owned()),
            "n0,r5",
        ),
        (format!("{h}/console/backend-id"), s("0"), "n5,r0"),
        (format!("{h}/console/limit"), s("1048576"), "n0,r5"),
        (format!("{h}/console/type"), s("xenconsoled"), "n0,r5"),
        (format!("{h}/console/output"), s("pty"), "n0,r5"),
        (format!("{h}/console/tty"), s(""), "n0,r5"),
        (format!("{h}/console/port"), s("2"), "n0,r5"),
        (format!("{h}/console/ring-ref"), s("131071"), "n0,r5"),
        (cbe.into(), s(""), "n0,r5"),
        (format!("{cbe}/frontend-id"), s("5"), "n0,r5"),
        (format!("{cbe}/online"), s("1"), "n0,r5"),
        (format!("{cbe}/state"), s("1"), "n0,r5"),
        (format!("{cbe}/protocol"), s("vt100"), "n0,r5"),
        (
            format!("{cbe}/frontend"),
            Some(format!("{h}/console")),
            "n0,r5",
        ),
        // vbd
        (be.into(), s(""), "n0,r5"),
        (format!("{be}/frontend"), Some(fe.to_owned()), "n0,r5"),
        (format!("{be}/params"), s("/dev/vg/disk"), "n0,r5"),
        (format!("{be}/script"), s("/etc/xen/scripts/block"), "n0,r5"),
        (format!("{be}/frontend-id"), s("5"), "n0,r5"),
        (format!("{be}/online"), s("1"), "n0,r5"),
        (format!("{be}/removable"), s("0"), "n0,r5"),
        (format!("{be}/bootable"), s("1"), "n0,r5"),
        // Written as 1; the (simulated) blkback probes it to InitWait at once.
        (format!("{be}/state"), None, "n0,r5"),
        (format!("{be}/dev"), s("xvda"), "n0,r5"),
        (format!("{be}/type"), s("phy"), "n0,r5"),
        (format!("{be}/mode"), s("w"), "n0,r5"),
        (format!("{be}/device-type"), s("disk"), "n0,r5"),
        (format!("{be}/discard-enable"), s("1"), "n0,r5"),
        (format!("{be}/specification"), s("xen"), "n0,r5"),
        (fe.into(), s(""), "n5,r0"),
        (format!("{fe}/backend"), Some(be.to_owned()), "n5,r0"),
        (format!("{fe}/backend-id"), s("0"), "n5,r0"),
        (format!("{fe}/state"), s("1"), "n5,r0"),
        (format!("{fe}/virtual-device"), s("51712"), "n5,r0"),
        (format!("{fe}/device-type"), s("disk"), "n5,r0"),
        (format!("{fe}/trusted"), s("1"), "n5,r0"),
        (format!("{fe}/protocol"), s("x86_64-abi"), "n5,r0"),
        // vif
        (vbe.into(), s(""), "n0,r5"),
        (format!("{vbe}/frontend"), Some(vfe.to_owned()), "n0,r5"),
        (format!("{vbe}/frontend-id"), s("5"), "n0,r5"),
        (format!("{vbe}/online"), s("1"), "n0,r5"),
        // Likewise for netback.
        (format!("{vbe}/state"), None, "n0,r5"),
        (
            format!("{vbe}/script"),
            s("/etc/xen/scripts/vif-bridge"),
            "n0,r5",
        ),
        (format!("{vbe}/mac"), s("00:16:3e:12:34:56"), "n0,r5"),
        (format!("{vbe}/bridge"), s("xenbr0"), "n0,r5"),
        (format!("{vbe}/handle"), s("0"), "n0,r5"),
        (format!("{vbe}/type"), s("vif"), "n0,r5"),
        (format!("{vbe}/hotplug-status"), s(""), "n0,r5"),
        (vfe.into(), s(""), "n5,r0"),
        (format!("{vfe}/backend"), Some(vbe.to_owned()), "n5,r0"),
        (format!("{vfe}/backend-id"), s("0"), "n5,r0"),
        (format!("{vfe}/state"), s("1"), "n5,r0"),
        (format!("{vfe}/handle"), s("0"), "n5,r0"),
        (format!("{vfe}/mac"), s("00:16:3e:12:34:56"), "n5,r0"),
        (format!("{vfe}/trusted"), s("1"), "n5,r0"),
        (format!("{vfe}/mtu"), s("1500"), "n0,r5"),
    ];
    v.sort();
    v
}

#[actix::test]
async fn the_layout_matches_libxl_key_by_key() {
    let w = common::world::World::start().await;
    let xs = &w.xs;

    let uuid = uuid::Uuid::new_v4();
    let vm = VmSpecFile::from_toml(SPEC)
        .unwrap()
        .validate(&uuid)
        .unwrap();
    let domid = DomId(5);
    let built = Built {
        store_port: 1,
        store_gfn: 131070,
        console_port: 2,
        console_gfn: 131071,
    };
    let mut entries = layout::domain_make(&uuid, domid, &vm);
    entries.extend(layout::build_post(
        &uuid,
        domid,
        &vm,
        &built,
        std::time::SystemTime::now(),
    ));
    entries.extend(layout::console(domid, &built));
    entries.extend(layout::vbd(domid, &vm.disks[0], true, xenith::vm::VbdBackend::Blkback).entries);
    entries.extend(layout::vif(domid, &vm.nics[0]).entries);
    layout::apply(xs, &entries).await.unwrap();

    let want = expected(&uuid);
    for (path, value, acl) in &want {
        let got = xs.read_opt(path).await.unwrap();
        assert!(got.is_some(), "{path} missing");
        if let Some(value) = value {
            assert_eq!(got.as_deref(), Some(value.as_str()), "{path}");
        }
        let perms: Vec<String> = xs
            .get_perms(path)
            .await
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(perms.join(","), *acl, "{path} ACL");
    }
    // Nothing written that libxl does not write.
    let wanted: std::collections::HashSet<&str> = want.iter().map(|(p, _, _)| p.as_str()).collect();
    for entry in &entries {
        assert!(
            wanted.contains(entry.path.as_str()),
            "unexpected key {}",
            entry.path
        );
    }
    assert_eq!(entries.len(), want.len(), "each key written once");
    let t = xs
        .read_opt(&format!("/vm/{uuid}/start_time"))
        .await
        .unwrap()
        .unwrap();
    let (secs, hundredths) = t.split_once('.').unwrap();
    assert!(secs.parse::<u64>().is_ok() && hundredths.len() == 2, "{t}");
}
