#!/usr/bin/env bash
# mirror-bench.sh — 4 KiB random writes to a mirrored volume (two file legs), to a volume mirrored to a second
# snapbd over a Unix socket (one NBD leg) and to the same volume unmirrored, at depth 1 and 32, on 1 and 4
# connections, for one or more server jars side by side in one run (each jar gets its own server with the
# volumes, and its own leg server; rows alternate between jars, so machine noise hits all alike).
#
# usage: benchmarks/mirror-bench.sh [LABEL=JAR ...]      (default: now=nbd-server/target/snapbd.jar)
#   env RUNTIME   seconds per row (default 10)
#   env SIZE      size of each volume (default 256M); the mirrored one has two leg files of that size beside it
#   env WORKDIR   where the data directories go (default a new directory in /tmp, removed at exit)
# First one row of first writes (depth 32, one connection, each block of the new volumes at most once), then every
# volume is written whole once and the other rows measure that steady state (no write allocates an extent).
# Per jar: volumes `plain` (unmirrored), `mirrored` (--mirror DIR/leg1.img --mirror DIR/leg2.img) and `nbdleg`
# (--mirror nbd+unix:///leg?socket=DIR/legsock: volume `leg` of a second snapbd server of the same jar); after the
# first-writes row each is written once sequentially, then per row: fio --ioengine=nbd --rw=randwrite --bs=4k
# --iodepth=D --numjobs=J --group_reporting --time_based --runtime=RUNTIME --randrepeat=0 (a job is a connection).
# LABEL=JAR,OPTS runs that label's server with SNAPBD_JAVA_OPTS=OPTS (e.g. now,written=JAR,-Dsnapbd.mirror.answer=written).
# Prints a Markdown table: IOPS, p50/p99 completion latency (µs), and mirrored IOPS / plain IOPS per leg kind; then
# per mirrored row its hot-region counters (region entries made, regions cooled, cap fallbacks; mirror status --json).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh" mirror-bench
usage() { bl_header_usage 2 19; }
[ "${1:-}" = -h ] || [ "${1:-}" = --help ] && { usage; exit 0; }
bl_need_fio_nbd
RUNTIME=${RUNTIME:-10}
SIZE=${SIZE:-256M}
bl_positive RUNTIME "$RUNTIME"
[ $# -gt 0 ] || set -- "now=$(bl_snapbd_jar)"
declare -A JAR OPTS
LABELS=()
for a in "$@"; do
  [[ $a == *=* ]] || die "expected LABEL=JAR, not '$a'"
  l=${a%%=*}; JAR[$l]=${a#*=}; LABELS+=("$l"); OPTS[$l]=""
  if [[ ${JAR[$l]} == *,* ]]; then OPTS[$l]=${JAR[$l]#*,}; JAR[$l]=${JAR[$l]%%,*}; fi
  [ -f "${JAR[$l]}" ] || die "${JAR[$l]} is missing: build first ($BL_BUILD)"
done
if [ -n "${WORKDIR:-}" ]; then WORK=$WORKDIR; mkdir -p "$WORK"; else WORK=$(mktemp -d /tmp/mirror-bench.XXXXXX); bl_on_exit "$WORK"; fi
log "work: $WORK"
bl_traps
# hot_counters LABEL VOLUME ROW: appends the volume's hot-region counters after the row (mirror status --json:
# regionEntries, cooled, capFallbacks, unforcedChanges are totals since the open; the table prints each row's growth).
hot_counters() {
  local st
  st=$(SNAPBD_JAR=$WORK/$1/snapbd.jar $SNAPBD mirror status "$2" --json --data-dir "$WORK/$1/data" 2>/dev/null || true)
  python3 -c 'import json,sys
try: h=json.loads(sys.argv[2]).get("hotRegions") or {}
except Exception: h={}
print(sys.argv[1], *(h.get(k, -1) for k in ("now", "cap", "regionEntries", "cooled", "capFallbacks", "unforcedChanges")))' "$1 $2 $3" "$st" >>"$WORK/hot.txt"
}
: >"$WORK/hot.txt"
for l in "${LABELS[@]}"; do
  d=$WORK/$l; mkdir -p "$d"
  cp "${JAR[$l]}" "$d/snapbd.jar"        # a build running meanwhile cannot replace it
  SNAPBD_JAR=$d/snapbd.jar $SNAPBD volume create plain --size "$SIZE" --save-size 1M --data-dir "$d/data" >/dev/null
  SNAPBD_JAR=$d/snapbd.jar $SNAPBD volume create mirrored --size "$SIZE" --save-size 1M --data-dir "$d/data" \
    --mirror "$d/leg1.img" --mirror "$d/leg2.img" >/dev/null
  # the NBD leg: a volume of SIZE + the tag table area (2 MiB + 4 KiB) on a second server of the same jar
  leg_bytes=$(( $(numfmt --from=iec "$SIZE") + 2101248 ))
  SNAPBD_JAR=$d/snapbd.jar $SNAPBD volume create leg --size "$leg_bytes" --save-size 1M --data-dir "$d/legdata" >/dev/null
  SNAPBD_JAR=$d/snapbd.jar bl_start_snapbd "$l-leg" "$d/legdata" "$d/legsock" "$d/legserver.log" --warm-up off
  SNAPBD_JAR=$d/snapbd.jar $SNAPBD volume create nbdleg --size "$SIZE" --save-size 1M --data-dir "$d/data" \
    --mirror "nbd+unix:///leg?socket=$d/legsock" >/dev/null
  SNAPBD_JAR=$d/snapbd.jar SNAPBD_JAVA_OPTS="${OPTS[$l]}" bl_start_snapbd "$l" "$d/data" "$d/sock" "$d/server.log" --warm-up off
done
: >"$WORK/results.txt"
# First writes: depth 32, one connection, on the new volumes, each block written at most once (--io_size=SIZE,
# at most RUNTIME s): every write lands on a block never written (fallocate'd, unwritten extents of data.img and
# of the file legs), so every force also commits the file system's journal (docs/mirrors.md, "Cost").
for v in plain mirrored nbdleg; do
  for l in "${LABELS[@]}"; do
    json=$WORK/$l/$v-first.json
    bl_fio_nbd "nbd+unix:///$v?socket=$WORK/$l/sock" --name="$v" --rw=randwrite --bs=4k --iodepth=32 --numjobs=1 \
      --size="$SIZE" --io_size="$SIZE" --randrepeat=0 --runtime="$RUNTIME" \
      --percentile_list=50:99:99.9 --output-format=json --output="$json"
    echo "$l $v 32-first-writes 1 $(python3 "$FIO_SUMMARY" --ddir write "$json" iops p50_us p99_us)" | tee -a "$WORK/results.txt" >&2
    [ "$v" = plain ] || hot_counters "$l" "$v" 32-first-writes/1
  done
done
# The steady state (the rows below): every volume written whole once first, so no write allocates or converts an
# extent, as on a volume in use.
for l in "${LABELS[@]}"; do
  for v in plain mirrored nbdleg; do bl_fio_prefill "nbd+unix:///$v?socket=$WORK/$l/sock" "$SIZE"; done
  for v in mirrored nbdleg; do hot_counters "$l" "$v" prefill; done
done
for depth in 1 32; do
  for jobs in 1 4; do
    for v in plain mirrored nbdleg; do
      for l in "${LABELS[@]}"; do
        bl_alive "$l" "$WORK/$l/server.log"
        bl_alive "$l-leg" "$WORK/$l/legserver.log"
        json=$WORK/$l/$v-d$depth-j$jobs.json
        bl_fio_nbd "nbd+unix:///$v?socket=$WORK/$l/sock" --name="$v" --rw=randwrite --bs=4k --iodepth="$depth" \
          --numjobs="$jobs" --group_reporting --size="$SIZE" --randrepeat=0 --time_based --runtime="$RUNTIME" \
          --percentile_list=50:99:99.9 --output-format=json --output="$json"
        echo "$l $v $depth $jobs $(python3 "$FIO_SUMMARY" --ddir write "$json" iops p50_us p99_us)" | tee -a "$WORK/results.txt" >&2
        [ "$v" = plain ] || hot_counters "$l" "$v" "$depth/$jobs"
      done
    done
  done
done
# The ENTRY group commit's batch size: per mirrored volume, leg 0's changes / its tag table's forces since the start
# (tableForces in mirror status; jars before it have none: n/a).
for l in "${LABELS[@]}"; do
  for v in mirrored nbdleg; do
    st=$(SNAPBD_JAR=$WORK/$l/snapbd.jar $SNAPBD mirror status "$v" --json --data-dir "$WORK/$l/data" 2>/dev/null || true)
    python3 -c 'import json,sys
try: l=json.loads(sys.argv[3])["legs"]
except Exception: l=[]
w=sum(x.get("writes",0) for x in l[:1]); f=[x.get("tableForces") for x in l]
print(f"mirror-bench: {sys.argv[1]} {sys.argv[2]}: leg 0 changes {w}, table forces per leg {f}, changes per leg-0 table force " + (f"{w / f[0]:.1f}" if f and f[0] else "n/a"))' "$l" "$v" "$st"
  done
done
echo "mirror-bench: commit $(bl_git_rev), $(nproc) CPUs, RUNTIME=$RUNTIME s, SIZE=$SIZE (first-writes row on new volumes, then every volume written whole once), legs: two files on the data directory's file system (mirrored), one snapbd volume over a Unix socket (nbdleg)"
python3 - "$WORK/results.txt" <<'PY'
import sys
rows = {}
order = []
for line in open(sys.argv[1]):
    l, v, d, j, iops, p50, p99 = line.split()
    rows[(l, v, d, j)] = (float(iops), float(p50), float(p99))
    if (l, d, j) not in order:
        order.append((l, d, j))
print("| jar | depth | connections | plain IOPS | plain p50 / p99 µs | 2 file legs IOPS | p50 / p99 µs | / plain IOPS, p99 | NBD leg IOPS | p50 / p99 µs | / plain IOPS, p99 |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for l, d, j in order:
    p = rows[(l, "plain", d, j)]
    cells = [f"| {l} | {d} | {j} | {p[0]:,.0f} | {p[1]:,.0f} / {p[2]:,.0f} "]
    for v in ("mirrored", "nbdleg"):
        m = rows[(l, v, d, j)]
        cells.append(f"| {m[0]:,.0f} | {m[1]:,.0f} / {m[2]:,.0f} | {m[0] / p[0]:.2f}×, {m[2] / p[2]:.1f}× ")
    print("".join(cells) + "|")
PY
# Hot regions per mirrored row (docs/mirrors.md, "Hot regions"): region entries made (forced), regions cooled,
# changes sent to the strict path for want of room under the cap, and hot-path changes, during the row; hot after it.
python3 - "$WORK/hot.txt" <<'PY'
import sys
print()
print("| jar | volume | row (depth/connections) | hot after / cap | region entries made | cooled | cap fallbacks | hot-path changes |")
print("|---|---|---|---:|---:|---:|---:|---:|")
prev = {}
for line in open(sys.argv[1]):
    l, v, row, now, cap, made, cooled, fb, fast = line.split()
    c = [int(x) for x in (made, cooled, fb, fast)]
    p = prev.get((l, v), [0, 0, 0, 0])
    d = ["n/a" if x < 0 else f"{x - y:,}" for x, y in zip(c, p)]
    prev[(l, v)] = c
    print(f"| {l} | {v} | {row} | {now} / {cap} | " + " | ".join(d) + " |")
PY
