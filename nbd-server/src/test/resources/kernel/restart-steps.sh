#!/bin/bash
# The KernelRestartIT scenario (issue 28), run inside User-Mode Linux by uml-run.sh (as root, real nbd.ko):
# /dev/nbd0 attached by snapbd through netlink stays mounted while the server is killed (kill -9) or restarted
# (keep-devices marker + SIGTERM): the kernel queues the I/O, the new server reconnects the device
# (NBD_CMD_RECONFIGURE) before it reports ready, fio --verify sees no error, no I/O error reaches the kernel log,
# e2fsck is clean. Then a server that stays down past a short dead-connection timeout: I/O errors reach the file
# system and the next start does not resurrect the device.
#
#   restart-steps.sh PROJECT-ROOT SNAPBD-JAR
#
# One line per step in $KT_OUT/results.txt (STEP name PASS|FAIL detail), each step's output in step-NAME.log.
set -u
ROOT="${1:?project root}"
export SNAPBD_JAR="${2:?snapbd jar}"
OUT="${KT_OUT:?}"
RESULTS="$OUT/results.txt"
SNAPBD="$ROOT/bin/snapbd"
WORK=/run/kt
export SNAPBD_DATA_DIR=/run/snapbd-data
RECORD="$SNAPBD_DATA_DIR/attachments/nbd0.attach"
# The fio files, laid out once in setup: the runs across the restarts then only do direct random writes.
FIO_FILES="--directory=/mnt/live --size=16M --nrfiles=2 --filename_format=io.\$filenum"
CONF="$WORK/snapbd.conf"
SERVER_LOG="$OUT/server.log"
. "$ROOT/tools/uml/guest-java.sh"       # GUEST_CLI_JAVA_OPTS, GUEST_JAVA_OPTS
SERVER_JAVA_OPTS="$GUEST_JAVA_OPTS -Xmx384m"
: > "$RESULTS"
mkdir -p "$WORK" /mnt/live

