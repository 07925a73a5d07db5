//! Device models: the QEMU process an HVM domain needs, started, found
//! again and stopped the way libxl's dm spawn does it (a daemonized QEMU
//! with a pidfile and a QMP socket per domain), and the QMP client that
//! talks to it ([`qmp`]).
//!
//! On the simulated host QEMU runs for real but is started with `-S` on
//! TCG, with no connection to any domain: no guest code runs, and what the
//! toolstack sees (the process, its QMP socket, its run state, its death)
//! is real.
//!
//! On Xen (Debian's qemu-system-xen, `[emulator] qemu_xen`), a PV or PVH
//! domain with qcow2 disks gets QEMU as its disks' backend, as libxl
//! starts it: `-xen-domid N -xen-attach -machine xenpv`. QEMU's xen-bus
//! then serves every `backend/qdisk/N/DEVID` the toolstack writes in
//! state 1 (the image is its `params`, `FORMAT:PATH`). An HVM domain's
//! device model on Xen is libxl's (`-machine xenfv`, docs/hvm.md): the
//! xen-platform PCI device (so PV drivers can unplug the emulated disks
//! and NICs), IDE disks on the VM's disks, the serial line into a log
//! file, QEMU's direct kernel boot when the VM names a kernel.

pub mod qmp;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::hypervisor::HypervisorKind;
use super::DomId;

pub use qmp::{QmpClient, QmpError};

/// How device models are run on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmulatorConfig {
    /// The QEMU binary (a path, or a name looked up in $PATH).
    pub qemu: PathBuf,
    /// Where pidfiles and QMP sockets go.
    pub run_dir: PathBuf,
    /// Which host the device models serve.
    pub host: HypervisorKind,
}

/// A device model start failed.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("cannot run {qemu}{hint}")]
    Spawn {
        qemu: String,
        hint: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{qemu} exited with {status}: {stderr}")]
    Exited {
        qemu: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("cannot read the pidfile {path}")]
    Pidfile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot prepare {path}")]
    RunDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("device models for the {0} hypervisor come with its driver")]
    Unsupported(&'static str),
}

/// One domain's device model files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmPaths {
    pub qmp: PathBuf,
    pub pidfile: PathBuf,
}

/// What QEMU is to a domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmKind {
    /// An HVM guest's device model (its emulated machine).
    Hvm,
    /// The backend of a PV or PVH guest's qcow2 disks (qdisk), no machine.
    Qdisk,
}

/// What a device model is started for.
#[derive(Debug, Clone)]
pub struct DmLaunch {
    pub domid: DomId,
    pub uuid: uuid::Uuid,
    pub name: String,
    pub kind: DmKind,
    /// The guest's memory (QEMU's `-m`, as libxl passes it).
    pub memory_mib: u64,
    /// What an HVM guest's QEMU emulates (unused for a qdisk backend).
    pub hvm: HvmMachine,
}

/// An HVM guest's emulated machine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HvmMachine {
    pub vcpus: u32,
    /// QEMU's direct kernel boot (`-kernel`, `-initrd`, `-append`).
    pub kernel: Option<PathBuf>,
    pub ramdisk: Option<PathBuf>,
    pub cmdline: String,
    /// IDE disks: `(unit 0..3, image, format)`.
    pub ide: Vec<(u32, PathBuf, &'static str)>,
    /// Where the serial line (ttyS0) is written.
    pub serial_log: Option<PathBuf>,
    /// Emulated NICs (e1000), each on a tap QEMU makes, which the
    /// toolstack then puts on the NIC's bridge.
    pub nics: Vec<EmulatedNic>,
}

/// One emulated NIC of an HVM guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmulatedNic {
    pub devid: u32,
    pub mac: String,
    /// The tap QEMU makes ([`emulated_nic_tap`]).
    pub tap: String,
    pub bridge: String,
}

/// The tap QEMU makes for an HVM guest's emulated NIC (libxl's
/// `vifD.N-emu`, at most 15 characters for domids below 32768).
pub fn emulated_nic_tap(domid: DomId, devid: u32) -> String {
    format!("vif{}.{devid}-emu", domid.0)
}

/// A path QEMU takes inside a comma-separated option (commas doubled).
fn opt_path(p: &Path) -> String {
    p.display().to_string().replace(',', ",,")
}

