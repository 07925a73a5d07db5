//! Guest devices' host side on Linux (a Xen dom0): loop devices through
//! /dev/loop-control and LOOP_CONFIGURE, interfaces and bridges through the
//! classic ioctls (what `losetup`, `ip link set up` and `brctl` use), and
//! sysfs to look. All the unsafe code of this module is in `sys`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::{DeviceError, DeviceHost, DiskBacking, InterfaceInfo};

const SYS_NET: &str = "/sys/class/net";

/// The real host's devices.
#[derive(Debug)]
pub struct LinuxDevices {
    create_bridges: bool,
}

impl LinuxDevices {
    pub fn new(create_bridges: bool) -> Self {
        Self { create_bridges }
    }
}

fn bad_disk(path: &Path, reason: impl Into<String>) -> DeviceError {
    DeviceError::BadDisk {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// A device number's major and minor.
fn major_minor(rdev: u64) -> (u32, u32) {
    (
        u32::try_from(nix::sys::stat::major(rdev)).unwrap_or(u32::MAX),
        u32::try_from(nix::sys::stat::minor(rdev)).unwrap_or(u32::MAX),
    )
}

/// The bridge interface `name` is attached to, if any.
fn bridge_of(name: &str) -> Option<String> {
    let master = std::fs::read_link(Path::new(SYS_NET).join(name).join("master")).ok()?;
    master.file_name()?.to_str().map(str::to_owned)
}

fn rdev_of(node: &Path) -> io::Result<(u32, u32)> {
    Ok(major_minor(std::fs::metadata(node)?.rdev()))
}

/// How many times a free loop device is asked for when another process
/// takes the one offered first.
const LOOP_ATTEMPTS: usize = 8;

impl LinuxDevices {
    fn attach_file(&self, path: &Path, read_only: bool) -> Result<DiskBacking, DeviceError> {
        let backing = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(|e| bad_disk(path, format!("cannot open: {e}")))?;
        let control = File::open("/dev/loop-control").map_err(|e| {
            DeviceError::host("open /dev/loop-control (is the loop module loaded?)", e)
        })?;
        let mut last = None;
        for _ in 0..LOOP_ATTEMPTS {
            let n = sys::loop_get_free(&control)
                .map_err(|e| DeviceError::host("LOOP_CTL_GET_FREE", e))?;
            let node = PathBuf::from(format!("/dev/loop{n}"));
            let dev = match OpenOptions::new().read(true).write(!read_only).open(&node) {
                Ok(f) => f,
                Err(e) => return Err(DeviceError::host(format!("open {}", node.display()), e)),
            };
            match sys::loop_configure(&dev, &backing, path, read_only) {
                Ok(()) => {
                    let (major, minor) = rdev_of(&node)
                        .map_err(|e| DeviceError::host(format!("stat {}", node.display()), e))?;
                    tracing::debug!(disk = %path.display(), loop_device = %node.display(), read_only, "loop device bound");
                    return Ok(DiskBacking {
                        node,
                        major,
                        minor,
                        loop_device: true,
                    });
                }
                // Someone else bound it between the two calls: another one.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => last = Some(e),
                Err(e) => {
                    return Err(DeviceError::host(
                        format!("bind {} to {}", node.display(), path.display()),
                        e,
                    ))
                }
            }
        }
        Err(DeviceError::host(
            "no free loop device after several tries",
            last.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EBUSY)),
        ))
    }
}

impl DeviceHost for LinuxDevices {
    fn attach_disk(&self, path: &Path, read_only: bool) -> Result<DiskBacking, DeviceError> {
        let meta = std::fs::metadata(path).map_err(|e| bad_disk(path, e.to_string()))?;
        if meta.file_type().is_block_device() {
            let (major, minor) = major_minor(meta.rdev());
            return Ok(DiskBacking {
                node: path.to_owned(),
                major,
                minor,
                loop_device: false,
            });
        }
        if !meta.is_file() {
            return Err(bad_disk(path, "neither a regular file nor a block device"));
        }
        self.attach_file(path, read_only)
    }

