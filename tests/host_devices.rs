//! The Linux side of guest devices on this machine, for real: loop devices
//! for disk images (read-only when asked) and released again, a bridge made
//! and a port attached and detached. Needs root, /dev/loop-control and the
//! bridge module, so it is ignored by a plain `cargo test`; scripts/test
//! runs it (`cargo test --tests -- --ignored`). The Xen bed does the same
//! with blkback and netback in a real dom0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use xenith::drivers::devices::linux::LinuxDevices;
use xenith::drivers::devices::{DeviceError, DeviceHost};

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("ip (iproute2) is missing: scripts/test installs it");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "needs root and /dev/loop-control: scripts/test runs it (cargo test --tests -- --ignored)"]
fn loop_devices_are_bound_read_only_when_asked_and_released() {
    assert!(
        Path::new("/dev/loop-control").exists(),
        "/dev/loop-control is missing (modprobe loop, as root)"
    );
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    std::fs::write(&image, vec![0u8; 1 << 20]).unwrap();
    let host = LinuxDevices::new(false);

    let ro = host.attach_disk(&image, true).unwrap();
    let rw = host.attach_disk(&image, false).unwrap();
    assert!(ro.loop_device && rw.loop_device);
    assert_ne!(ro.node, rw.node);
    assert_eq!(ro.major, 7, "loop major");
    let name = |n: &Path| n.file_name().unwrap().to_str().unwrap().to_owned();
    let sys_ro = |n: &Path| std::fs::read_to_string(format!("/sys/block/{}/ro", name(n))).unwrap();
    assert_eq!(sys_ro(&ro.node).trim(), "1");
    assert_eq!(sys_ro(&rw.node).trim(), "0");
    let bound = host.loop_devices();
    assert!(
        bound.contains(&(ro.node.clone(), image.clone())),
        "{bound:?}"
    );
    assert_eq!(ro.physical_device(), format!("7:{:x}", ro.minor));

    // Released once; a second release (or one for another file) does nothing.
    host.release_disk(&image, &ro.node).unwrap();
    host.release_disk(&image, &ro.node).unwrap();
    host.release_disk(Path::new("/elsewhere.img"), &rw.node)
        .unwrap();
    let bound = host.loop_devices();
    assert!(!bound.iter().any(|(n, _)| *n == ro.node), "{bound:?}");
    assert!(
        bound.contains(&(rw.node.clone(), image.clone())),
        "{bound:?}"
    );
    host.release_disk(&image, &rw.node).unwrap();
    assert!(!host.loop_devices().iter().any(|(_, b)| *b == image));
}

#[test]
#[ignore = "needs root and the bridge module: scripts/test runs it (cargo test --tests -- --ignored)"]
fn interfaces_join_bridges_that_exist_or_may_be_created() {
    let (port, peer, bridge) = ("xnthtest0", "xnthtest1", "xnthbr0");
    let _ = Command::new("ip").args(["link", "del", port]).output();
    let _ = Command::new("ip").args(["link", "del", bridge]).output();
    ip(&["link", "add", port, "type", "veth", "peer", "name", peer]);

    let refuse = LinuxDevices::new(false);
    assert!(matches!(
        refuse.attach_interface(port, bridge),
        Err(DeviceError::NoBridge(b)) if b == bridge
    ));
    let host = LinuxDevices::new(true);
    host.attach_interface(port, bridge).unwrap();
    let master = std::fs::read_link(format!("/sys/class/net/{port}/master")).unwrap();
    assert_eq!(master.file_name().unwrap(), bridge);
    // Attaching again is harmless; the bridge is up.
    host.attach_interface(port, bridge).unwrap();
    let flags = std::fs::read_to_string(format!("/sys/class/net/{bridge}/flags")).unwrap();
    assert_eq!(
        u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap() & 1,
        1
    );

    host.detach_interface(port).unwrap();
    assert!(!Path::new(&format!("/sys/class/net/{port}/master")).exists());
    host.detach_interface(port).unwrap();
    ip(&["link", "del", port]);
    ip(&["link", "del", bridge]);
    assert!(!host.interface_exists(port));
}
