#!/usr/bin/env bash
# Memory under snapshot churn: is a growing server heap sizing or a leak?
#
# One volume (1 GiB, 256 MiB save volume), fio's nbd engine writing and verifying it (4 jobs, crc32c,
# verify_backlog), and meanwhile a snapshot create/delete loop through bin/snapbd (a new snapshot every
# PERIOD seconds, at most KEEP alive, the oldest deleted). Samples every 15 s: RSS and RssAnon of the
# server (/proc/PID/status) and the heap's used/committed size (jcmd GC.heap_info, no GC forced); with
# --fullgc N every Nth sample forces a full GC first (jcmd GC.run: `used` after it is the live heap, but
# the full GC also shrinks the heap, so the default never forces one during the load). The heap after
# every natural GC comes from -Xlog:gc (per minute: lowest used after a GC, highest committed). At the
# end every snapshot is deleted, fio stopped, a full GC forced, and the JVM's native memory summary
# (Native Memory Tracking) printed next to the one at the start. A leak shows as a floor of heap after
# GC, or an NMT category, that keeps rising; heap sizing shows as a flat floor under a committed heap
# that grows (up to the initial heap size, then towards -Xmx).
#
#   benchmarks/memory-churn.sh [--minutes M] [--period S] [--keep N] [--fullgc N] [--out DIR]
#
# Defaults: 10 minutes, a snapshot every 2 s, keep 4, --fullgc 0 (never during the load). The server gets
# SNAPBD_JAVA_OPTS (unset: the launcher's default heap, the one the service uses). Short form: --minutes 1.
# Needs the built jar (mvn -B -q -DskipTests package), fio with its nbd engine, jcmd (the JDK).
set -euo pipefail
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib.sh" memory-churn
minutes=10
period=2
keep=4
fullgc=0
out=""
usage() { bl_header_usage 2 21; }
BL_DIE_STATUS=2
bl_options usage --minutes minutes --period period --keep keep --fullgc fullgc --out out -- "$@"
BL_DIE_STATUS=1
bl_need fio jcmd
bl_require_jars snapbd
out="${out:-$BENCH_DIR/target/memory-churn}"
rm -rf "$out"
mkdir -p "$out"
work=$(mktemp -d "${TMPDIR:-/tmp}/memchurn.XXXXXX")
bl_on_exit "$work"
bl_traps
data="$work/data"
sock="$work/nbd.sock"
server_opts="${SNAPBD_JAVA_OPTS-}"
# The CLI is a short-lived JVM per command: keep it cheap (it is not what is measured).
cli() { SNAPBD_JAVA_OPTS="-XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Xmx64m" "$SNAPBD" "$@" --data-dir "$data"; }
log() { echo "[$(date +%H:%M:%S)] $*"; }

cli volume create vol --size 1G --save-size 256M >/dev/null
SNAPBD_JAVA_OPTS="$server_opts -Xlog:gc:file=$out/gc.log:uptime -XX:NativeMemoryTracking=summary" \
  bl_start_snapbd server "$data" "$sock" "$out/server.log"
bl_wait server "$out/server.log" grep -q "snapbd ready" "$out/server.log"
# The JVM's pid (setsid and the launcher exec java, so it is the one bl_start started).
jpid=${BL_PIDS[server]}
log "server pid $jpid, SNAPBD_JAVA_OPTS='$server_opts', output in $out"
jcmd "$jpid" VM.flags > "$out/vm-flags.txt" 2>&1 || true
jcmd "$jpid" VM.native_memory summary > "$out/nmt-start.txt" 2>&1 || true

seconds=$((minutes * 60))
fio --name=churn --ioengine=nbd --uri="nbd+unix:///vol?socket=$sock" --rw=randwrite --bs=4k --iodepth=8 \
    --numjobs=4 --size=256M --offset_increment=256M --verify=crc32c --verify_backlog=4096 --verify_fatal=1 --verify_state_save=0 \
    --time_based --runtime="$seconds" --group_reporting > "$out/fio.log" 2>&1 &
fio_pid=$!
bl_track fio "$fio_pid"

(
  n=0
  end=$((SECONDS + seconds))
  while [ $SECONDS -lt $end ]; do
    n=$((n + 1))
    cli snapshot create vol "s$n" >/dev/null 2>>"$out/snapshots.err" || echo "create s$n failed" >> "$out/snapshots.err"
    if [ $((n - keep)) -ge 1 ]; then
      cli snapshot delete vol "s$((n - keep))" --force >/dev/null 2>>"$out/snapshots.err" || echo "delete s$((n - keep)) failed" >> "$out/snapshots.err"
    fi
    echo "$n" > "$out/snapshots.count"
    sleep "$period"
  done
) &
loop_pid=$!
bl_track snapshot-loop "$loop_pid"

