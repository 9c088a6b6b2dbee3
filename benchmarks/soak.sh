#!/usr/bin/env bash
# soak.sh — snapbd under a long verified load while snapshots, clones, restores and LUN state churn.
#
#   benchmarks/soak.sh [--duration S] [--out DIR] [--json] [--size SIZE] [--keep N] [--pause S] [--fio-nice N] [--settle S]
#   benchmarks/soak.sh --kernel [--duration S] [--out DIR] [--json] [--size SIZE] [--keep N] [--pause S] [--fio-nice N]
#                               [--self-test]
#
# --kernel: the attach/detach part, where a kernel nbd driver is: boots one User-Mode Linux guest
# (tools/uml/uml-run.sh, as KernelIT) and runs benchmarks/soak-guest.sh in it (see its header): snapbd inside
# the guest, fio --verify on a volume attached with `snapbd attach` to /dev/nbdN, while snapshots are created,
# attached read-only to the next free /dev/nbdM, read whole (must equal their checksum at creation),
# detached and deleted; samples every 10 s; kernel I/O errors counted. Defaults there: --size 128M, --keep 1,
# --pause 1; no --settle. Output in --out (default benchmarks/target/soak-kernel), the same files and report.
# --self-test (with --kernel): corrupts the volume behind the server mid-run; the run must fail.
# One server, two volumes (docs/snapshots.md: a restore changes production under its writers, so the
# verified volume is never restored):
#   soak   (--size, default 256M) — fio --ioengine=nbd, 16 connections (jobs) at depth 32, each job on its
#          own 1/16 of the volume, --verify=crc32c with verify_backlog: 15 jobs randrw 50/50 with a FLUSH
#          every 32 writes, 1 job randtrimwrite (TRIM then WRITE of each block, serialize_overlap). Every
#          block written is read back and checked while the load runs. It is snapshotted, its snapshots
#          read, cloned and deleted (middle and oldest) under that load, its LUN state read.
#   churn  (half of --size) — its own unverified fio load (2 connections at depth 16: randrw with FLUSH,
#          randtrimwrite), snapshots, restores online (--force, under its load) and offline (load stopped;
#          then production is read back and must equal the snapshot byte for byte).
# Both fio loads run at nice --fio-nice (default 10) so that the churn loop gets CPU on a small machine.
# The churn loop (bin/snapbd through the admin socket, nbdcopy for reads) runs cycles until fio ends:
#   create soak@sN, read it (sha256); LUN state of soak must move forward, soak@sN has a token;
#   clone soak@sN --track --wait, read the clone (must equal soak@sN), lun-state check it, delete it;
#   keep --keep snapshots: delete a middle one or the oldest, re-reading it first (must be unchanged since
#   creation) and its older neighbour afterwards (the merge must not change it);
#   create churn@bN, read it; every other cycle restore churn to the previous one with --force under load;
#   stop churn's load, restore churn@bN, read churn (must equal churn@bN), LUN counter moved; attach
#   churn@bN read-only to /dev/nbd0 and read it there, detach (only if /dev/nbd0 exists: this host's kernel
#   may have no NBD driver, then that step is skipped and the summary says so: --kernel runs the attach/detach
#   churn where there is one); restart the load.
# Every 10 s: the server's RSS, RssAnon, threads, open file descriptors and heap after the last GC
# (-Xlog:gc; no GC is forced during the load). p99 completion latency per 10 s window from fio's
# histogram logs (log_hist_msec=10000), read, write and trim. At the end: every snapshot deleted, --settle s
# (default 75) without load, a stats read, one forced full GC: then the heap after it must be under 64 MiB,
# threads within 16 and fds within 64 of the first sample (back to idle); clean stop, fsck.
# Output in --out (default benchmarks/target/soak): summary.json, latency.csv, samples.csv, soak.svg
# (or soak.png with gnuplot), churn.tsv, server.log, gc.log, fio JSON and logs. Prints a table (--json:
# the summary as JSON on stdout).
# Fails (exit 1) on any fio verify or I/O error, server ERROR or exception in its log, churn violation or
# failed command, fsck problem, or a leak: a sampled value that rose at every sample after the warm-up,
# or whose floor (minimum) in the last third exceeds the first third's by more than its limit
# (threads 16, fds 64, heap after GC 64 MiB, RssAnon 256 MiB). Exit 2: bad usage or a missing tool.
# Needs: both jars (mvn -B -q -DskipTests package), fio with its nbd engine, nbdcopy, jcmd, python3,
# sha256sum; gnuplot is optional (without it the plot is an SVG written by soak-report.py). --kernel needs the
# snapbd jar, user-mode-linux (and gcc on hosts with AMX, for the UML shim), fio, nbdcopy, python3.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh" soak
DURATION=1800
OUT=""
JSON=0
SIZE=256M
KEEP=2
PAUSE=2
FIO_NICE=10
SETTLE=75
KERNEL=0
usage() { bl_header_usage 2 50; }
bl_options usage --duration DURATION --out OUT --json JSON=1 --size SIZE --keep KEEP --pause PAUSE --fio-nice FIO_NICE --settle SETTLE \
  --kernel KERNEL=1 --self-test SELF_TEST=1 -- "$@"