. "$ROOT/tools/uml/guest-steps.sh"      # step, fail, must, bounded
say() { echo "$*"; }
snapbd() {
  local opts="$GUEST_CLI_JAVA_OPTS"
  case "$1" in fsck|volume) opts="$GUEST_JAVA_OPTS -Xmx256m" ;; esac
  SNAPBD_JAVA_OPTS="$opts" timeout 300 "$SNAPBD" "$@"
}
server_pid() { cat "$WORK/server.pid" 2>/dev/null; }
alive() {
  local P="$1"
  [ -n "$P" ] && [ -d "/proc/$P" ] || return 1
  # A killed JVM's main thread can be a zombie while its other threads still exit, holding its files (and so the
  # data directory's lock): it is gone only when the zombie is its last thread.
  grep -q '^State:.*Z' "/proc/$P/status" 2>/dev/null || return 0
  [ "$(awk '/^Threads:/ { print $2 }' "/proc/$P/status" 2>/dev/null)" -gt 1 ] 2>/dev/null
}
ready_count() { grep -c 'snapbd ready' "$SERVER_LOG" 2>/dev/null || true; }
start_server() {
  local before; before=$(ready_count); before=${before:-0}
  echo "+ snapbd serve --config $CONF"
  SNAPBD_JAVA_OPTS="$SERVER_JAVA_OPTS" setsid "$SNAPBD" serve --config "$CONF" >> "$SERVER_LOG" 2>&1 < /dev/null &
  echo $! > "$WORK/server.pid"
  for _ in $(seq 1 600); do
    [ "$(ready_count)" -gt "$before" ] && return 0
    alive "$(server_pid)" || { tail -5 "$SERVER_LOG"; fail "the server exited during start-up"; }
    sleep 0.2
  done
  fail "the server was not ready within 120 s"
}
stop_server() {
  local p; p=$(server_pid)
  alive "$p" || fail "no server running"
  echo "+ kill -TERM $p"
  kill -TERM "$p"
  for _ in $(seq 1 600); do alive "$p" || return 0; sleep 0.5; done
  kill -KILL "$p"
  fail "the server did not stop within 300 s of SIGTERM"
}
kill9_server() {
  local p; p=$(server_pid)
  alive "$p" || fail "no server running"
  echo "+ kill -KILL $p"
  kill -KILL "$p"
  for _ in $(seq 1 100); do alive "$p" || return 0; sleep 0.1; done
  fail "the server survived kill -9"
}
attached() { [ -e "/sys/block/$(basename "$1")/pid" ]; }
# io_errors: kernel log lines that say I/O failed on nbd0 or in the file system on it.
io_errors() { dmesg | grep -iE 'I/O error|EXT4-fs error|EXT4-fs \(nbd0\).*(error|abort)|Aborting journal' ; }
# fio_bg NAME [FIO-OPTION...]: rate-limited random writes with crc32c verify on files in /mnt/live, in the
# background, so that the writes go on across a restart (about 25 s of writes, then the verify pass); later options
# win over the defaults.
fio_bg() {
  local name="$1"; shift
  echo "+ fio $name (background) $*"
  rm -f "$WORK/$name.rc"
  ( timeout 600 fio --name="$name" $FIO_FILES --rw=randwrite --bs=4k --ioengine=libaio \
      --iodepth=8 --direct=1 --rate_iops=150 --verify=crc32c --do_verify=1 --verify_fatal=1 --fsync=64 "$@" \
      --output="$WORK/$name.txt" > "$WORK/$name.err" 2>&1; echo $? > "$WORK/$name.rc" ) &
}
# fio_running: wait until fio's direct writes reach nbd0 (fio starts slowly here), so the stop hits I/O in flight.
fio_running() {
  local w0; w0=$(nbd0_writes)
  for _ in $(seq 1 300); do [ "$(nbd0_writes)" -gt $((w0 + 100)) ] && return 0; sleep 0.2; done
  fail "fio's writes do not reach /dev/nbd0"
}
# fio_wait NAME: the steps run in subshells of their own, so the exit status comes through a file.
fio_wait() {
  for _ in $(seq 1 3000); do [ -s "$WORK/$1.rc" ] && break; sleep 0.2; done
  [ -s "$WORK/$1.rc" ] || fail "fio $1 did not finish within 600 s"
  cat "$WORK/$1.txt"
  local rc; rc=$(cat "$WORK/$1.rc")
  # fio's own error lines (a verify failure names the file, offset and what it found) go to stderr, not --output
  [ "$rc" -eq 0 ] || fail "fio $1 exited $rc: $(grep -m3 -iE 'error|bad|verify' "$WORK/$1.err" | tr '\n' ' ')"
  grep -q 'err= 0' "$WORK/$1.txt" || fail "fio $1 reported errors"
}
# lat_max NAME: fio's largest write completion latency (the pause the application saw).
lat_max() { echo "write lat max $(grep -A4 ' write:' "$WORK/$1.txt" | grep -E '^ +lat \(' | head -1 | sed -E 's/.*lat \(([a-z]+)\):.*max= *([0-9.]+[kKmM]?).*/\2 \1/')"; }
# staged_replayed: blocks the restarts wrote again from the overlay files the killed servers left (server log).
staged_replayed() { grep -o 'wrote again [0-9]* block' "$SERVER_LOG" | awk '{ n += $3 } END { print n + 0 }'; }
# nbd0_writes: writes completed on nbd0 (the device serves requests again when it grows).
nbd0_writes() { awk '{ print $5 }' /sys/block/nbd0/stat; }

# ---- steps ---------------------------------------------------------------------------------------------

setup() {
  grep -q '^nbd ' /proc/modules || fail "nbd.ko is not loaded"
  cat > "$CONF" <<EOF
default-volume = vol0
default-volume-size = 192M
default-save-size = 64M
tcp = none
warm-up = off
EOF
  rm -rf "$SNAPBD_DATA_DIR"
  start_server
  must snapbd attach vol0 /dev/nbd0
  snapbd status | grep -q 'netlink' || fail "not attached through netlink: $(snapbd status)"
  [ -f "$RECORD" ] || fail "no attachment record $RECORD after attach"
  must mkfs.ext4 -q -F -b 4096 /dev/nbd0
  must mount /dev/nbd0 /mnt/live
  must timeout 300 fio --name=layout $FIO_FILES --create_only=1 --output="$WORK/layout.txt"
  must sync
  dmesg -C
  say "vol0 on /dev/nbd0 (netlink, dead-connection timeout default 60 s), record $(basename "$RECORD") written, ext4 mounted"
}

