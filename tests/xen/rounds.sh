# The timing rounds (sourced in dom0 as /rounds.sh by tests/xen/timing,
# which scripts/test runs after the main scenario): xl and xenith boot the same
# guest in turn, xl then xenith, ROUNDS times (XENITH_SCENARIO_ROUNDS,
# default 3), for each guest type of XENITH_SCENARIO_KINDS (default
# "pv pvh hvm"). Each boot is timed to the call's return and to the guest's
# marker, both polled the same way: the marker in the console log dom0
# keeps (xenconsoled's guest-NAME.log for PV and PVH, the serial line's log
# QEMU writes for HVM), every 0.1 s. A round's xenith start is broken down
# by step from xenithd's own `step done` lines (its tracing spans).
#
# Figures, per type K: rounds_K_{xl,xenith}_{return,marker}_ms (medians),
# rounds_K_{return,marker}_ratio (xenith/xl), rounds_K_xenith_<step>_ms
# (medians of the phases: create, build, xenstore, actors, unpause, storage,
# total), rounds_K_retried (boots a triple fault spoilt,
# run again). Every boot's figures are in the step's log.

ROUNDS=${XENITH_SCENARIO_ROUNDS:-3}
KINDS=${XENITH_SCENARIO_KINDS:-pv pvh hvm}

# The same guest for xl and xenith, named round-K-xl and round-K: the bed's
# kernel and initramfs, no disk or NIC (HVM: QEMU's direct kernel boot,
# through SeaBIOS; a boot from the bed's disk image takes minutes under
# TCG, and the hvm.sh steps do one). A reboot (what Xen
# makes of an early triple fault) destroys the domain, so that a spoilt
# boot is seen and run again.
round_configs() { # kind
  case $1 in
    pv|pvh)
      cat > /etc/xen/round-$1.cfg <<CFG
name = "round-$1-xl"
type = "$1"
kernel = "/guest/vmlinuz"
ramdisk = "/guest/initrd.gz"
extra = "console=hvc0 quiet"
memory = 128
vcpus = 1
on_poweroff = "destroy"
on_reboot = "destroy"
CFG
      cat > /etc/xenith/round-$1.toml <<TOML
name = "round-$1"
type = "$1"
memory_mib = 128
kernel = "/guest/vmlinuz"
ramdisk = "/guest/initrd.gz"
cmdline = "console=hvc0 quiet"
on_reboot = "destroy"
TOML
      ;;
    hvm)
      cat > /etc/xen/round-hvm.cfg <<CFG
name = "round-hvm-xl"
type = "hvm"
kernel = "/guest/vmlinuz"
ramdisk = "/guest/initrd.gz"
extra = "console=ttyS0 quiet"
memory = 128
vcpus = 1
serial = "file:/tmp/round-hvm-xl-serial.log"
vnc = 0
vga = "none"
nographic = 1
on_poweroff = "destroy"
on_reboot = "destroy"
CFG
      cat > /etc/xenith/round-hvm.toml <<TOML
name = "round-hvm"
type = "hvm"
memory_mib = 128
kernel = "/guest/vmlinuz"
ramdisk = "/guest/initrd.gz"
cmdline = "console=ttyS0 quiet"
on_reboot = "destroy"
TOML
      ;;
  esac
}

# Where the marker of round-K's boot by $2 (xl or xenith) appears.
round_log() { # kind toolstack
  case $1-$2 in
    hvm-xl) echo /tmp/round-hvm-xl-serial.log ;;
    hvm-xenith) echo /var/log/xen/console/serial-round-hvm.log ;;
    *-xl) echo /var/log/xen/console/guest-round-$1-xl.log ;;
    *) echo /var/log/xen/console/guest-round-$1.log ;;
  esac
}
marker_count() { n=$(grep -c XENITH-GUEST-MARKER "$1" 2>/dev/null); echo "${n:-0}"; }

# Whether the boot's domain still exists (a reboot destroyed it).
round_alive() { # kind toolstack
  if [ "$2" = xl ]; then xl list round-$1-xl > /dev/null 2>&1
  else xenith vm get round-$1 | grep "power_state *Running" > /dev/null; fi
}

# One boot: prints "RETURN MARKER" in ms; 2 if a triple fault spoilt it
# (the domain is gone), 1 on any other failure. The domain is destroyed
# afterwards either way.
round_boot() { # kind toolstack seconds
  log=$(round_log $1 $2)
  [ "$2" = xl ] && rm -f "$log"
  seen=$(marker_count "$log")
  faults=$(triple_faults)
  t0=$(now_ms)
  if [ "$2" = xl ]; then
    xl create /etc/xen/round-$1.cfg > /tmp/round-start.out 2>&1 || { cat /tmp/round-start.out; return 1; }
  else
    xenith vm start round-$1 > /tmp/round-start.out 2>&1 || { cat /tmp/round-start.out; tail -20 /tmp/xenithd.log; return 1; }
  fi
  t1=$(now_ms)
  i=0; rc=0
  until [ "$(marker_count "$log")" -gt "$seen" ]; do
    i=$((i + 1))
    # Every 2 s: is the domain still there?
    if [ $((i % 20)) -eq 0 ] && ! round_alive $1 $2; then rc=1; break; fi
    if [ $i -gt $(($3 * 10)) ]; then
      echo "$2: no marker in $log after $3 s"; ls -l /var/log/xen/console; tail -c 1500 "$log" 2>/dev/null
      rc=1; break
    fi
    sleep 0.1
  done
  t2=$(now_ms)
  if [ "$2" = xl ]; then xl destroy round-$1-xl > /dev/null 2>&1
  else xenith vm kill round-$1 > /dev/null 2>&1; fi
  if [ $rc -ne 0 ]; then
    [ "$(triple_faults)" -gt "$faults" ] && return 2
    echo "$2: round-$1 ended before its marker"; xl dmesg | grep "(d" | tail -10
    return 1
  fi
  echo "$((t1 - t0)) $((t2 - t0))"
}

