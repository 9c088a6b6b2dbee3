#!/bin/bash
# PID 1 inside User-Mode Linux (see uml-run.sh): sets up a minimal system on the host's root file system,
# loads the real nbd driver, runs the guest script with its output in $KT_OUT/guest.log, and powers off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LC_ALL=C TERM=dumb
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs -o mode=755 tmpfs /run        # guest memory: volumes, work files and temp files live here
# Not a tmpfs on /tmp: the project (and this test's output) may itself live under the host's /tmp.
mkdir -p /run/tmp && chmod 1777 /run/tmp
export TMPDIR=/run/tmp
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/shm && mount -t tmpfs tmpfs /dev/shm
hostname "${KT_HOSTNAME:-uml}" 2>/dev/null || true
ip link set lo up 2>/dev/null || busybox ifconfig lo 127.0.0.1 up
{
  echo "guest: kernel $(uname -r), $(grep -c ^processor /proc/cpuinfo) cpu, $(awk '/MemTotal/ {print $2 " kB"}' /proc/meminfo)"
  ko="/usr/lib/uml/modules/$(uname -r)/kernel/drivers/block/nbd.ko"
  if [ -f "$ko" ]; then
    busybox insmod "$ko" nbds_max="${KT_NBDS:-8}" && echo "guest: loaded $ko (nbds_max=${KT_NBDS:-8})"
  else
    echo "guest: $ko is missing (package user-mode-linux)"
  fi
  for i in $(seq 1 50); do [ -b /dev/nbd0 ] && break; sleep 0.1; done
} > "$KT_OUT/guest.log" 2>&1
/bin/bash "$@" >> "$KT_OUT/guest.log" 2>&1 </dev/null
echo $? > "$KT_OUT/guest.rc"
sync
poweroff -f