/// libxl's device model arguments for an HVM guest on Xen
/// (`libxl__build_device_model_args_new`), without VNC.
fn xen_hvm_args(launch: &DmLaunch) -> Vec<String> {
    let m = &launch.hvm;
    let mut a: Vec<String> = vec![
        "-xen-domid".into(),
        launch.domid.0.to_string(),
        // QEMU stays when the guest powers off: the toolstack tears down.
        "-no-shutdown".into(),
    ];
    if let Some(log) = &m.serial_log {
        a.push("-chardev".into());
        a.push(format!("file,id=serial0,path={},append=on", opt_path(log)));
        a.push("-serial".into());
        a.push("chardev:serial0".into());
    }
    a.extend(["-boot".into(), "order=cda".into()]);
    if m.nics.is_empty() {
        a.extend(["-net".into(), "none".into()]);
    }
    for EmulatedNic {
        devid, mac, tap, ..
    } in &m.nics
    {
        // No option ROM: nothing boots from the network (and Debian's
        // iPXE ROMs come with another package).
        a.push("-device".into());
        a.push(format!(
            "e1000,id=nic{devid},netdev=net{devid},mac={mac},romfile="
        ));
        a.push("-netdev".into());
        a.push(format!(
            "type=tap,id=net{devid},ifname={tap},script=no,downscript=no"
        ));
    }
    a.extend([
        "-machine".into(),
        "xenfv,suppress-vmdesc=on".into(),
        "-m".into(),
        launch.memory_mib.max(1).to_string(),
    ]);
    if m.vcpus > 1 {
        a.push("-smp".into());
        a.push(format!("{0},maxcpus={0}", m.vcpus));
    }
    if let Some(kernel) = &m.kernel {
        a.push("-kernel".into());
        a.push(kernel.display().to_string());
        if let Some(ramdisk) = &m.ramdisk {
            a.push("-initrd".into());
            a.push(ramdisk.display().to_string());
        }
        if !m.cmdline.is_empty() {
            a.push("-append".into());
            a.push(m.cmdline.clone());
        }
    }
    for (unit, path, format) in &m.ide {
        a.push("-drive".into());
        a.push(format!(
            "file={},if=ide,index={unit},media=disk,format={format},cache=writeback",
            opt_path(path)
        ));
    }
    a
}

impl EmulatorConfig {
    pub fn paths(&self, domid: DomId) -> DmPaths {
        DmPaths {
            qmp: self.run_dir.join(format!("qemu-dm-{}.qmp", domid.0)),
            pidfile: self.run_dir.join(format!("qemu-dm-{}.pid", domid.0)),
        }
    }

    /// QEMU's arguments for this host.
    pub fn args(&self, launch: &DmLaunch) -> Result<Vec<String>, EmulatorError> {
        let paths = self.paths(launch.domid);
        let mut args: Vec<String> = match (self.host, launch.kind) {
            // Stopped before the first instruction (-S), on TCG, tiny: the
            // process and its QMP are real, no guest code runs.
            (HypervisorKind::Sim, DmKind::Hvm) => {
                ["-S", "-machine", "pc,accel=tcg", "-m", "32", "-smp", "1"]
                    .map(str::to_owned)
                    .to_vec()
            }
            // The simulated host's backends serve every disk format.
            (HypervisorKind::Sim, DmKind::Qdisk) => {
                return Err(EmulatorError::Unsupported("sim (qdisk)"))
            }
            // libxl's qdisk backend for a PV/PVH domain: attached to the
            // domain the toolstack made, no emulated machine, no display.
            (HypervisorKind::Xen, DmKind::Qdisk) => vec![
                "-xen-domid".into(),
                launch.domid.0.to_string(),
                "-xen-attach".into(),
                "-machine".into(),
                "xenpv".into(),
                "-nographic".into(),
                "-m".into(),
                launch.memory_mib.max(1).to_string(),
            ],
            (HypervisorKind::Xen, DmKind::Hvm) => xen_hvm_args(launch),
        };
        args.extend([
            "-display".into(),
            "none".into(),
            "-nodefaults".into(),
            "-no-user-config".into(),
            "-name".into(),
            // QEMU splits -name at commas; a VM name has none, but be sure.
            launch.name.replace(',', "_"),
            "-uuid".into(),
            launch.uuid.to_string(),
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", paths.qmp.display()),
            "-pidfile".into(),
            paths.pidfile.display().to_string(),
            "-daemonize".into(),
        ]);
        Ok(args)
    }