kb() { awk -v k="$1" '$1 == k":" { print $2 }' "/proc/$jpid/status"; }
heap() {   # prints "used_kb committed_kb" from GC.heap_info (G1 and Serial/Parallel layouts)
  jcmd "$jpid" GC.heap_info 2>/dev/null | awk '
    /total [0-9]+K, used [0-9]+K/ && !done {
      for (i = 1; i <= NF; i++) { if ($i == "total") t = $(i + 1); if ($i == "used") u = $(i + 1) }
      gsub(/[K,]/, "", t); gsub(/[K,]/, "", u); print u, t; done = 1 }'
}
sample() {   # LABEL FORCED
  [ "$2" = 1 ] && jcmd "$jpid" GC.run >/dev/null 2>&1
  read -r used committed < <(heap)
  printf '%s,%d,%s,%s,%s,%s,%s,%s\n' "$1" "$SECONDS" "$2" "$(kb VmRSS)" "$(kb RssAnon)" "$used" "$committed" \
    "$(cat "$out/snapshots.count" 2>/dev/null || echo 0)" >> "$out/samples.csv"
}
echo "phase,seconds,forced_gc,rss_kb,rss_anon_kb,heap_used_kb,heap_committed_kb,snapshots_taken" > "$out/samples.csv"
start=$SECONDS
sample start 0
i=0
while kill -0 "$fio_pid" 2>/dev/null && [ $((SECONDS - start)) -lt "$seconds" ]; do
  sleep 15
  i=$((i + 1))
  if [ "$fullgc" -gt 0 ] && [ $((i % fullgc)) -eq 0 ]; then sample churn 1; else sample churn 0; fi
done
fio_status=0
wait "$fio_pid" || fio_status=$?
wait "$loop_pid" || true
sample load-ended 0
for s in $(cli snapshot list vol --json | python3 -c 'import json,sys; [print(s["name"]) for s in json.load(sys.stdin)["snapshots"]]' 2>/dev/null); do
  cli snapshot delete vol "$s" --force >/dev/null
done
[ -z "$(cli snapshot list vol --json | python3 -c 'import json,sys; print(*[s["name"] for s in json.load(sys.stdin)["snapshots"]])')" ] \
  || log "warning: snapshots left after the final delete"
sample all-deleted 0
sample all-deleted-gc 1
sleep 15
sample idle-gc 1
jcmd "$jpid" VM.native_memory summary > "$out/nmt-end.txt" 2>&1 || true

log "fio exit $fio_status (non-zero: a verify error or a failed request; see $out/fio.log)"
[ -s "$out/snapshots.err" ] && log "snapshot loop errors: $(wc -l < "$out/snapshots.err") lines in $out/snapshots.err"
column -s, -t < "$out/samples.csv"
echo
echo "heap after natural GCs (-Xlog:gc), per minute of server uptime: lowest used after a GC, highest committed"
awk '/->[0-9]+M\([0-9]+M\)/ && !/Pause Full/ {
    t = $1; gsub(/[\[\]s]/, "", t); m = int(t / 60)
    match($0, /[0-9]+M->[0-9]+M\([0-9]+M\)/); x = substr($0, RSTART, RLENGTH)
    split(x, a, /M->|M\(|M\)/); after = a[2] + 0; comm = a[3] + 0
    if (!(m in lo) || after < lo[m]) lo[m] = after; if (comm > hi[m]) hi[m] = comm; n[m]++; if (m > last) last = m
  } END { printf "  %-6s %-5s %-22s %s\n", "minute", "GCs", "lowest used after (MB)", "highest committed (MB)"
          for (m = 0; m <= last; m++) if (m in n) printf "  %-6d %-5d %-22d %d\n", m, n[m], lo[m], hi[m] }' "$out/gc.log"
echo
for f in nmt-start nmt-end; do
  echo "$f:"
  grep -E '^(Total|-\s+(Java Heap|Class|Thread|Code|GC|Internal|Other|Symbol|Arena Chunk|Metaspace))' "$out/$f.txt" \
    | sed 's/^/  /' || true
done
exit "$fio_status"