kill9_restart() {
  fio_bg kill9
  fio_running
  local w0; w0=$(nbd0_writes)
  kill9_server
  attached /dev/nbd0 || fail "/dev/nbd0 was released when the server died"
  [ -f "$RECORD" ] || fail "the record is gone after kill -9"
  # fsck reads the record while the server is down (the device waits meanwhile)
  snapbd fsck --quick > "$WORK/fsck.txt" 2>&1; rc=$?
  cat "$WORK/fsck.txt"
  grep -q 'attachment records: clean (1)' "$WORK/fsck.txt" || fail "fsck does not check the attachment record (exit $rc)"
  start_server
  grep -q 'reconnected vol0 to /dev/nbd0' "$SERVER_LOG" || fail "the server did not reconnect /dev/nbd0: $(tail -5 "$SERVER_LOG")"
  # READY=1 comes after the reconnection: the log line is before 'snapbd ready'
  awk '/reconnected vol0 to \/dev\/nbd0/ { r = NR } /snapbd ready/ { s = NR } END { exit !(r && s > r) }' "$SERVER_LOG" \
    || fail "snapbd ready was logged before the reconnection"
  snapbd status | grep -q '/dev/nbd0 -> vol0' || fail "status does not list /dev/nbd0 after the restart: $(snapbd status)"
  fio_wait kill9
  io_errors && fail "I/O errors in the kernel log"
  say "kill -9 during fio: device kept, fsck saw the record, new server reconnected it before ready; fio verify: no errors, no I/O error in dmesg (writes on nbd0 $w0 -> $(nbd0_writes); $(lat_max kill9))"
}

# kill9_twice: the same with a FLUSH-heavy workload (fio fsyncs after every write: each one a FLUSH on nbd0) while
# the snapshot vol0@s1 is attached read-only on /dev/nbd1, and snapbd killed twice in a row, the second time while
# the kernel's requests queued during the first gap are still being served: both devices are reconnected each
# time, fio verifies with no error, no I/O error in the kernel log, the snapshot device reads the same throughout.
kill9_twice() {
  must snapbd snapshot create vol0 s1
  must snapbd attach vol0@s1 /dev/nbd1 --read-only
  local snap r0 r1 w0 w1
  snap="$(dd if=/dev/nbd1 bs=1M count=16 iflag=direct status=none | sha256sum)"
  r0=$(grep -c 'reconnected vol0 to /dev/nbd0' "$SERVER_LOG"); r1=$(grep -c 'reconnected vol0@s1 to /dev/nbd1' "$SERVER_LOG")
  fio_bg flushy --fsync=1 --rate_iops=100
  fio_running
  w0=$(nbd0_writes)
  kill9_server
  start_server
  fio_running
  w1=$(nbd0_writes)
  kill9_server
  [ -s "$WORK/flushy.rc" ] && fail "fio ended before the second kill: $(cat "$WORK/flushy.rc")"
  start_server
  [ "$(grep -c 'reconnected vol0 to /dev/nbd0' "$SERVER_LOG")" -eq $((r0 + 2)) ] || fail "/dev/nbd0 was not reconnected at both restarts"
  [ "$(grep -c 'reconnected vol0@s1 to /dev/nbd1' "$SERVER_LOG")" -eq $((r1 + 2)) ] || fail "/dev/nbd1 (vol0@s1) was not reconnected at both restarts"
  fio_wait flushy
  io_errors && fail "I/O errors in the kernel log"
  [ "$(dd if=/dev/nbd1 bs=1M count=16 iflag=direct status=none | sha256sum)" = "$snap" ] || fail "the snapshot device reads differently after the restarts"
  must snapbd detach /dev/nbd1
  say "kill -9 twice in a row during fio with an fsync after every write, vol0@s1 attached read-only on /dev/nbd1: both devices kept and reconnected at each restart; fio verify: no errors; no I/O error in dmesg; the snapshot device read the same (writes on nbd0 $w0 -> $w1 -> $(nbd0_writes); $(lat_max flushy); $(staged_replayed) block(s) acknowledged while staged behind copy-on-write written again from overlay files so far)"
}

