#!/bin/bash
# The KernelMirrorIT scenario, run inside User-Mode Linux by uml-run.sh (as root, real nbd.ko loaded): a mirrored
# volume (leg 0 = data.img, leg 1 = a file in another directory) on /dev/nbd0 with ext4, snapbd killed with
# SIGKILL while fio writes through the file system, restarted (reconciliation at open), re-attached: the files
# written and synced before the kill verify, e2fsck -fn is clean, and both legs hash the same over the volume.
#
#   kernel-mirror-steps.sh PROJECT-ROOT SNAPBD-JAR
#
# Every step writes one line to $KT_OUT/results.txt (STEP <name> PASS|FAIL <detail>) and its output to
# $KT_OUT/step-<name>.log (tools/uml/guest-steps.sh). Every command that could hang is bounded.
set -u
ROOT="${1:?project root}"
export SNAPBD_JAR="${2:?snapbd jar}"
OUT="${KT_OUT:?}"
RESULTS="$OUT/results.txt"
SNAPBD="$ROOT/bin/snapbd"
WORK=/run/km                                  # guest tmpfs: manifests, mount point, pid file
export SNAPBD_DATA_DIR=/run/snapbd-data       # leg 0 (data.img) in guest memory
LEGDIR=/run/snapbd-leg                        # leg 1: a file leg in another directory
LEG="$LEGDIR/vol.leg"
VOL=mvol
SIZE_MB=128
DATA_IMG="$SNAPBD_DATA_DIR/volumes/$VOL/data.img"
CONF="$WORK/snapbd.conf"
SERVER_LOG="$OUT/server.log"
: > "$RESULTS"
mkdir -p "$WORK" "$LEGDIR" /mnt/mlive

. "$(dirname "${BASH_SOURCE[0]}")/kernel-lib.sh"      # snapbd, start_server, alive, attached, ...; step, fail, must

# gone PID N: waits up to N half-seconds for PID to exit; false if it still runs.
gone() { local i; for i in $(seq 1 "$2"); do alive "$1" || return 0; sleep 0.5; done; return 1; }
make_tree() {
  local d="$1" i
  mkdir -p "$d/a" "$d/b/c"
  for i in $(seq 1 12); do
    head -c $(( (RANDOM % 64 + 1) * 4096 + RANDOM % 4096 )) /dev/urandom > "$d/a/f$i"
    head -c $(( RANDOM % 20000 + 1 )) /dev/urandom > "$d/b/c/g$i"
  done
  head -c $((4 << 20)) /dev/urandom > "$d/big"
}
manifest() { (cd "$1" && find . -type f ! -path './lost+found/*' ! -name 'load*' | LC_ALL=C sort | xargs sha256sum); }
# legs_hash: sha256 of data.img and of the leg over the volume's size, "A B"
legs_hash() {
  local a b
  a=$(head -c $((SIZE_MB << 20)) "$DATA_IMG" | sha256sum | cut -c1-64)
  b=$(head -c $((SIZE_MB << 20)) "$LEG" | sha256sum | cut -c1-64)
  echo "$a $b"
}
mirror_json() { snapbd mirror status "$VOL" --json; }
# json_num KEY: the first "KEY" : N in stdin
json_num() { grep -o "\"$1\" : [0-9]*" | head -1 | grep -o '[0-9]*$'; }

# ---- steps ---------------------------------------------------------------------------------------------

boot() {
  grep -q '^nbd ' /proc/modules || fail "nbd.ko is not loaded: $(cat "$OUT/guest.log")"
  [ -b /dev/nbd0 ] || fail "/dev/nbd0 does not exist"
  say "kernel $(uname -r), nbd.ko loaded"
}

create_serve_attach() {
  rm -rf "$SNAPBD_DATA_DIR" "$LEG" "$LEG.tags"
  printf 'tcp = none\nwarm-up = off\n' > "$CONF"     # the copy-on-write warm-up takes ~15 s under UML
  must snapbd volume create "$VOL" --size ${SIZE_MB}M --save-size 32M --mirror "$LEG"
  [ -f "$LEG" ] && [ -f "$LEG.tags" ] || fail "volume create --mirror made no leg file and table in $LEGDIR: $(ls -l "$LEGDIR")"
  start_server
  must snapbd attach "$VOL" /dev/nbd0
  attached /dev/nbd0 || fail "/sys/block/nbd0/pid missing after attach"
  mirror_json > "$WORK/st0.json" || fail "mirror status failed"
  [ "$(grep -c '"state" : "in-sync"' "$WORK/st0.json")" -eq 2 ] || fail "not two in-sync legs: $(cat "$WORK/st0.json")"
  say "mirrored volume $VOL ($SIZE_MB MiB, leg 1 $LEG) served and attached as /dev/nbd0, both legs in sync"
}

mkfs_mount_write() {
  must mkfs.ext4 -q -F -b 4096 /dev/nbd0
  must mount /dev/nbd0 /mnt/mlive
  tree_synced /mnt/mlive "$WORK/tree.manifest"
  say "ext4 on /dev/nbd0, $(wc -l < "$WORK/tree.manifest") files written, synced, read back through the driver"
}