# The median of the numbers on standard input (one a line).
median() {
  sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) exit 1; if (NR % 2) print v[(NR + 1) / 2]; else print int((v[NR / 2] + v[NR / 2 + 1]) / 2) }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "inf" }'; }

# xenithd's `step done` lines of round-K's start in the log since byte $2,
# summed by phase: "phase ms" lines (create, build, xenstore, actors,
# unpause, total). The actors phase is every child the start waits for:
# the device model, the devices, the console and agent.
round_breakdown() { # kind log-offset [each]
  tail -c +$(($2 + 1)) /tmp/xenithd.log | grep "vm=round-$1[ }]" | grep "op=\"\\{0,1\\}start" | awk -v each="${3:-}" '
    /step done/ {
      if (!match($0, /step="[^"]*"/)) next
      step = substr($0, RSTART + 6, RLENGTH - 7)
      if (!match($0, /elapsed_ms=[0-9]+/)) next
      ms = substr($0, RSTART + 11, RLENGTH - 11)
      if (step == "create the domain") p = "create"
      else if (step == "build the domain") p = "build"
      else if (step == "unpause the domain") p = "unpause"
      else if (step ~ /^(write|introduce)/) p = "xenstore"
      else if (step ~ /^(start|plug)/) p = "actors"
      else if (step ~ /VDI/) p = "storage"
      else p = "other"
      sum[p] += ms
      if (each) printf "step %s: %s ms\n", step, ms
    }
    /start done/ { if (match($0, /elapsed_ms=[0-9]+/)) sum["total"] = substr($0, RSTART + 11, RLENGTH - 11) }
    END { for (p in sum) print p, sum[p] }'
}

# The rounds of one guest type, as a step.
rounds_of() { # kind
  k=$1
  case $k in hvm) wait=360 ;; *) wait=120 ;; esac
  round_configs $k
  xenith vm create /etc/xenith/round-$k.toml > /dev/null || return 1
  : > /tmp/rounds-$k; : > /tmp/rounds-$k-steps
  retried=0; n=1
  while [ $n -le "$ROUNDS" ]; do
    for ts in xl xenith; do
      tries=0
      while :; do
        off=$(wc -c < /tmp/xenithd.log)
        out=$(round_boot $k $ts $wait); rc=$?
        [ $rc -eq 2 ] && [ $tries -lt 4 ] || break
        echo "round $n: $ts's guest triple-faulted: the boot once more"
        tries=$((tries + 1)); retried=$((retried + 1))
      done
      [ $rc -eq 0 ] || { echo "round $n: $ts failed: $out"; return 1; }
      echo "round $n: $ts return_ms marker_ms: $out"
      echo "$ts $out" >> /tmp/rounds-$k
      if [ $ts = xenith ]; then
        sleep 0.5   # the log lines of the start, written
        # The first round's steps one by one, then every round's phases.
        [ $n -eq 1 ] && round_breakdown $k "$off" each | grep "^step " | sed "s/^/round 1: xenith /"
        round_breakdown $k "$off" | tee -a /tmp/rounds-$k-steps | sed "s/^/round $n: xenith phase ms: /"
      fi
    done
    n=$((n + 1))
  done
  xenith vm remove round-$k > /dev/null || return 1
  for ts in xl xenith; do
    for what in return:2 marker:3; do
      m=$(awk -v t=$ts -v c=${what#*:} '$1 == t { print $c }' /tmp/rounds-$k | median) || return 1
      figure rounds_${k}_${ts}_${what%:*}_ms "$m"
      eval "${ts}_${what%:*}=$m"
    done
  done
  figure rounds_${k}_return_ratio "$(ratio "$xenith_return" "$xl_return")"
  figure rounds_${k}_marker_ratio "$(ratio "$xenith_marker" "$xl_marker")"
  for p in create build xenstore actors unpause storage total; do
    m=$(awk -v p=$p '$1 == p { print $2 }' /tmp/rounds-$k-steps | median) && figure rounds_${k}_xenith_${p}_ms "$m"
  done
  figure rounds_${k}_retried $retried
  echo "$k: xenith/xl to return $(ratio "$xenith_return" "$xl_return") (goal <= 0.5), to the marker $(ratio "$xenith_marker" "$xl_marker") (goal <= 0.9)"
}

rounds_all() {
  for k in $KINDS; do
    step rounds-$k rounds_of $k
  done
}