    /// Starts the device model; returns its pid once QEMU has daemonized
    /// (its QMP socket listens by then). Blocking: run it off the arbiters.
    pub fn launch(&self, launch: &DmLaunch) -> Result<Pid, EmulatorError> {
        let args = self.args(launch)?;
        let paths = self.paths(launch.domid);
        std::fs::create_dir_all(&self.run_dir).map_err(|source| EmulatorError::RunDir {
            path: self.run_dir.display().to_string(),
            source,
        })?;
        for stale in [&paths.qmp, &paths.pidfile] {
            let _ = std::fs::remove_file(stale);
        }
        let qemu = self.qemu.display().to_string();
        let out = Command::new(&self.qemu)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|source| EmulatorError::Spawn {
                hint: if source.kind() == std::io::ErrorKind::NotFound {
                    match self.host {
                        HypervisorKind::Sim => {
                            " (not found: install qemu-system-x86, or set [emulator] qemu)"
                        }
                        HypervisorKind::Xen => {
                            " (not found: install qemu-system-xen, or set [emulator] qemu_xen)"
                        }
                    }
                } else {
                    ""
                },
                qemu: qemu.clone(),
                source,
            })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(EmulatorError::Exited {
                qemu,
                status: out.status,
                stderr: stderr.trim().chars().take(500).collect(),
            });
        }
        read_pid(&paths.pidfile)?.ok_or_else(|| EmulatorError::Pidfile {
            path: paths.pidfile.display().to_string(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "QEMU wrote no pidfile"),
        })
    }

    /// The pid of this domain's device model, if one runs (its pidfile
    /// names a live process whose command line has our QMP socket: a pid
    /// reused by something else does not count).
    pub fn running(&self, domid: DomId) -> Option<Pid> {
        let paths = self.paths(domid);
        let pid = read_pid(&paths.pidfile).ok().flatten()?;
        is_ours(pid, &paths.qmp).then_some(pid)
    }

    /// Kills the domain's device model if one runs, and removes its files.
    pub fn kill(&self, domid: DomId) {
        if let Some(pid) = self.running(domid) {
            let _ = kill(pid, Signal::SIGKILL);
        }
        let paths = self.paths(domid);
        for path in [&paths.qmp, &paths.pidfile] {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Kills the device models whose domain is not in `live` (left behind
    /// by a daemon that stopped, or by a simulated host that is gone).
    /// Returns the domids whose device model was cleaned up.
    pub fn reap(&self, live: &[DomId]) -> Vec<DomId> {
        let Ok(dir) = std::fs::read_dir(&self.run_dir) else {
            return Vec::new();
        };
        let mut reaped = Vec::new();
        for entry in dir.flatten() {
            let name = entry.file_name();
            let Some(domid) = name
                .to_str()
                .and_then(|n| n.strip_prefix("qemu-dm-"))
                .and_then(|n| n.strip_suffix(".pid"))
                .and_then(|n| n.parse::<u16>().ok())
                .map(DomId)
            else {
                continue;
            };
            if !live.contains(&domid) {
                self.kill(domid);
                reaped.push(domid);
            }
        }
        reaped
    }
}

fn read_pid(path: &Path) -> Result<Option<Pid>, EmulatorError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(s
            .trim()
            .parse::<i32>()
            .ok()
            .filter(|p| *p > 1)
            .map(Pid::from_raw)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(EmulatorError::Pidfile {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Whether `pid` is a live (not zombie) process with `qmp` on its command line.
fn is_ours(pid: Pid, qmp: &Path) -> bool {
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let Ok(cmdline) = std::fs::read(proc_dir.join("cmdline")) else {
        return false;
    };
    let zombie = std::fs::read_to_string(proc_dir.join("stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true);
    let needle = qmp.as_os_str().as_encoded_bytes();
    !zombie && cmdline.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> EmulatorConfig {
        EmulatorConfig {
            qemu: "qemu-system-x86_64".into(),
            run_dir: dir.to_owned(),
            host: HypervisorKind::Sim,
        }
    }

    fn launch(domid: u16, name: &str, kind: DmKind) -> DmLaunch {
        DmLaunch {
            domid: DomId(domid),
            uuid: uuid::Uuid::nil(),
            name: name.into(),
            kind,
            memory_mib: 128,
            hvm: HvmMachine::default(),
        }
    }

    #[test]
    fn sim_arguments_stop_qemu_before_any_guest_code() {
        let c = config(Path::new("/run/x"));
        let launch = launch(7, "a,b", DmKind::Hvm);
        let args = c.args(&launch).unwrap();
        let joined = args.join(" ");
        assert!(args.starts_with(&["-S".to_owned()]), "{joined}");
        assert!(
            joined.contains("-qmp unix:/run/x/qemu-dm-7.qmp,server=on,wait=off"),
            "{joined}"
        );
        assert!(
            joined.contains("-pidfile /run/x/qemu-dm-7.pid -daemonize"),
            "{joined}"
        );
        assert!(joined.contains("-name a_b "), "{joined}");
        assert!(matches!(
            c.args(&DmLaunch {
                kind: DmKind::Qdisk,
                ..launch
            }),
            Err(EmulatorError::Unsupported(_))
        ));
    }

    #[test]
    fn a_qdisk_backend_on_xen_attaches_to_the_domain_as_libxl_starts_it() {
        let c = EmulatorConfig {
            host: HypervisorKind::Xen,
            ..config(Path::new("/run/x"))
        };
        let joined = c.args(&launch(9, "web", DmKind::Qdisk)).unwrap().join(" ");
        assert!(
            joined.starts_with("-xen-domid 9 -xen-attach -machine xenpv -nographic -m 128 "),
            "{joined}"
        );
        for part in [
            "-nodefaults",
            "-no-user-config",
            "-display none",
            "-qmp unix:/run/x/qemu-dm-9.qmp,server=on,wait=off",
            "-pidfile /run/x/qemu-dm-9.pid -daemonize",
        ] {
            assert!(joined.contains(part), "{part} in {joined}");
        }
        assert!(!joined.contains("-S "), "{joined}");
    }

    #[test]
    fn an_hvm_device_model_on_xen_has_libxls_machine() {
        let c = EmulatorConfig {
            host: HypervisorKind::Xen,
            ..config(Path::new("/run/x"))
        };
        let mut l = launch(4, "win", DmKind::Hvm);
        l.hvm = HvmMachine {
            vcpus: 2,
            kernel: Some("/boot/vmlinuz".into()),
            ramdisk: Some("/boot/initrd".into()),
            cmdline: "console=ttyS0 quiet".into(),
            ide: vec![(0, "/srv/a,b.qcow2".into(), "qcow2")],
            serial_log: Some("/var/log/xen/console/serial-win.log".into()),
            nics: vec![EmulatedNic {
                devid: 0,
                mac: "00:16:3e:00:00:01".into(),
                tap: emulated_nic_tap(DomId(4), 0),
                bridge: "xenbr0".into(),
            }],
        };
        let args = c.args(&l).unwrap();
        let joined = args.join(" ");
        assert!(joined.starts_with("-xen-domid 4 -no-shutdown "), "{joined}");
        for part in [
            "-chardev file,id=serial0,path=/var/log/xen/console/serial-win.log,append=on -serial chardev:serial0",
            "-machine xenfv,suppress-vmdesc=on -m 128 -smp 2,maxcpus=2",
            "-kernel /boot/vmlinuz -initrd /boot/initrd",
            "-drive file=/srv/a,,b.qcow2,if=ide,index=0,media=disk,format=qcow2,cache=writeback",
            "-display none",
            "-nodefaults",
            "-qmp unix:/run/x/qemu-dm-4.qmp,server=on,wait=off",
            "-device e1000,id=nic0,netdev=net0,mac=00:16:3e:00:00:01,romfile= -netdev type=tap,id=net0,ifname=vif4.0-emu,script=no,downscript=no",
        ] {
            assert!(joined.contains(part), "{part} in {joined}");
        }
        // The command line is one argument, spaces and all.
        assert!(args.contains(&"console=ttyS0 quiet".to_owned()));
        assert!(
            !joined.contains("-xen-attach") && !joined.contains("-S "),
            "{joined}"
        );
    }

    #[test]
    fn a_pidfile_naming_another_process_does_not_count() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path());
        // Our own pid: alive, but its command line has no QMP socket.
        std::fs::write(c.paths(DomId(3)).pidfile, std::process::id().to_string()).unwrap();
        assert_eq!(c.running(DomId(3)), None);
        assert_eq!(c.reap(&[]), vec![DomId(3)]);
        assert!(!c.paths(DomId(3)).pidfile.exists());
    }

    #[test]
    fn a_missing_qemu_is_named_with_the_package() {
        let dir = tempfile::tempdir().unwrap();
        let c = EmulatorConfig {
            qemu: "/nonexistent/qemu".into(),
            ..config(dir.path())
        };
        let err = c
            .launch(&launch(1, "x", DmKind::Hvm))
            .unwrap_err()
            .to_string();
        assert!(err.contains("install qemu-system-x86"), "{err}");
        let xen = EmulatorConfig {
            host: HypervisorKind::Xen,
            ..c
        };
        let err = xen
            .launch(&launch(1, "x", DmKind::Qdisk))
            .unwrap_err()
            .to_string();
        assert!(err.contains("install qemu-system-xen"), "{err}");
    }
}