    fn release_disk(&self, path: &Path, node: &Path) -> Result<(), DeviceError> {
        if node == path {
            return Ok(());
        }
        let dev = match File::open(node) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(DeviceError::host(format!("open {}", node.display()), e)),
        };
        // Only while it still backs this disk: a loop device freed earlier
        // may be someone else's by now.
        let Some((dev_no, ino)) = sys::loop_backing(&dev).map_err(|e| {
            DeviceError::host(format!("LOOP_GET_STATUS64 on {}", node.display()), e)
        })?
        else {
            return Ok(());
        };
        match std::fs::metadata(path) {
            Ok(m) if m.dev() == dev_no && m.ino() == ino => {}
            _ => {
                tracing::debug!(loop_device = %node.display(), disk = %path.display(), "the loop device backs something else now: left alone");
                return Ok(());
            }
        }
        // A device blkback still holds is marked to go when it is closed.
        sys::loop_clear(&dev)
            .map_err(|e| DeviceError::host(format!("LOOP_CLR_FD on {}", node.display()), e))?;
        tracing::debug!(disk = %path.display(), loop_device = %node.display(), "loop device released");
        Ok(())
    }

    fn interface_exists(&self, name: &str) -> bool {
        Path::new(SYS_NET).join(name).exists()
    }

    fn attach_interface(&self, name: &str, bridge: &str) -> Result<(), DeviceError> {
        let sock = sys::inet_socket().map_err(|e| DeviceError::host("socket", e))?;
        if !Path::new(SYS_NET).join(bridge).join("bridge").exists() {
            if Path::new(SYS_NET).join(bridge).exists() {
                return Err(DeviceError::Host {
                    what: format!("{bridge} is not a bridge"),
                    source: io::Error::from_raw_os_error(libc::EINVAL),
                });
            }
            if !self.create_bridges {
                return Err(DeviceError::NoBridge(bridge.to_owned()));
            }
            match sys::bridge_add(&sock, bridge) {
                Ok(()) => tracing::info!(%bridge, "bridge created"),
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(DeviceError::host(format!("create bridge {bridge}"), e)),
            }
            sys::set_up(&sock, bridge, true)
                .map_err(|e| DeviceError::host(format!("bring {bridge} up"), e))?;
        }
        sys::set_up(&sock, name, true)
            .map_err(|e| DeviceError::host(format!("bring {name} up"), e))?;
        if bridge_of(name).as_deref() == Some(bridge) {
            return Ok(());
        }
        let index = nix::net::if_::if_nametoindex(name)
            .map_err(|e| DeviceError::host(format!("the index of {name}"), e.into()))?;
        sys::bridge_attach(&sock, bridge, index as i32, true)
            .map_err(|e| DeviceError::host(format!("attach {name} to {bridge}"), e))
    }

    fn detach_interface(&self, name: &str) -> Result<(), DeviceError> {
        let Some(bridge) = bridge_of(name) else {
            return Ok(());
        };
        let sock = sys::inet_socket().map_err(|e| DeviceError::host("socket", e))?;
        let Ok(index) = nix::net::if_::if_nametoindex(name) else {
            return Ok(()); // gone meanwhile
        };
        match sys::bridge_attach(&sock, &bridge, index as i32, false) {
            Ok(()) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENODEV | libc::EINVAL)) => {
                return Ok(())
            }
            Err(e) => return Err(DeviceError::host(format!("detach {name} from {bridge}"), e)),
        }
        match sys::set_up(&sock, name, false) {
            Err(e) if e.raw_os_error() != Some(libc::ENODEV) => {
                Err(DeviceError::host(format!("bring {name} down"), e))
            }
            _ => Ok(()),
        }
    }

    fn loop_devices(&self) -> Vec<(PathBuf, PathBuf)> {
        let Ok(dir) = std::fs::read_dir("/sys/block") else {
            return Vec::new();
        };
        let mut out: Vec<_> = dir
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let backing = std::fs::read_to_string(e.path().join("loop/backing_file")).ok()?;
                Some((
                    PathBuf::from(format!("/dev/{name}")),
                    PathBuf::from(backing.trim_end()),
                ))
            })
            .collect();
        out.sort();
        out
    }

    fn vif_interfaces(&self) -> Vec<InterfaceInfo> {
        let Ok(dir) = std::fs::read_dir(SYS_NET) else {
            return Vec::new();
        };
        let mut out: Vec<_> = dir
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                if !name.starts_with("vif") {
                    return None;
                }
                let flags = std::fs::read_to_string(e.path().join("flags")).ok();
                let up = flags
                    .and_then(|f| u32::from_str_radix(f.trim().trim_start_matches("0x"), 16).ok())
                    .is_some_and(|f| f & libc::IFF_UP as u32 != 0);
                let bridge = bridge_of(&name);
                Some(InterfaceInfo { name, up, bridge })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

/// The ioctls, each wrapped safely.
mod sys {
    use std::ffi::CString;
    use std::fs::File;
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::path::Path;

    const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
    const LOOP_GET_STATUS64: libc::c_ulong = 0x4C05;
    const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
    const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
    const LO_FLAGS_READ_ONLY: u32 = 1;
    const LO_NAME_SIZE: usize = 64;
    const SIOCBRADDBR: libc::c_ulong = 0x89a0;
    const SIOCBRADDIF: libc::c_ulong = 0x89a2;
    const SIOCBRDELIF: libc::c_ulong = 0x89a3;

    /// `struct loop_info64` (linux/loop.h).
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct LoopInfo64 {
        lo_device: u64,
        lo_inode: u64,
        lo_rdevice: u64,
        lo_offset: u64,
        lo_sizelimit: u64,
        lo_number: u32,
        lo_encrypt_type: u32,
        lo_encrypt_key_size: u32,
        lo_flags: u32,
        lo_file_name: [u8; LO_NAME_SIZE],
        lo_crypt_name: [u8; LO_NAME_SIZE],
        lo_encrypt_key: [u8; 32],
        lo_init: [u64; 2],
    }

    /// `struct loop_config` (linux/loop.h, LOOP_CONFIGURE since 5.8).
    #[repr(C)]
    struct LoopConfig {
        fd: u32,
        block_size: u32,
        info: LoopInfo64,
        reserved: [u64; 8],
    }

    const _: () = assert!(std::mem::size_of::<LoopInfo64>() == 232);
    const _: () = assert!(std::mem::size_of::<LoopConfig>() == 304);

    fn zeroed_info() -> LoopInfo64 {
        LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: 0,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: 0,
            lo_file_name: [0; LO_NAME_SIZE],
            lo_crypt_name: [0; LO_NAME_SIZE],
            lo_encrypt_key: [0; 32],
            lo_init: [0; 2],
        }
    }

    fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(rc)
        }
    }

    /// The number of a free loop device (made if needed).
    pub fn loop_get_free(control: &File) -> io::Result<u32> {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument; the fd is open.
        let n = check(unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) })?;
        Ok(n as u32)
    }

    /// Binds the loop device `dev` to `backing` (named `path`).
    pub fn loop_configure(
        dev: &File,
        backing: &File,
        path: &Path,
        read_only: bool,
    ) -> io::Result<()> {
        let mut info = zeroed_info();
        if read_only {
            info.lo_flags = LO_FLAGS_READ_ONLY;
        }
        // What `losetup -a` shows (truncated as the kernel keeps it).
        let name = path.as_os_str().as_encoded_bytes();
        let n = name.len().min(LO_NAME_SIZE - 1);
        info.lo_file_name[..n].copy_from_slice(&name[..n]);
        let config = LoopConfig {
            fd: backing.as_raw_fd() as u32,
            block_size: 0,
            info,
            reserved: [0; 8],
        };
        // SAFETY: `config` is a valid struct loop_config that lives across
        // the call; the kernel only reads it. Both fds are open.
        check(unsafe {
            libc::ioctl(
                dev.as_raw_fd(),
                LOOP_CONFIGURE,
                &config as *const LoopConfig,
            )
        })
        .map(drop)
    }

    /// The (st_dev, st_ino) of the file a loop device is bound to, or None
    /// when it is bound to nothing.
    pub fn loop_backing(dev: &File) -> io::Result<Option<(u64, u64)>> {
        let mut info = zeroed_info();
        // SAFETY: `info` is a writable struct loop_info64 the kernel fills.
        match check(unsafe {
            libc::ioctl(
                dev.as_raw_fd(),
                LOOP_GET_STATUS64,
                &mut info as *mut LoopInfo64,
            )
        }) {
            Ok(_) => Ok(Some((info.lo_device, info.lo_inode))),
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Unbinds a loop device (or, while it is open elsewhere, marks it to
    /// be unbound at its last close).
    pub fn loop_clear(dev: &File) -> io::Result<()> {
        // SAFETY: LOOP_CLR_FD takes no pointer; the fd is open.
        match check(unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CLR_FD, 0) }) {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// A socket for the interface ioctls.
    pub fn inet_socket() -> io::Result<OwnedFd> {
        // SAFETY: plain values; the result is checked before use.
        let fd = check(unsafe {
            libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0)
        })?;
        // SAFETY: `fd` was just returned by socket() and is owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    fn ifreq(name: &str) -> io::Result<libc::ifreq> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name:?} is not an interface name"),
            ));
        }
        // SAFETY: ifreq is plain data (a name and a union of plain fields),
        // for which all zeroes is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
            *d = s as libc::c_char;
        }
        Ok(req)
    }

    /// Sets or clears IFF_UP on an interface.
    pub fn set_up(sock: &OwnedFd, name: &str, up: bool) -> io::Result<()> {
        let mut req = ifreq(name)?;
        // SAFETY: `req` is a valid ifreq naming the interface; the kernel
        // fills ifr_flags.
        check(unsafe {
            libc::ioctl(
                sock.as_raw_fd(),
                libc::SIOCGIFFLAGS,
                &mut req as *mut libc::ifreq,
            )
        })?;
        // SAFETY: SIOCGIFFLAGS set the flags member of the union.
        let flags = unsafe { req.ifr_ifru.ifru_flags };
        // IFF_UP is 1: it fits the short the kernel keeps the flags in.
        let iff_up = libc::c_short::try_from(libc::IFF_UP).unwrap_or(1);
        let want = if up { flags | iff_up } else { flags & !iff_up };
        if want == flags {
            return Ok(());
        }
        req.ifr_ifru.ifru_flags = want;
        // SAFETY: as above; the kernel reads the name and the flags.
        check(unsafe {
            libc::ioctl(
                sock.as_raw_fd(),
                libc::SIOCSIFFLAGS,
                &req as *const libc::ifreq,
            )
        })
        .map(drop)
    }

    /// Creates a bridge.
    pub fn bridge_add(sock: &OwnedFd, bridge: &str) -> io::Result<()> {
        let name = CString::new(bridge).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: SIOCBRADDBR reads a NUL-terminated name, which lives
        // across the call.
        check(unsafe { libc::ioctl(sock.as_raw_fd(), SIOCBRADDBR, name.as_ptr()) }).map(drop)
    }

    /// Attaches (or detaches) the interface `index` to (from) `bridge`.
    pub fn bridge_attach(sock: &OwnedFd, bridge: &str, index: i32, attach: bool) -> io::Result<()> {
        let mut req = ifreq(bridge)?;
        req.ifr_ifru.ifru_ifindex = index;
        let op = if attach { SIOCBRADDIF } else { SIOCBRDELIF };
        // SAFETY: `req` names the bridge and carries the port's index; the
        // kernel only reads it.
        check(unsafe { libc::ioctl(sock.as_raw_fd(), op, &req as *const libc::ifreq) }).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_disk_is_the_specs_fault() {
        let devices = LinuxDevices::new(false);
        let e = devices
            .attach_disk(Path::new("/nonexistent/disk.img"), false)
            .unwrap_err();
        assert!(e.is_config(), "{e}");
        assert!(e.to_string().contains("/nonexistent/disk.img"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let e = devices.attach_disk(dir.path(), true).unwrap_err();
        assert!(e.is_config(), "{e}");
    }

    #[test]
    fn interface_names_are_checked_before_any_ioctl() {
        assert!(sys::set_up(
            &sys::inet_socket().unwrap(),
            "a/very/long/interface/name",
            true
        )
        .is_err());
        assert!(!LinuxDevices::new(false).interface_exists("xenith-no-such0"));
    }

    #[test]
    fn releasing_a_disk_used_as_it_is_does_nothing() {
        let devices = LinuxDevices::new(false);
        devices
            .release_disk(Path::new("/dev/vg/disk"), Path::new("/dev/vg/disk"))
            .unwrap();
        // A loop device that does not exist is released already.
        devices
            .release_disk(Path::new("/d.img"), Path::new("/dev/loop-no-such"))
            .unwrap();
    }
}
