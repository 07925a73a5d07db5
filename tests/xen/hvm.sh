# The HVM steps of tests/xen/scenario (sourced in dom0 as /hvm.sh, after
# the PV and PVH steps: xenithd runs, xenbr0 exists).

# --- An HVM guest: hvmloader, SeaBIOS and QEMU (-machine xenfv) as its
# device model. It boots from the bed's disk image (SeaBIOS runs SYSLINUX
# from the emulated IDE disk, which loads the bed's kernel and initramfs)
# and prints its marker on its serial line (ttyS0), which QEMU writes to a
# log that `vm console` follows. Under TCG such a boot takes minutes (the
# BIOS reads the disk a sector at a time through QEMU): one xenith guest
# serves every step; xl boots HVM guests in the timing rounds (rounds.sh).
# Like PVH guests, HVM guests sometimes triple-fault early in their boot in
# this bed (Xen reboots them): the marker waits allow for a few boots.
cat > /etc/xenith/hvm.toml <<TOML
name = "hvm-xenith"
type = "hvm"
memory_mib = 128
on_crash = "restart"
[[disks]]
path = "/guest/hvm.img"
device = "xvda"
[[nics]]
bridge = "xenbr0"
TOML
hvm_markers() { xenith vm console hvm-xenith --lines 100000 | grep -c XENITH-GUEST-MARKER; }
hvm_domid() { xenith --json vm get hvm-xenith | sed -n 's/.*"domid": *\([0-9]*\).*/\1/p'; }
hvm_qemu() { xenstore-read /local/domain/$(hvm_domid)/image/device-model-pid; }
wait_hvm_marker() { # markers-seen seconds
  i=0
  until [ "$(hvm_markers)" -gt "$1" ]; do
    i=$((i + 1))
    if [ $i -gt $(($2 * 5)) ]; then
      echo "no new marker after $2 s"; xenith vm console hvm-xenith | tail -20; xl dmesg | grep "(d" | tail -20
      tail -20 /tmp/xenithd.log; return 1
    fi
    sleep 0.2
  done
}
hvm_start() {
  xenith vm create /etc/xenith/hvm.toml || return 1
  t0=$(now_ms)
  xenith vm start hvm-xenith || { tail -30 /tmp/xenithd.log; xl dmesg | tail -30; return 1; }
  t1=$(now_ms)
  domid=$(hvm_domid)
  # The emulated NIC's tap (QEMU's) and the PV NIC's vif (netback's), both
  # on xenbr0, before the guest's PV drivers unplug the emulated one.
  for ifc in vif$domid.0-emu vif$domid.0; do
    [ "$(basename "$(readlink /sys/class/net/$ifc/master)")" = xenbr0 ] || { echo "$ifc is not on xenbr0"; ip link; return 1; }
  done
  wait_hvm_marker 0 600 || return 1
  figure xenith_hvm_start_return_ms $((t1 - t0))
  figure xenith_hvm_start_marker_ms $(($(now_ms) - t0))
  domid=$(hvm_domid)
  pid=$(hvm_qemu) || return 1
  cmd=$(tr '\0' ' ' < /proc/$pid/cmdline)
  echo "QEMU: $cmd"
  echo "$cmd" | grep -q -- "-xen-domid $domid -no-shutdown" || return 1
  echo "$cmd" | grep -q -- "-machine xenfv" || return 1
  [ "$(xenstore-read /local/domain/$domid/hvmloader/bios)" = seabios ] || return 1
  xl list -v hvm-xenith
  xenith vm get hvm-xenith | grep -q "type *hvm" || return 1
  xenith vm console hvm-xenith | grep XENITH-GUEST-MARKER
}
step xenith-hvm-start hvm_start