kill_under_load() {
  local p; p=$(server_pid)
  alive "$p" || fail "no server running"
  # Random 4k writes through ext4 (direct I/O, depth 16): the file system and both legs are busy at the kill.
  timeout 300 fio --name=load --directory=/mnt/mlive --size=32M --rw=randwrite --bs=4k --ioengine=libaio \
    --iodepth=16 --direct=1 --time_based --runtime=240 --randrepeat=0 --output="$WORK/fio-load.txt" \
    > /dev/null 2>&1 &
  local fio=$!
  local w0 w1 i
  # Wait until the load runs (writes completed by /dev/nbd0 move: field 5 of its stat), then a little more, at random.
  w0=$(awk '{ print $5 }' /sys/block/nbd0/stat)
  for i in $(seq 1 240); do
    sleep 0.5
    w1=$(awk '{ print $5 }' /sys/block/nbd0/stat)
    [ "$w1" -ge $((w0 + 200)) ] && break
    alive "$fio" || fail "fio ended before the kill: $(cat "$WORK/fio-load.txt")"
  done
  [ "$w1" -ge $((w0 + 200)) ] || fail "the load did not start: /dev/nbd0 writes $w0 -> $w1"
  sleep "$((RANDOM % 3)).$((RANDOM % 10))"
  alive "$fio" || fail "fio ended before the kill: $(cat "$WORK/fio-load.txt")"
  echo "+ kill -KILL $p (fio running, /dev/nbd0 writes $w0 -> $w1 and more)"
  kill -KILL "$p"
  # (checked inside the loop: once gone, its pid may be reused at once in the guest)
  gone "$p" 60 || fail "the server survived SIGKILL"
  rm -f "$WORK/server.pid"
  # The device's connection is gone, but without a timeout the driver holds the requests in flight until the
  # device is disconnected: disconnect first, which fails them (fio ends with I/O errors), then unmount.
  # The mounted file system holds the device open, so it is released only after the unmount.
  must timeout 120 nbd-client -d /dev/nbd0
  gone "$fio" 120 || fail "fio did not end after the device was disconnected"
  for _ in 1 2 3 4 5; do umount /mnt/mlive && break; sleep 1; done
  mountpoint -q /mnt/mlive && fail "cannot unmount /mnt/mlive after the kill"
  for _ in $(seq 1 100); do attached /dev/nbd0 || break; sleep 0.2; done
  attached /dev/nbd0 && fail "/dev/nbd0 still attached after nbd-client -d and the unmount"
  say "snapbd killed (SIGKILL) under fio randwrite on ext4 after $((w1 - w0))+ device writes; file system unmounted, /dev/nbd0 released"
}

restart_reconcile() {
  start_server
  grep -q "volume $VOL: mirror legs reconciled after an unclean stop" "$SERVER_LOG" \
    || fail "no reconciliation at open in the server log: $(tail -5 "$SERVER_LOG")"
  mirror_json > "$WORK/st1.json" || fail "mirror status failed"
  grep -q '"atOpen" : true' "$WORK/st1.json" || fail "mirror status shows no reconciliation at open: $(cat "$WORK/st1.json")"
  [ "$(grep -c '"state" : "in-sync"' "$WORK/st1.json")" -eq 2 ] || fail "legs not in sync after the restart: $(cat "$WORK/st1.json")"
  local copied; copied=$(tr -d '\n' < "$WORK/st1.json" | grep -o '"lastReconciliation" : {[^}]*}' | json_num bytesCopied)
  # No client has written since the restart: the legs are what reconciliation left.
  set -- $(legs_hash)
  [ "$1" = "$2" ] || fail "the legs differ after reconciliation: data.img $1, leg $2"
  say "restarted: reconciled at open (bytes copied ${copied:-?}), both legs in sync and identical (sha256 ${1:0:16}…)"
}

reattach_verify() {
  must snapbd attach "$VOL" /dev/nbd0
  must mount /dev/nbd0 /mnt/mlive
  drop_caches
  check_manifest /mnt/mlive "$WORK/tree.manifest" || fail "files written and synced before the kill do not verify"
  must umount /mnt/mlive
  must e2fsck -fn /dev/nbd0
  say "re-attached; the journal replayed at mount, $(wc -l < "$WORK/tree.manifest") files verify, e2fsck -fn clean"
}

stop_legs_identical() {
  must snapbd detach /dev/nbd0
  local p; p=$(server_pid)
  kill -TERM "$p"
  gone "$p" 600 || { kill -KILL "$p"; fail "the server did not stop within 300 s of SIGTERM"; }
  rm -f "$WORK/server.pid"
  tail -1 "$SERVER_LOG" | grep -q 'volumes closed cleanly' || fail "the server did not stop cleanly: $(tail -3 "$SERVER_LOG")"
  set -- $(legs_hash)
  [ "$1" = "$2" ] || fail "the legs differ after the clean stop: data.img $1, leg $2"
  must snapbd fsck "$VOL"
  say "stopped cleanly; data.img and the leg hash the same over $SIZE_MB MiB; fsck clean"
}

step boot boot
step create-serve-attach create_serve_attach
step mkfs-mount-write mkfs_mount_write
step kill-under-load kill_under_load
step restart-reconcile restart_reconcile
step reattach-verify reattach_verify
step stop-legs-identical stop_legs_identical
# Leave nothing behind if a step failed half-way.
umount /mnt/mlive 2>/dev/null
attached /dev/nbd0 && timeout 60 nbd-client -d /dev/nbd0 >/dev/null 2>&1
alive "$(server_pid)" && kill -TERM "$(server_pid)"
for _ in $(seq 1 120); do alive "$(server_pid)" || break; sleep 0.5; done
echo "END" >> "$RESULTS"
exit 0
