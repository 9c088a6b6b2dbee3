#!/bin/bash
# benchmarks/soak-guest.sh — the kernel part of the soak: runs INSIDE User-Mode Linux (as root, nbd.ko loaded),
# booted by `benchmarks/soak.sh --kernel` through tools/uml/uml-run.sh, or called by KernelIT's kernel-steps.sh
# (step soak-churn) inside its own boot.
#
#   soak-guest.sh --out DIR [--jar JAR] [--duration S] [--size SIZE] [--keep N] [--pause S] [--fio-nice N] [--json]
#                 [--self-test]
#
# One server (its own data directory on the guest's tmpfs, Unix socket only), one volume `soak` attached with
# `snapbd attach` (netlink) to the first free /dev/nbdN and filled with random bytes. For --duration seconds:
#   * fio on that raw device (libaio, O_DIRECT, 4 KiB, --verify=crc32c with verify_backlog): 2 jobs randrw 50/50
#     with an fsync (the driver sends NBD_CMD_FLUSH) every 32 writes, 1 job randtrimwrite (BLKDISCARD then
#     write), each job on its own third of the device, at depth 16, at nice --fio-nice;
#   * a churn loop: create soak@sN and checksum it through the server's socket (nbdcopy | sha256sum), the
#     reference; attach the oldest snapshot still kept to the next free /dev/nbdM (read-only in the kernel),
#     read it whole with O_DIRECT (must equal its checksum taken at creation, i.e. unchanged however long the
#     load wrote meanwhile), detach it (the device must be released), and delete the oldest snapshots beyond
#     --keep (default 1: each snapshot is read on the device once fresh and once a cycle old, then deleted);
#   * every 10 s: the server's RSS, RssAnon, threads, fds (/proc) and heap after the last GC (-Xlog:gc).
# Then: remaining snapshots deleted, the volume detached, the server stopped (SIGTERM), `snapbd fsck`, and
# the kernel log read for I/O errors since the start. The files and the report are those of soak.sh
# (samples.csv, churn.tsv, fio.json, soak_clat_hist.*.log, summary.json) through soak-report.py, which adds
# the attach/detach cycles and the kernel I/O errors. The table goes to DIR/report.txt (and stderr); with
# --json the summary is printed on stdout. Exit 0 when every check passed, 1 otherwise, 2 on bad usage.
# --self-test: checks the checks: right after the first snapshot's reference read, 4 x 1 MiB of random bytes
# are written into the volume's data.img behind the server (what a storage bug would do); the run must then
# FAIL: that snapshot no longer reads its checksum on the device (its blocks were shared with the volume).
# (fio's verify_backlog checks a block soon after fio wrote it, so damage elsewhere is the snapshots' to find.)
set -uo pipefail
ROOT=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
SNAPBD=$ROOT/bin/snapbd
OUT="" DURATION=120 SIZE=128M KEEP=1 PAUSE=1 FIO_NICE=10 JSON=0 SELF_TEST=0
while [ $# -gt 0 ]; do
  case $1 in
    --out) OUT=$2; shift 2 ;;
    --jar) export SNAPBD_JAR=$2; shift 2 ;;     # the server jar (bin/snapbd's default otherwise)
    --duration) DURATION=$2; shift 2 ;;
    --size) SIZE=$2; shift 2 ;;
    --keep) KEEP=$2; shift 2 ;;
    --pause) PAUSE=$2; shift 2 ;;
    --fio-nice) FIO_NICE=$2; shift 2 ;;
    --json) JSON=1; shift ;;
    --self-test) SELF_TEST=1; shift ;;
    *) echo "soak-guest: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