# xenithd killed and started again: the same domain, the same QEMU.
hvm_reattach() {
  domid=$(hvm_domid); pid=$(hvm_qemu)
  # Each step runs in a subshell: the daemon's pid is looked up (an
  # earlier step restarted it).
  kill -9 $(pidof xenithd)
  while pidof xenithd > /dev/null; do sleep 0.1; done
  start_xenithd
  wait_socket || return 1
  xenith vm get hvm-xenith | grep -q "power_state *Running" || { xenith vm get hvm-xenith; return 1; }
  [ "$(hvm_domid)" = "$domid" ] || { echo "domid changed"; return 1; }
  [ "$(hvm_qemu)" = "$pid" ] && [ -d /proc/$pid ] || { echo "QEMU changed or is gone"; return 1; }
  # The emulator actor reconnects to QEMU's QMP socket (not a new QEMU).
  i=0
  until grep "device model ready" /tmp/xenithd.log | tail -1 | grep -q "fresh=false"; do
    i=$((i + 1)); [ $i -gt 100 ] && { echo "the emulator actor did not reattach"; grep "device model" /tmp/xenithd.log | tail -3; return 1; }
    sleep 0.2
  done
  grep "device model ready" /tmp/xenithd.log | tail -1
}
step xenith-hvm-reattach hvm_reattach

# QEMU killed: the domain is crashed, on_crash = restart brings the VM
# back on a new domain with a new QEMU.
hvm_qemu_death() {
  domid=$(hvm_domid); pid=$(hvm_qemu); seen=$(hvm_markers)
  t0=$(now_ms)
  kill -9 "$pid"
  i=0
  until [ -n "$(hvm_domid)" ] && [ "$(hvm_domid)" != "$domid" ]; do
    i=$((i + 1)); [ $i -gt 300 ] && { echo "the VM did not come back"; xenith vm get hvm-xenith; tail -20 /tmp/xenithd.log; return 1; }
    sleep 0.2
  done
  figure xenith_hvm_qemu_death_running_ms $(($(now_ms) - t0))
  new=$(hvm_qemu) || return 1
  [ "$new" != "$pid" ] && [ -d /proc/$new ] || { echo "no new QEMU"; return 1; }
  [ ! -d /proc/$pid ] || return 1
  grep "the device model died" /tmp/xenithd.log | tail -1
  wait_hvm_marker "$seen" 600 || return 1
  figure xenith_hvm_qemu_death_marker_ms $(($(now_ms) - t0))
  ! xenstore-read /local/domain/$domid 2>/dev/null || { echo "the old domain's tree is left"; return 1; }
}
step xenith-hvm-qemu-death hvm_qemu_death

hvm_shutdown() {
  domid=$(hvm_domid); pid=$(hvm_qemu)
  xenith vm shutdown hvm-xenith --timeout 120 || { xenith vm console hvm-xenith | tail -20; tail -20 /tmp/xenithd.log; return 1; }
  xenith vm get hvm-xenith | grep -q "power_state *Halted" || return 1
  ! xl list hvm-xenith 2>/dev/null || return 1
  [ ! -d /proc/$pid ] || { echo "QEMU $pid still runs"; return 1; }
  for t in /local/domain/$domid /local/domain/0/device-model/$domid /libxl/$domid; do
    ! xenstore-read $t 2>/dev/null || { echo "$t is left"; return 1; }
  done
  [ ! -e /run/xenith/qemu-dm-$domid.pid ] || { echo "QEMU's pidfile is left"; return 1; }
  i=0
  while [ -e /sys/class/net/vif$domid.0-emu ] || [ -e /sys/class/net/vif$domid.0 ]; do
    i=$((i + 1)); [ $i -gt 50 ] && { echo "an interface is left"; ip link; return 1; }
    sleep 0.2
  done
  echo "nothing left: no QEMU, no tap or vif, no xenstore tree, no pidfile"
  xenith vm remove hvm-xenith
}
step xenith-hvm-shutdown hvm_shutdown