keep_restart() {
  local r0; r0=$(grep -c 'reconnected vol0 to /dev/nbd0' "$SERVER_LOG")
  fio_bg keep
  fio_running
  touch "$SNAPBD_DATA_DIR/keep-devices"
  stop_server
  grep -q 'keeping /dev/nbd0 (vol0) connected for the restart' "$SERVER_LOG" || fail "no 'keeping' line: $(tail -5 "$SERVER_LOG")"
  attached /dev/nbd0 || fail "/dev/nbd0 released by a stop with the keep-devices marker"
  [ -f "$RECORD" ] || fail "the record is gone after a keep-devices stop"
  [ -e "$SNAPBD_DATA_DIR/keep-devices" ] && fail "the marker was not consumed"
  tail -1 "$SERVER_LOG" | grep -q 'volumes closed cleanly' || fail "volumes not closed cleanly: $(tail -3 "$SERVER_LOG")"
  start_server
  [ "$(grep -c 'reconnected vol0 to /dev/nbd0' "$SERVER_LOG")" -eq $((r0 + 1)) ] || fail "the restart did not reconnect /dev/nbd0"
  fio_wait keep
  io_errors && fail "I/O errors in the kernel log"
  say "clean restart with the keep-devices marker during fio: device kept, reconnected; fio verify: no errors; no I/O error in dmesg ($(lat_max keep))"
}

e2fsck_clean() {
  must umount /mnt/live
  must e2fsck -fn /dev/nbd0
  io_errors && fail "I/O errors in the kernel log"
  say "e2fsck -fn clean on /dev/nbd0 after kill -9 and a restart"
}

stop_for_good() {
  stop_server
  attached /dev/nbd0 && fail "/dev/nbd0 still connected after a stop for good"
  [ -f "$RECORD" ] && fail "the record is still there after a stop for good"
  grep -q 'detached vol0 from /dev/nbd0 (server stopping; flushed)' "$SERVER_LOG" || fail "no clean detach in the log"
  say "SIGTERM without the marker: /dev/nbd0 flushed, disconnected, released; record removed"
}

given_up() {
  echo "dead-connection-timeout = 4" >> "$CONF"
  start_server
  must snapbd attach vol0 /dev/nbd0
  must mount /dev/nbd0 /mnt/live
  dmesg -C
  kill9_server
  sleep 6
  # past the timeout: writing fails (the kernel gave the device up)
  dd if=/dev/urandom of=/mnt/live/late bs=4k count=16 oflag=direct conv=fsync 2>"$WORK/dd.err" && fail "a write after the dead-connection timeout succeeded"
  cat "$WORK/dd.err"
  io_errors || fail "no I/O error in the kernel log after the timeout"
  [ -f "$RECORD" ] || fail "the record is gone before the restart"
  start_server
  grep -q '/dev/nbd0 (vol0) not reconnected' "$SERVER_LOG" || fail "the server did not say it left /dev/nbd0: $(tail -5 "$SERVER_LOG")"
  grep -q 'reconnected vol0 to /dev/nbd0' <(tail -n +"$(grep -n 'not reconnected' "$SERVER_LOG" | tail -1 | cut -d: -f1)" "$SERVER_LOG") \
    && fail "the device was resurrected"
  [ -f "$RECORD" ] && fail "the record was kept"
  snapbd status | grep -q '/dev/nbd0' && fail "status lists /dev/nbd0"
  dd if=/dev/nbd0 of=/dev/null bs=4k count=1 iflag=direct 2>/dev/null && fail "/dev/nbd0 reads again"
  umount -l /mnt/live
  for _ in $(seq 1 50); do attached /dev/nbd0 || break; sleep 0.1; done
  say "down past a 4 s dead-connection timeout: I/O errors reached the fs ($(io_errors | head -1 | cut -c1-80)); the next start dropped the record, did not resurrect /dev/nbd0"
}

step setup setup
step kill9-restart kill9_restart
step kill9-twice kill9_twice
step keep-restart keep_restart
step e2fsck e2fsck_clean
step stop-for-good stop_for_good
step given-up given_up
umount -l /mnt/live 2>/dev/null
alive "$(server_pid)" && kill -TERM "$(server_pid)"
for _ in $(seq 1 120); do alive "$(server_pid)" || break; sleep 0.5; done
echo "END" >> "$RESULTS"
exit 0