[ -n "$OUT" ] || { echo "soak-guest: --out DIR is required" >&2; exit 2; }
[[ $DURATION =~ ^[1-9][0-9]*$ && $KEEP =~ ^[1-9][0-9]*$ && $PAUSE =~ ^[0-9]+$ ]] || { echo "soak-guest: bad --duration/--keep/--pause" >&2; exit 2; }
[[ $SIZE =~ ^[1-9][0-9]*M$ ]] && [ "${SIZE%M}" -ge 24 ] || { echo "soak-guest: --size must be in MiB, at least 24M (e.g. 128M), not '$SIZE'" >&2; exit 2; }
SIZE_MB=${SIZE%M}
[ -b /dev/nbd0 ] || { echo "soak-guest: no /dev/nbd0: run inside the UML guest (tools/uml/uml-run.sh) with nbd.ko loaded" >&2; exit 2; }

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
rm -f "$OUT"/soak_clat_hist.*.log "$OUT"/{churn.tsv,samples.csv,fio.json,fio.stderr,summary.json,report.txt,server.log,gc.log,dmesg-io.txt}
WORK=/run/soak-guest
DATA=$WORK/data
SOCK=$DATA/nbd.sock
rm -rf "$WORK"; mkdir -p "$DATA"
. "$ROOT/tools/uml/guest-java.sh"       # GUEST_CLI_JAVA_OPTS, GUEST_JAVA_OPTS
cli() { SNAPBD_JAVA_OPTS="$GUEST_CLI_JAVA_OPTS" timeout 300 "$SNAPBD" "$@" --data-dir "$DATA"; }
log() { echo "[$(date +%H:%M:%S)] soak-guest: $*" >&2; }
t0=$SECONDS
rec() { printf '%s\t%s\t%s\t%s\t%s\n' "$((SECONDS - t0))" "$1" "$2" "$3" "${4:-}" >>"$OUT/churn.tsv"; }
run() {   # STEP OBJECT COMMAND...: records ok or FAIL (with the command's stderr), returns its status
  local step=$1 obj=$2 err; shift 2
  if err=$("$@" 2>&1 >/dev/null); then rec "$step" "$obj" ok; return 0; fi
  rec "$step" "$obj" FAIL "$(tr '\n\t' '  ' <<<"$err" | cut -c1-300)"; return 1
}
attached() { [ -e "/sys/block/$1/pid" ]; }
# free_device [EXCEPT]: the first nbd device no one has connected (no sysfs pid, size 0).
free_device() {
  local d n
  for d in /sys/block/nbd*; do
    n=${d##*/}
    [ "$n" = "${1:-}" ] && continue
    attached "$n" || [ "$(cat "$d/size")" != 0 ] || { echo "$n"; return 0; }
  done
  return 1
}
alive() {
  local P="$1"
  [ -n "$P" ] && [ -d "/proc/$P" ] || return 1
  # A killed JVM's main thread can be a zombie while its other threads still exit, holding its files (and so the
  # data directory's lock): it is gone only when the zombie is its last thread.
  grep -q '^State:.*Z' "/proc/$P/status" 2>/dev/null || return 0
  [ "$(awk '/^Threads:/ { print $2 }' "/proc/$P/status" 2>/dev/null)" -gt 1 ] 2>/dev/null
}
: >"$OUT/churn.tsv"
# Only kernel messages written from here on count (a scenario before this one may have left some).
MARK="soak-guest: start $$ $(date +%s)"
echo "$MARK" >/dev/kmsg 2>/dev/null || echo "soak-guest: cannot write to /dev/kmsg; the whole kernel log counts" >&2
{
  echo "date:      $(date -u +%Y-%m-%dT%H:%M:%SZ) (guest)"
  echo "guest:     kernel $(uname -r), $(grep -c ^processor /proc/cpuinfo) cpu, $(awk '/MemTotal/ {print $2 " kB"}' /proc/meminfo)"
  echo "settings:  duration ${DURATION}s, soak $SIZE, keep $KEEP, pause ${PAUSE}s, fio nice $FIO_NICE"
} >>"$OUT/machine.txt"

# ---------------------------------------------------------------- server and the attached volume
cat >"$WORK/snapbd.conf" <<EOF
data-dir = $DATA
default-volume = soak
default-volume-size = $SIZE
default-save-size = $((SIZE_MB * 3))M
tcp = none
EOF
log "starting snapbd (data in $DATA)"
SNAPBD_JAVA_OPTS="-XX:+UseSerialGC -Xmx384m -XX:-UsePerfData -Xlog:gc:file=$OUT/gc.log:uptime" \
  setsid "$SNAPBD" serve --config "$WORK/snapbd.conf" >"$OUT/server.log" 2>&1 </dev/null &
SERVER=$!
for _ in $(seq 1 600); do grep -q 'snapbd ready' "$OUT/server.log" && break; alive "$SERVER" || break; sleep 0.5; done
if ! grep -q 'snapbd ready' "$OUT/server.log"; then
  log "the server did not start: $(tail -3 "$OUT/server.log")"; kill -KILL "$SERVER" 2>/dev/null; exit 1
fi
# The server's JVM: setsid execs bin/snapbd, which execs java.
JPID=$SERVER
DEV=$(free_device) || { log "no free nbd device"; exit 1; }
if ! run attach "soak->/dev/$DEV" cli attach soak "/dev/$DEV"; then
  log "attach failed: $(tail -1 "$OUT/churn.tsv")"; kill -TERM "$SERVER"; exit 1
fi
# Random bytes everywhere first, so that every snapshot has content of its own to check (fio needs a while to
# start writing inside UML; a first snapshot of zeros would check little).
if ! err=$(dd if=/dev/urandom of="/dev/$DEV" bs=1M oflag=direct status=none 2>&1) && ! grep -q 'No space left' <<<"$err"; then
  rec prefill "/dev/$DEV" FAIL "$err"
else
  rec prefill "/dev/$DEV" ok "$SIZE of random bytes"
fi
log "soak (${SIZE}) on /dev/$DEV; fio and the churn loop for ${DURATION}s; output in $OUT"

# ---------------------------------------------------------------- sampler (every 10 s)
sample_loop() {
  echo "seconds,rss_kb,rss_anon_kb,threads,fds,heap_after_gc_kb,gcs" >"$OUT/samples.csv"
  while alive "$JPID" && [ ! -e "$WORK/stop-sampler" ]; do
    local st rss anon thr fds heap gcs
    st=$(cat "/proc/$JPID/status" 2>/dev/null) || break
    rss=$(awk '$1 == "VmRSS:" { print $2 }' <<<"$st")
    anon=$(awk '$1 == "RssAnon:" { print $2 }' <<<"$st")
    thr=$(awk '$1 == "Threads:" { print $2 }' <<<"$st")
    fds=$(find "/proc/$JPID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
    # (a here-string: the guest has no /dev/fd for process substitution)
    read -r heap gcs <<<"$(awk 'match($0, /[0-9]+M->[0-9]+M\(/) { s = substr($0, RSTART, RLENGTH); split(s, a, /M->|M\(/); h = a[2] * 1024; n++ }
                                 END { print (n ? h : "-"), n + 0 }' "$OUT/gc.log" 2>/dev/null)"
    [ "$heap" = - ] && heap=""
    echo "$((SECONDS - t0)),$rss,$anon,$thr,$fds,$heap,$gcs" >>"$OUT/samples.csv"
    sleep 10
  done
}
sample_loop & SAMPLER=$!

# ---------------------------------------------------------------- churn loop (attach/detach of snapshots)
churn_loop() {
  local n=0 alive_snaps=() h dev hd tries
  declare -A H=()
  while [ ! -e "$WORK/stop" ]; do
    n=$((n + 1))
    if run create "soak@s$n" cli snapshot create soak "s$n"; then
      alive_snaps+=("s$n")
      # The reference: the snapshot read through the server's socket right after its creation.
      if h=$(set -o pipefail; nbdcopy "nbd+unix:///soak@s$n?socket=$SOCK" - 2>"$WORK/nbdcopy.err" | sha256sum | cut -c1-64); then
        H[s$n]=$h; rec read "soak@s$n" ok "$h"
        if [ "$SELF_TEST" = 1 ] && [ "$n" = 1 ]; then
          # 4 MiB of random bytes into data.img behind the server, over every fio job's region.
          local off
          for off in 0 $((SIZE_MB / 3)) $((SIZE_MB * 2 / 3)) $((SIZE_MB - 1)); do
            dd if=/dev/urandom of="$DATA/volumes/soak/data.img" bs=1M count=1 seek="$off" conv=notrunc status=none
          done
          rec self-test "soak/data.img" ok "4 x 1 MiB of random bytes written behind the server"
        fi
      else
        rec read "soak@s$n" FAIL "$(head -c 300 "$WORK/nbdcopy.err" | tr '\n' ' ')"
      fi
    fi
    # Attach the oldest snapshot kept (perhaps the one just made), read it whole through the driver, detach.
    local s=${alive_snaps[0]:-}
    if [ -n "$s" ] && [ -n "${H[$s]:-}" ]; then
      if ! dev=$(free_device "$DEV"); then
        rec attach "soak@$s" FAIL "no free nbd device"
      elif run attach "soak@$s->/dev/$dev" cli attach "soak@$s" "/dev/$dev"; then
        if [ "$(cat "/sys/block/$dev/ro")" != 1 ]; then rec attach "soak@$s->/dev/$dev" VIOLATION "a snapshot attached writable (/sys/block/$dev/ro = 0)"; fi
        if hd=$(set -o pipefail; dd if="/dev/$dev" bs=1M iflag=direct status=none 2>"$WORK/dd.err" | sha256sum | cut -c1-64); then
          if [ "$hd" = "${H[$s]}" ]; then rec read "/dev/$dev" ok "soak@$s unchanged $hd"
          else rec read "/dev/$dev" VIOLATION "soak@$s reads $hd on /dev/$dev, ${H[$s]} at creation"; fi
        else
          rec read "/dev/$dev" FAIL "$(head -c 300 "$WORK/dd.err" | tr '\n' ' ')"
        fi
        if run detach "/dev/$dev" cli detach "/dev/$dev"; then
          for _ in $(seq 1 50); do attached "$dev" || break; sleep 0.1; done
          if attached "$dev"; then rec detach "/dev/$dev" VIOLATION "still connected 5 s after detach returned"
          else rec released "/dev/$dev" ok "soak@$s"; fi
        fi
      fi
    fi
    while [ "${#alive_snaps[@]}" -gt "$KEEP" ]; do
      # No --force: the detach must have dropped the device's connection, so the snapshot has no client left
      # (the nbdcopy connection of its reference read may still be closing: retried for up to 5 s).
      local v=${alive_snaps[0]} ok=0
      tries=0
      while [ "$tries" -lt 10 ]; do
        if cli snapshot delete soak "$v" >/dev/null 2>"$WORK/delete.err"; then ok=1; break; fi
        grep -qi "client\|connect\|attached" "$WORK/delete.err" || break
        tries=$((tries + 1)); sleep 0.5
      done
      if [ "$ok" = 1 ]; then rec delete "soak@$v" ok "$tries retries"
      else rec delete "soak@$v" FAIL "$(head -c 300 "$WORK/delete.err" | tr '\n' ' ')"; fi
      alive_snaps=("${alive_snaps[@]:1}")
    done
    sleep "$PAUSE"
  done
  for s in "${alive_snaps[@]}"; do run delete "soak@$s" cli snapshot delete soak "$s" || true; done
  rec end - ok "$n cycles"
}
churn_loop 2>"$OUT/churn.stderr" & CHURN=$!

# ---------------------------------------------------------------- the verified load on /dev/$DEV
REGION=$((SIZE_MB / 3))M
# --clocksource=clock_gettime: with fio's default a 600 s run had not ended after 1,150 s (guest clock; no stuck
# request in the kernel log, the churn went on), in a guest booted on a host at load 58: most likely its TSC
# clock, calibrated at its start, ran slow.
(cd "$OUT" && exec nice -n "$FIO_NICE" fio --clocksource=clock_gettime --filename="/dev/$DEV" --ioengine=libaio --direct=1 --iodepth=16 --bs=4k \
  --size="$REGION" --verify=crc32c --verify_backlog=256 --verify_state_save=0 --randrepeat=0 \
  --time_based --runtime="$DURATION" --write_hist_log=soak --log_hist_msec=10000 \
  --output-format=json --output="$OUT/fio.json" \
  --name=trimwrite --rw=randtrimwrite --serialize_overlap=1 --offset=0 \
  --name=rw --rw=randrw --rwmixread=50 --fsync=32 --numjobs=2 --offset="$REGION" --offset_increment="$REGION" \
  >"$OUT/fio.stdout" 2>"$OUT/fio.stderr" </dev/null)
fio_rc=$?
touch "$WORK/stop"
log "fio ended (status $fio_rc); waiting for the churn cycle to finish"
for _ in $(seq 1 1800); do alive "$CHURN" || break; sleep 0.2; done
if alive "$CHURN"; then
  rec end - FAIL "the churn loop did not finish its cycle within 360 s"; kill "$CHURN" 2>/dev/null
fi
wait "$CHURN" 2>/dev/null
touch "$WORK/stop-sampler"; kill "$SAMPLER" 2>/dev/null; wait "$SAMPLER" 2>/dev/null

# ---------------------------------------------------------------- detach, stop, fsck, kernel log
run detach "/dev/$DEV" cli detach "/dev/$DEV"
kill -TERM "$SERVER"
# wait, not a poll of /proc/PID: the server's pool threads use up PIDs fast, so a PID may be reused at once.
( sleep 300; kill -KILL "$SERVER" 2>/dev/null && echo "ERROR soak-guest: the server did not stop within 300 s of SIGTERM (killed)" >>"$OUT/server.log" ) &
WATCHDOG=$!
wait "$SERVER" 2>/dev/null
kill "$WATCHDOG" 2>/dev/null; wait "$WATCHDOG" 2>/dev/null
tail -1 "$OUT/server.log" | grep -q 'volumes closed cleanly' || echo "ERROR soak-guest: the server did not close its volumes cleanly" >>"$OUT/server.log"
fsck_rc=0
SNAPBD_JAVA_OPTS="$GUEST_JAVA_OPTS -Xmx128m" timeout 600 "$SNAPBD" fsck --data-dir "$DATA" >"$OUT/fsck.txt" 2>&1 || fsck_rc=$?
# Kernel I/O errors since the start: failed requests, a connection the driver lost or gave up. ("shutting down
# sockets" alone is not one: the driver logs it after every disconnect, also the ones detach asks for.)
dmesg | awk -v m="$MARK" 'index($0, m) { n = NR; delete l } { l[NR] = $0 } END { for (i = n + 1; i <= NR; i++) print l[i] }' >"$OUT/dmesg.txt"
grep -iE 'I/O error|blk_update_request|critical (medium|target)|nbd[0-9]+: (Connection timed out|Receive control failed|Send control failed|Dead connection|Possible stuck|Unexpected reply|Other side returned error)' \
  "$OUT/dmesg.txt" >"$OUT/dmesg-io.txt"
kio=$(grep -c . "$OUT/dmesg-io.txt")
server_errors=$(grep -cE '\bERROR\b|Exception|[A-Za-z]Error\b|^\s+at [a-z]' "$OUT/server.log")
server_warnings=$(grep -c '\bWARN\b' "$OUT/server.log")
cycles=$(awk -F'\t' '$2 == "released" && $4 == "ok"' "$OUT/churn.tsv" | wc -l)

report=(python3 "$ROOT/benchmarks/soak-report.py" "$OUT" --duration "$DURATION" --fio-status "$fio_rc" --fsck-status "$fsck_rc"
  --server-errors "$server_errors" --server-warnings "$server_warnings" --settle 0
  --attach "tested: snapshots attached read-only to /dev/nbdN by snapbd attach inside User-Mode Linux"
  --kernel-io-errors "$kio" --title "snapbd soak in UML: $DURATION s, fio --verify on /dev/$DEV (3 jobs x depth 16) + attach/detach churn")
[ "$JSON" = 1 ] && report+=(--json)
rc=0
"${report[@]}" 2>"$OUT/report.txt" >"$OUT/report.stdout" || rc=$?
if [ "$JSON" = 1 ]; then cat "$OUT/report.stdout"; else cat "$OUT/report.stdout" >>"$OUT/report.txt"; fi
cat "$OUT/report.txt" >&2
log "attach/detach cycles $cycles, kernel I/O errors $kio, server errors $server_errors, fsck exit $fsck_rc, fio status $fio_rc"
exit "$rc"