# A guest without PV drivers (`xen_nopv`; booted by QEMU's direct kernel
# boot, which is quicker): a clean shutdown presses its ACPI power button,
# and the guest powers off.
cat > /etc/xenith/hvm-nopv.toml <<TOML
name = "hvm-nopv"
type = "hvm"
memory_mib = 128
kernel = "/guest/vmlinuz"
ramdisk = "/guest/initrd.gz"
cmdline = "console=ttyS0 quiet xen_nopv"
TOML
hvm_acpi_shutdown() {
  xenith vm create /etc/xenith/hvm-nopv.toml || return 1
  xenith vm start hvm-nopv || { tail -20 /tmp/xenithd.log; return 1; }
  wait_console hvm-nopv XENITH-GUEST-MARKER 600 || { xl dmesg | grep "(d" | tail -10; return 1; }
  domid=$(xenith --json vm get hvm-nopv | sed -n 's/.*"domid": *\([0-9]*\).*/\1/p')
  [ "$(xenstore-read /local/domain/$domid/control/feature-poweroff 2>/dev/null)" != 1 ] || { echo "the guest has PV drivers"; return 1; }
  xenith vm shutdown hvm-nopv --timeout 120 || { xenith vm console hvm-nopv | tail -20; tail -20 /tmp/xenithd.log; return 1; }
  grep "ACPI power button pressed" /tmp/xenithd.log | tail -1 | grep -q "vm=hvm-nopv" || { echo "no power button press logged"; return 1; }
  xenith vm console hvm-nopv | grep -q XENITH-GUEST-POWER-BUTTON || { xenith vm console hvm-nopv | tail -20; return 1; }
  xenith vm get hvm-nopv | grep -q "power_state *Halted" || return 1
  ! xl list hvm-nopv 2>/dev/null || return 1
  xenith vm console hvm-nopv | grep "XENITH-GUEST-POWER-BUTTON\|XENITH-GUEST-POWEROFF"
  xenith vm remove hvm-nopv
}
step xenith-hvm-acpi-shutdown hvm_acpi_shutdown

# UEFI: xl (bios = "ovmf") and xenith (firmware = "uefi") build the same
# guest, and hvmloader loads and invokes Debian's OVMF for both (its lines
# in Xen's console ring, `(dN) Invoking OVMF ...`). Debian 12's OVMF
# (2022.11, OvmfPkgX64) has no Xen platform support: what it does next is
# printed, for xl's guest and xenith's alike, not required (docs/hvm.md).
cat > /etc/xen/hvm-uefi.cfg <<CFG
name = "hvm-uefi-xl"
type = "hvm"
bios = "ovmf"
memory = 128
vcpus = 1
disk = ['format=raw,vdev=hda,access=rw,backendtype=qdisk,target=/guest/hvm.img']
serial = "file:/tmp/hvm-uefi-xl-serial.log"
vnc = 0
vga = "none"
nographic = 1
CFG
cat > /etc/xenith/hvm-uefi.toml <<TOML
name = "hvm-uefi"
type = "hvm"
firmware = "uefi"
memory_mib = 128
[[disks]]
path = "/guest/hvm.img"
device = "xvda"
TOML
# Waits for hvmloader to invoke OVMF in domain $1; prints its lines.
wait_ovmf() { # domid
  i=0
  until xl dmesg | grep -q "(d$1) Invoking OVMF"; do
    i=$((i + 1)); [ $i -gt 600 ] && { echo "hvmloader did not invoke OVMF in d$1 after 120 s"; xl dmesg | grep "(d$1)" | tail -20; return 1; }
    sleep 0.2
  done
  xl dmesg | grep "(d$1)" | grep "Loading\|Invoking\|BIOS map\|Main BIOS"
}
# What OVMF did 30 s after hvmloader invoked it: the guest's serial line and
# its last lines in Xen's console ring.
after_ovmf() { # domid serial-log
  sleep 30
  echo "30 s after OVMF's start, d$1's serial line:"; tail -c 400 "$2" 2>/dev/null; echo
  xl dmesg | grep "(d$1)" | tail -3
}
# One after the other: the guests share the disk image, and QEMU locks it.
hvm_uefi() {
  xl create /etc/xen/hvm-uefi.cfg || return 1
  domid=$(xl domid hvm-uefi-xl)
  wait_ovmf "$domid" || return 1
  after_ovmf "$domid" /tmp/hvm-uefi-xl-serial.log
  xl destroy hvm-uefi-xl || return 1
  xenith vm create /etc/xenith/hvm-uefi.toml || return 1
  xenith vm start hvm-uefi || { tail -20 /tmp/xenithd.log; return 1; }
  domid=$(xenith --json vm get hvm-uefi | sed -n 's/.*"domid": *\([0-9]*\).*/\1/p')
  [ "$(xenstore-read /local/domain/$domid/hvmloader/bios)" = ovmf ] || return 1
  wait_ovmf "$domid" || return 1
  after_ovmf "$domid" /var/log/xen/console/serial-hvm-uefi.log
  xenith vm kill hvm-uefi || return 1
  xenith vm remove hvm-uefi
}
step xenith-hvm-uefi hvm_uefi
