# What every bed scenario shares (sourced in dom0 as /lib.sh).
# A scenario prints `XENITH-STEP <name> PASS|FAIL` for each step, the
# step's output as `XENITH-LOG <name>: ...` lines, and its figures as
# `XENITH-FIGURE name=value` at the end (finish).

# The XENITH_SCENARIO_* variables tests/xen/run was given.
[ -f /scenario.env ] && . /scenario.env

step() { # name command...
  name=$1; shift
  out=$("$@" 2>&1); rc=$?
  echo "$out" | sed "s/^/XENITH-LOG $name: /"
  if [ $rc -eq 0 ]; then echo "XENITH-STEP $name PASS"; else echo "XENITH-STEP $name FAIL"; fi
  return $rc
}

# Milliseconds since boot (busybox's date has no %N).
now_ms() { awk '{printf "%d", $1 * 1000}' /proc/uptime; }

# Figures are collected and printed at the end (a step's output is captured).
figure() { echo "$1=$2" >> /tmp/figures; }

# xenithd in the background, logging to /tmp/xenithd.log; its pid in
# XENITHD_PID. /etc/xenith/xenith.toml is its configuration.
start_xenithd() {
  mkdir -p /run/xenith /var/lib/xenith /etc/xenith
  [ -f /etc/xenith/xenith.toml ] || : > /etc/xenith/xenith.toml
  RUST_LOG=xenith=debug,info xenithd --config /etc/xenith/xenith.toml --hypervisor xen --xenstore auto \
    --socket /run/xenith/xenith.sock --state-dir /var/lib/xenith >> /tmp/xenithd.log 2>&1 &
  XENITHD_PID=$!
}
wait_socket() {
  i=0
  while [ $i -lt 100 ]; do
    [ -S /run/xenith/xenith.sock ] && xenith host info >/dev/null 2>&1 && return 0
    sleep 0.1; i=$((i + 1))
  done
  echo "xenithd did not come up"; cat /tmp/xenithd.log; return 1
}

# How many triple faults Xen has logged (its console ring holds them all:
# the bed gives it 1 MiB).
triple_faults() { xl dmesg | grep -c "Triple fault"; }

# Stops xenithd and prints the figures.
finish() {
  kill $(pidof xenithd) 2>/dev/null
  [ -f /tmp/figures ] && sed 's/^/XENITH-FIGURE /' /tmp/figures
}