BL_DIE_STATUS=2
if [ "$KERNEL" = 1 ]; then
  # Guest defaults (UML has one slow CPU and the guest's memory holds the volume).
  [[ " $* " == *" --size"* ]] || SIZE=128M
  [[ " $* " == *" --keep"* ]] || KEEP=1
  [[ " $* " == *" --pause"* ]] || PAUSE=1
  bl_positive --duration "$DURATION"
  bl_kernel_need fio nbdcopy python3 sha256sum dmesg
  bl_require_jars snapbd
  OUT=${OUT:-$ROOT/benchmarks/target/soak-kernel}
  case $(readlink -f "$(dirname "$OUT")")/ in /tmp/*) die "--out must not be under /tmp (the guest mounts its own there)" ;; esac
  rm -rf "$OUT"; mkdir -p "$OUT"
  mkdir -p "$ROOT/benchmarks/target"
  WORK=$(mktemp -d "$ROOT/benchmarks/target/soak-kernel-jar.XXXXXX")   # not /tmp: the guest sees the host's files
  trap 'rm -rf "$WORK"' EXIT
  cp "$(bl_snapbd_jar)" "$WORK/snapbd.jar"     # a build running meanwhile cannot replace it under the run
  {
    echo "date:      $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host:      $(nproc) CPUs, $(free -h | awk '/Mem:/{print $2}'), load $(cut -d' ' -f1-3 /proc/loadavg) at start"
    echo "snapbd:    git $(bl_git_rev)"
  } | tee "$OUT/machine.txt" >&2
  guest=(--out "$OUT" --jar "$WORK/snapbd.jar" --duration "$DURATION" --size "$SIZE" --keep "$KEEP" --pause "$PAUSE" --fio-nice "$FIO_NICE")
  [ "$JSON" = 1 ] && guest+=(--json)
  [ "${SELF_TEST:-0}" = 1 ] && guest+=(--self-test)
  log "soak --kernel: booting User-Mode Linux for ${DURATION}s of fio --verify on /dev/nbdN with attach/detach churn; output in $OUT"
  rc=0
  bl_uml_run $((DURATION + 900)) "$OUT" "$BENCH_DIR/soak-guest.sh" "${guest[@]}" || rc=$?
  echo "host:      load $(cut -d' ' -f1-3 /proc/loadavg) at the end" >>"$OUT/machine.txt"
  if [ ! -s "$OUT/report.txt" ]; then
    die "the guest wrote no report (UML exit $rc); see $OUT/guest.log and $OUT/console.log"
  fi
  [ "$JSON" = 1 ] && cat "$OUT/report.stdout"
  cat "$OUT/report.txt" >&2
  exit "$rc"
fi
bl_positive --duration "$DURATION"
bl_positive --keep "$KEEP"
[[ $PAUSE =~ ^[0-9]+$ ]] || die "--pause must be a number of seconds, not '$PAUSE'"
[[ $SETTLE =~ ^[0-9]+$ ]] || die "--settle must be a number of seconds, not '$SETTLE'"
SIZE_BYTES=$(bl_bytes "$SIZE") || die "bad --size '$SIZE'"
[ $((SIZE_BYTES % (32 << 20))) = 0 ] && [ "$SIZE_BYTES" -ge $((64 << 20)) ] || die "--size must be a multiple of 32M, at least 64M"
bl_need_fio_nbd
bl_need nbdcopy jcmd python3 sha256sum
bl_require_jars snapbd bench
BL_DIE_STATUS=1

OUT=${OUT:-$ROOT/benchmarks/target/soak}
rm -rf "$OUT"
mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/soak.XXXXXX")
bl_on_exit "$WORK"
bl_private_jars "$WORK"
DATA=$WORK/data
SOCK=$WORK/nbd.sock
export DATA SOCK OUT WORK SNAPBD KEEP PAUSE FIO_NICE
REGION=$((SIZE_BYTES / 16))
CHURN_SIZE=$((SIZE_BYTES / 2))
# The CLI is a short-lived JVM per command: keep it cheap (it is not what is measured).
CLI_OPTS="-XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Xmx64m"

SAMPLER=""
soak_cleanup() {
  local rc=$?
  [ -n "$SAMPLER" ] && { kill "$SAMPLER" 2>/dev/null || true; wait "$SAMPLER" 2>/dev/null || true; }
  (exit "$rc"); bl_cleanup
}
trap soak_cleanup EXIT; trap 'exit 130' INT; trap 'exit 143' TERM

{
  echo "date:      $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host:      $(nproc) CPUs, $(free -h | awk '/Mem:/{print $2}'), load $(cut -d' ' -f1-3 /proc/loadavg) at start"
  echo "snapbd:    git $(bl_git_rev)"
  echo "settings:  duration ${DURATION}s, soak $SIZE, churn $((CHURN_SIZE >> 20))M, keep $KEEP, pause ${PAUSE}s"
} | tee "$OUT/machine.txt" >&2

mkdir -p "$DATA"
export SNAPBD_JAVA_OPTS="$CLI_OPTS"
"$SNAPBD" volume create soak --size "$SIZE_BYTES" --save-size "$((SIZE_BYTES * 3 >> 20))M" --data-dir "$DATA" >/dev/null
"$SNAPBD" volume create churn --size "$CHURN_SIZE" --save-size "$((CHURN_SIZE * 3 >> 20))M" --data-dir "$DATA" >/dev/null
export SNAPBD_JAVA_OPTS="-Xlog:gc:file=$OUT/gc.log:uptime"
bl_start_snapbd snapbd "$DATA" "$SOCK" "$OUT/server.log"
export SNAPBD_JAVA_OPTS="$CLI_OPTS"
JPID=${BL_PIDS[snapbd]}
[ "$(cat "/proc/$JPID/comm" 2>/dev/null)" = java ] || die "pid $JPID is not the server's JVM ($(cat "/proc/$JPID/comm" 2>/dev/null))"
export JPID

# ---------------------------------------------------------------- sampler (every 10 s)
sample_loop() {
  local t0=$SECONDS
  echo "seconds,rss_kb,rss_anon_kb,threads,fds,heap_after_gc_kb,gcs" >"$OUT/samples.csv"
  while kill -0 "$JPID" 2>/dev/null; do
    local st rss anon thr fds heap gcs
    st=$(cat "/proc/$JPID/status" 2>/dev/null) || break
    rss=$(awk '$1 == "VmRSS:" { print $2 }' <<<"$st")
    anon=$(awk '$1 == "RssAnon:" { print $2 }' <<<"$st")
    thr=$(awk '$1 == "Threads:" { print $2 }' <<<"$st")
    fds=$(find "/proc/$JPID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
    # "[12.345s] GC(7) Pause Young (Normal) (G1 Evacuation Pause) 30M->12M(64M) 3.1ms": the heap after the last GC.
    read -r heap gcs < <(awk 'match($0, /[0-9]+M->[0-9]+M\(/) { s = substr($0, RSTART, RLENGTH); split(s, a, /M->|M\(/); h = a[2] * 1024; n++ }
                               END { print (n ? h : ""), n + 0 }' "$OUT/gc.log" 2>/dev/null)
    echo "$((SECONDS - t0)),$rss,$anon,$thr,$fds,$heap,$gcs" >>"$OUT/samples.csv"
    sleep 10
  done
}

# ---------------------------------------------------------------- churn loop
# churn.tsv: seconds since start, step, object, ok | FAIL (a command failed) | VIOLATION (wrong content or
# state), detail.
churn_loop() {
  set -uo pipefail
  local t0=$SECONDS n=0 bpid="" bjson=""
  declare -A H=() HB=()
  local alive=() balive=() prev_counter=-1
  cli() { "$SNAPBD" "$@" --data-dir "$DATA"; }
  rec() { printf '%s\t%s\t%s\t%s\t%s\n' "$((SECONDS - t0))" "$1" "$2" "$3" "${4:-}" >>"$OUT/churn.tsv"; }
  run() {   # STEP OBJECT COMMAND...: records ok or FAIL (with the command's stderr), returns its status
    local step=$1 obj=$2 err; shift 2
    if err=$("$@" 2>&1 >/dev/null); then rec "$step" "$obj" ok; return 0; fi
    rec "$step" "$obj" FAIL "$(tr '\n\t' '  ' <<<"$err" | cut -c1-300)"; return 1
  }
  hash_of() { nbdcopy "nbd+unix:///$1?socket=$SOCK" - | sha256sum | cut -c1-64; }
  # read OBJECT [EXPECTED]: reads the export, records read (and compares with EXPECTED when given); prints the hash.
  read_check() {
    local h
    if ! h=$(hash_of "$1" 2>"$WORK/nbdcopy.err"); then rec read "$1" FAIL "$(head -c 300 "$WORK/nbdcopy.err" | tr '\n' ' ')"; return 1; fi
    if [ -n "${2:-}" ] && [ "$h" != "$2" ]; then rec read "$1" VIOLATION "content changed: $h, expected $2"; return 1; fi
    rec read "$1" ok "${2:+unchanged }$h"; echo "$h"
  }
  lun_counter() { cli lun-state get "$1" --json | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["counter"], d["token"])'; }
  bload_start() {
    bjson=$OUT/churn-load-$n.json
    nice -n "$FIO_NICE" fio --ioengine=nbd --uri="nbd+unix:///churn?socket=$SOCK" --iodepth=16 --bs=4k --size=$((CHURN_SIZE / 2)) \
      --time_based --runtime=86400 --fsync=32 --randrepeat=0 --output-format=json --output="$bjson" \
      --name=churn-rw --rw=randrw --offset=$((CHURN_SIZE / 2)) \
      --name=churn-trimwrite --rw=randtrimwrite --offset=0 --serialize_overlap=1 >/dev/null 2>"$OUT/churn-load-$n.stderr" </dev/null &
    bpid=$!
  }
  bload_stop() {   # ends the churn volume's load; its fio must have seen no I/O error
    [ -n "$bpid" ] || return 0
    kill -INT "$bpid" 2>/dev/null; wait "$bpid" 2>/dev/null; bpid=""
    python3 - "$bjson" >>"$OUT/churn-load-errors.txt" <<'EOF' || rec load churn FAIL "fio on churn reported an error: $(cat "$OUT/churn-load-errors.txt" | tail -1)"
import json, sys
t = open(sys.argv[1]).read(); d = json.loads(t[t.find("{"):])
bad = [f"{j['jobname']}: error {j['error']}" for j in d["jobs"] if j["error"]]
print("; ".join(bad)) if bad else None
sys.exit(1 if bad else 0)
EOF
  }
  trap 'bload_stop; exit 0' TERM
  run lun-enable soak cli lun-state enable soak
  run lun-enable churn cli lun-state enable churn
  [ -e /dev/nbd0 ] || rec attach /dev/nbd0 skipped "no /dev/nbd0: this kernel has no NBD driver loaded; attach/detach not exercised"
  bload_start
  while [ ! -e "$WORK/stop" ]; do
    n=$((n + 1))
    # ---- the verified volume: snapshot, read, LUN state, clone, delete
    if run create "soak@s$n" cli snapshot create soak "s$n"; then
      alive+=("s$n")
      H[s$n]=$(read_check "soak@s$n") || true
      local lc; if lc=$(lun_counter soak 2>/dev/null); then
        local c=${lc%% *}
        if [ "$c" -le "$prev_counter" ]; then rec lun-get soak VIOLATION "counter $c after $prev_counter (writes ran in between)"
        else rec lun-get soak ok "$lc"; fi
        prev_counter=$c
      else rec lun-get soak FAIL "lun-state get failed"; fi
      if lc=$(lun_counter "soak@s$n" 2>/dev/null) && [[ ${lc#* } == *@* ]]; then rec lun-get "soak@s$n" ok "$lc"
      else rec lun-get "soak@s$n" VIOLATION "no snapshot token: ${lc:-get failed}"; fi
      local cj tok
      if [ -n "${H[s$n]}" ] && cj=$(cli snapshot clone soak "s$n" "c$n" --track --wait --json 2>"$WORK/clone.err"); then
        rec clone "soak@s$n->c$n" ok
        tok=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["lunState"]["token"])' <<<"$cj" 2>/dev/null || true)
        read_check "c$n" "${H[s$n]}" >/dev/null || true
        if [ -n "$tok" ] && cli lun-state check "c$n" --expect "$tok" >/dev/null 2>&1; then rec lun-check "c$n" ok "$tok"
        else rec lun-check "c$n" VIOLATION "clone token '$tok' does not check"; fi
        run volume-delete "c$n" cli volume delete "c$n" --force || true
      elif [ -n "${H[s$n]}" ]; then
        rec clone "soak@s$n->c$n" FAIL "$(head -c 300 "$WORK/clone.err" | tr '\n' ' ')"
        cli volume delete "c$n" --force >/dev/null 2>&1 || true
      fi
    fi
    if [ "${#alive[@]}" -gt "$KEEP" ]; then
      # A middle snapshot every other cycle, else the oldest: re-read it first, its older neighbour after.
      local i=0; [ $((n % 2)) = 0 ] && [ "${#alive[@]}" -ge 3 ] && i=1
      local victim=${alive[$i]} older=""
      [ "$i" -gt 0 ] && older=${alive[$((i - 1))]}
      [ -n "${H[$victim]:-}" ] && { read_check "soak@$victim" "${H[$victim]}" >/dev/null || true; }
      if run delete "soak@$victim" cli snapshot delete soak "$victim" --force; then
        alive=("${alive[@]:0:$i}" "${alive[@]:$((i + 1))}")
        [ -n "$older" ] && [ -n "${H[$older]:-}" ] && { read_check "soak@$older" "${H[$older]}" >/dev/null || true; }
      fi
    fi
    # ---- the churn volume: snapshot, online restore under load, offline verified restore, attach
    if run create "churn@b$n" cli snapshot create churn "b$n"; then
      balive+=("b$n")
      HB[b$n]=$(read_check "churn@b$n") || true
      if [ $((n % 2)) = 1 ] && [ "${#balive[@]}" -ge 2 ]; then
        run restore-online "churn<-b$((n - 1))" cli snapshot restore churn "b$((n - 1))" --force || true
      fi
      bload_stop
      local before=""; before=$(lun_counter churn 2>/dev/null) || true
      local tries=0 ok=0
      # The load's connections close asynchronously: a restore without --force may still see them for a moment.
      while [ "$tries" -lt 20 ]; do
        if cli snapshot restore churn "b$n" >/dev/null 2>"$WORK/restore.err"; then ok=1; break; fi
        grep -qi "attached\|connect" "$WORK/restore.err" || break
        tries=$((tries + 1)); sleep 0.5
      done
      if [ "$ok" = 1 ]; then
        rec restore churn ok "from b$n, $tries retries"
        [ -n "${HB[b$n]}" ] && { read_check churn "${HB[b$n]}" >/dev/null || true; }
        local after=""; after=$(lun_counter churn 2>/dev/null) || true
        if [ -n "$before" ] && [ -n "$after" ] && [ "${after%% *}" -gt "${before%% *}" ]; then rec lun-get churn ok "$before -> $after"
        else rec lun-get churn VIOLATION "restore did not move the counter: '$before' -> '$after'"; fi
      else
        rec restore churn FAIL "$(head -c 300 "$WORK/restore.err" | tr '\n' ' ')"
      fi
      if [ -e /dev/nbd0 ] && [ -n "${HB[b$n]}" ]; then
        if run attach "churn@b$n" cli attach "churn@b$n" /dev/nbd0 --read-only; then
          local dh; dh=$(sha256sum </dev/nbd0 | cut -c1-64)
          if [ "$dh" = "${HB[b$n]}" ]; then rec read /dev/nbd0 ok "unchanged $dh"; else rec read /dev/nbd0 VIOLATION "content $dh, expected ${HB[b$n]}"; fi
          run detach /dev/nbd0 cli detach /dev/nbd0 || true
        fi
      fi
      bload_start
    fi
    while [ "${#balive[@]}" -gt "$KEEP" ]; do
      run delete "churn@${balive[0]}" cli snapshot delete churn "${balive[0]}" --force || true
      balive=("${balive[@]:1}")
    done
    sleep "$PAUSE"
  done
  bload_stop
  for s in "${alive[@]}"; do run delete "soak@$s" cli snapshot delete soak "$s" --force || true; done
  for s in "${balive[@]}"; do run delete "churn@$s" cli snapshot delete churn "$s" --force || true; done
  rec end - ok "$n cycles"
}

# ---------------------------------------------------------------- run
: >"$OUT/churn.tsv"
sample_loop & SAMPLER=$!
log "soak: fio on soak (16 connections x depth 32, verify) for ${DURATION}s; churn loop; samples every 10 s; output in $OUT"
(cd "$OUT" && exec nice -n "$FIO_NICE" fio --ioengine=nbd --uri="nbd+unix:///soak?socket=$SOCK" --iodepth=32 --bs=4k --size="$REGION" \
  --verify=crc32c --verify_backlog=1024 --verify_state_save=0 --fsync=32 --randrepeat=0 \
  --time_based --runtime="$DURATION" --write_hist_log=soak --log_hist_msec=10000 \
  --output-format=json --output="$OUT/fio.json" \
  --name=trimwrite --rw=randtrimwrite --serialize_overlap=1 --offset=0 \
  --name=rw --rw=randrw --rwmixread=50 --numjobs=15 --offset="$REGION" --offset_increment="$REGION" \
  >"$OUT/fio.stdout" 2>"$OUT/fio.stderr" </dev/null) &
BL_FIO_PID=$!
export CHURN_SIZE
export -f churn_loop
bl_start churn "$OUT/churn.stderr" bash -c churn_loop
fio_rc=0
wait "$BL_FIO_PID" || fio_rc=$?
BL_FIO_PID=""
touch "$WORK/stop"
log "soak: fio ended (status $fio_rc); waiting for the churn cycle to finish"
for _ in $(seq 1200); do kill -0 "${BL_PIDS[churn]}" 2>/dev/null || break; sleep 0.1; done
kill -0 "${BL_PIDS[churn]}" 2>/dev/null && echo -e "$SECONDS\tend\t-\tFAIL\tthe churn loop did not finish its cycle within 120 s" >>"$OUT/churn.tsv"
bl_stop churn
kill "$SAMPLER" 2>/dev/null || true; wait "$SAMPLER" 2>/dev/null || true; SAMPLER=""

# Back to idle: no load for --settle seconds (the sync pool's idle threads end after 60 s), one statistics
# read (which drops the recorders of ended threads), then the heap after a forced full GC, threads and fds.
if [ "$SETTLE" -gt 0 ]; then
  log "soak: no load for ${SETTLE}s, then a stats read and a full GC"
  sleep "$SETTLE"
  "$SNAPBD" stats --json --data-dir "$DATA" >/dev/null 2>&1 || true
fi
jcmd "$JPID" GC.run >/dev/null 2>&1 || true
settled_threads=$(awk '$1 == "Threads:" { print $2 }' "/proc/$JPID/status")
settled_fds=$(find "/proc/$JPID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
jcmd "$JPID" GC.heap_info >"$OUT/heap-final.txt" 2>&1 || true
jcmd "$JPID" GC.class_histogram 2>/dev/null | head -n 25 >"$OUT/heap-histogram-final.txt" || true
# Threads by name (digits folded): what the thread count is made of.
jcmd "$JPID" Thread.print 2>/dev/null | sed -n 's/^"\([^"]*\)".*/\1/p' | sed 's/[0-9][0-9]*/N/g' | sort | uniq -c | sort -rn >"$OUT/threads-final.txt" || true
final_heap_kb=$(awk '/used [0-9]+K/ && !d { for (i = 1; i <= NF; i++) if ($i == "used") { u = $(i + 1) } gsub(/[K,]/, "", u); print u; d = 1 }' "$OUT/heap-final.txt")
bl_stop snapbd
fsck_rc=0
"$SNAPBD" fsck --data-dir "$DATA" >"$OUT/fsck.txt" 2>&1 || fsck_rc=$?
server_errors=$(grep -cE '\bERROR\b|Exception|[A-Za-z]Error\b|^\s+at [a-z]' "$OUT/server.log" || true)
server_warnings=$(grep -c '\bWARN\b' "$OUT/server.log" || true)
attach=tested; [ -e /dev/nbd0 ] || attach="skipped: no /dev/nbd0 (no NBD driver in this kernel; soak.sh --kernel runs it in User-Mode Linux)"

report=(python3 "$BENCH_DIR/soak-report.py" "$OUT" --duration "$DURATION" --fio-status "$fio_rc" --fsck-status "$fsck_rc"
  --server-errors "$server_errors" --server-warnings "$server_warnings" --final-heap-kb "${final_heap_kb:-}" --attach "$attach"
  --settle "$SETTLE" --settled-threads "$settled_threads" --settled-fds "$settled_fds")
[ "$JSON" = 1 ] && report+=(--json)
rc=0
"${report[@]}" || rc=$?
if command -v gnuplot >/dev/null 2>&1; then
  gnuplot -e "set terminal pngcairo size 1000,500; set output '$OUT/soak.png'; set datafile separator ',';
    set key autotitle columnhead; set xlabel 'seconds'; set ylabel 'p99 completion latency (us)';
    plot '$OUT/latency.csv' using 1:2 with linespoints, '' using 1:3 with linespoints" 2>>"$OUT/gnuplot.err" \
    && log "soak: plot $OUT/soak.png" || true
fi
log "soak: results in $OUT (plot: $OUT/soak.svg)"
exit "$rc"
