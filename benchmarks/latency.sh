#!/usr/bin/env bash
# latency.sh — write latency of snapbd in every state that matters, and of its peers, in one run.
#
# Every row runs the HdrHistogram load generator (benchmarks/bench load) against an export of the same
# preallocated size, written once before the first row:
#
#   no-snapshot       snapbd, the volume has no snapshot
#   after-snapshot    right after `snapshot create` (after a warm-up of first writes elsewhere in the volume):
#                     the load generator's random order visits every block
#                     once before repeating, so every write is a first write and copies its block
#   after-snapshot-cold  the same without the warm-up of first writes (the snapshot is taken when the load
#                     generator's own warm-up ends): includes the server's JIT recompiling the write path
#   *-qd1             no-snapshot and after-snapshot with one request in flight: service time, no queueing
#   8-snapshots       right after the 8th snapshot (1% of the blocks rewritten between snapshots)
#   all-copied        the snapshot exists and every block was copied once: writes go in place again
#   no-snapshot-late  no-snapshot again right after all-copied (snapshot deleted): all-copied's baseline
#   lun-tracking      no snapshot, LUN state tracking enabled
#   histograms-off    no snapshot, server-side latency histograms off (their cost: ratio to no-snapshot)
#   nbdkit            nbdkit's file plugin, preallocated file written once the same way
#   qemu-nbd          qemu-nbd, raw file, cache=writeback, aio=threads
#   fio-*             the no-snapshot and nbdkit rows again with fio --ioengine=nbd, logs converted (fio2hgrm)
#
# Closed loop (--depth requests in flight per connection) for every row; open loop at --rate for
# no-snapshot, after-snapshot and all-copied (latency from each request's due time, so a stall is charged
# to every request it held up). Also 70/30 random read/write and 64 KiB sequential writes for snapbd and
# the peers. Writes .hgrm files, JSON, PNG plots and a Markdown report into --out.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh" latency
SIZE=1G
DURATION=20
WARMUP=3
DEPTH=32
CONNECTIONS=1
RATE=4000
ROUNDS=1
OUT=""
MARKDOWN=""
WORKLOADS=1

usage() {
  cat <<EOF
Usage: benchmarks/latency.sh [options]
  --size SIZE         export size for every server (default $SIZE; K/M/G powers of 1024)
  --duration S        measured seconds per row (default $DURATION)
  --warmup S          seconds before measuring, dropped (default $WARMUP)
  --depth N           closed loop: requests in flight per connection (default $DEPTH)
  --connections N     connections per row (default $CONNECTIONS)
  --rate IOPS         open loop rate for the fixed-rate rows (default $RATE)
  --rounds N          repeat the rows; the report shows the median round per row (default $ROUNDS)
  --no-workloads      skip the randrw / seqwrite rows
  --out DIR           where .hgrm, JSON, plots and the report go (default benchmarks/results/latency-TIMESTAMP)
  --markdown FILE     also copy the report there
Needs: bin/snapbd and benchmarks/target/snapbd-bench.jar (mvn -B -q -DskipTests package), nbdkit,
qemu-nbd (qemu-utils), python3, fallocate.
EOF
}
bl_options usage --size SIZE --duration DURATION --warmup WARMUP --depth DEPTH --connections CONNECTIONS --rate RATE \
  --rounds ROUNDS --no-workloads WORKLOADS=0 --out OUT --markdown MARKDOWN -- "$@"
bl_need nbdkit qemu-nbd python3 fallocate
bl_positive --rounds "$ROUNDS"

WORK=$(mktemp -d /tmp/latency.XXXXXX)
bl_on_exit "$WORK"
bl_traps
# Private copies of the jars: a build running meanwhile must not replace them mid-run.
bl_private_jars "$WORK"
OUT=${OUT:-$ROOT/benchmarks/results/latency-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
SIZE_BYTES=$(bl_bytes "$SIZE") || die "bad --size '$SIZE'"
BLOCKS=$((SIZE_BYTES / 4096))
# Closed-loop rows right after a snapshot write this many blocks, all first writes (a random order without
# repeats over the first 3/4 of the blocks), every one measured; the other rows are time-bound. Before them,
# first writes to the last quarter warm the copy-on-write path up (a new snapshot makes the JIT recompile
# the write path; the "-cold" row keeps that in).
FIRST_REGION=$((SIZE_BYTES / 4 * 3))
FIRST_WRITES=$((BLOCKS * 3 / 4))
QD1_FIRST_WRITES=$((BLOCKS / 4))
warm_first_writes() {
  "$BENCH" load "$SNAPBD_URI" --offset "$FIRST_REGION" --ops $((BLOCKS / 4)) -d "$DEPTH" --seed "$1" >/dev/null \
    || die "warm-up of the first-write path failed"
}

DATA=$WORK/data
SOCK=$WORK/snapbd.sock
stop_server() { bl_stop snapbd; }
start_snapbd() { bl_start_snapbd -a snapbd "$DATA" "$SOCK" "$OUT/server-snapbd.log" "$@"; }   # extra serve args...

cli() { "$SNAPBD" "$@" --data-dir "$DATA" >/dev/null; }
SNAPBD_URI="nbd+unix:///bench?socket=$SOCK"

# One measured row: name, uri, load args... → OUT/NAME.json, OUT/NAME-*.hgrm
# Rows against snapbd also keep the server's own view (bin/snapbd stats, reset when the warm-up ends):
# OUT/NAME.server.json and OUT/NAME.server/bench.write.hgrm.
measure() {
  local name=$1 uri=$2; shift 2
  echo "[$name]" >&2
  # Dirty pages left by the rows before (any server's) would be written back during this one: the kernel
  # flusher then competes for the disk and the two cores, and the row that happens to come next pays.
  sync
  local window=(--warmup "$WARMUP" -t "$DURATION") hook=()
  if [ "${1:-}" = "--ops" ]; then
    # Count-bound row (first writes: no block may be written twice): every request is measured. The load
    # generator warms itself up as in the time-bound rows, but in the last quarter (never measured here),
    # then runs BEFORE_MEASURE (e.g. `snapshot create`) with nothing in flight, then measures.
    window=(--warmup "$WARMUP" --warmup-offset "$FIRST_REGION" --warmup-size "$((SIZE_BYTES - FIRST_REGION))")
    hook=(--at-measure-start "${BEFORE_MEASURE:-true} && { '$SNAPBD' stats bench --reset --data-dir '$DATA' >/dev/null 2>&1 || true; }")
  elif [ "$uri" = "$SNAPBD_URI" ]; then
    hook=(--at-measure-start "'$SNAPBD' stats bench --reset --data-dir '$DATA'")
  fi
  "$BENCH" load "$uri" "${window[@]}" -c "$CONNECTIONS" -o "$OUT" -l "$name" "${hook[@]}" "$@" \
    >"$OUT/$name.txt" || die "load for $name failed: $(cat "$OUT/$name.txt")"
  sed 's/^/    /' "$OUT/$name.txt" >&2
  if [ "$uri" = "$SNAPBD_URI" ]; then
    "$SNAPBD" stats bench --json --hgrm "$OUT/$name.server" --data-dir "$DATA" >"$OUT/$name.server.json" 2>/dev/null \
      || rm -f "$OUT/$name.server.json"
  fi
}
closed() { local n=$1 u=$2; shift 2; measure "$n" "$u" "$@" -d "$DEPTH"; }
opened() { local n=$1 u=$2; shift 2; measure "$n" "$u" "$@" -r "$RATE"; }
fill() {   # uri: writes every block once (64 KiB sequential, 4 connections)
  "$BENCH" load "$1" -w seqwrite --ops $((SIZE_BYTES / 65536)) -c 4 -d 8 --seed 99 >/dev/null || die "fill of $1 failed"
  sync   # rows start with nothing left to write back from the fill
}

machine() {
  echo "date:        $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host cpus:   $(nproc) x $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo "memory:      $(free -h | awk '/Mem:/{print $2}')"
  echo "kernel:      $(uname -srm)"
  echo "load avg:    $(cut -d' ' -f1-3 /proc/loadavg) at start (1/5/15 min; other work skews results)"
  echo "backing fs:  $(df -PT "$WORK" | awk 'NR == 2 { print $2 " on " $1 }')"
  echo "java:        $(java -version 2>&1 | head -1)"
  echo "nbdkit:      $(nbdkit --version | head -1)"
  echo "qemu-nbd:    $(qemu-nbd --version | head -1)"
  echo "snapbd:      git $(bl_git_rev)"
  echo "settings:    size $SIZE, ${DURATION}s measured + ${WARMUP}s warm-up per row, 4 KiB random writes unless named,"
  echo "             closed loop depth $DEPTH x $CONNECTIONS connection(s), open loop $RATE IOPS, rounds $ROUNDS"
}
machine | tee "$OUT/machine.txt" >&2

# ---------------------------------------------------------------- servers
# All three run for the whole script (idle while another is measured), so each round measures snapbd
# and its peers side by side, minutes apart rather than at the two ends of the run.
fallocate -l "$SIZE_BYTES" "$WORK/nbdkit.img"
bl_start_nbdkit nbdkit "$WORK/nbdkit.sock" "$OUT/server-nbdkit.log" file "$WORK/nbdkit.img"
NBDKIT_URI="nbd+unix:///?socket=$WORK/nbdkit.sock"
fallocate -l "$SIZE_BYTES" "$WORK/qemu.img"
bl_start_qemu_nbd qemu-nbd "$WORK/qemu-nbd.sock" "$OUT/server-qemu-nbd.log" "$WORK/qemu.img"
QEMU_URI="nbd+unix:///?socket=$WORK/qemu-nbd.sock"
mkdir -p "$DATA"
"$SNAPBD" volume create bench --size "$SIZE" --save-size "$((SIZE_BYTES * 5 / 4 / 1048576))M" --data-dir "$DATA" \
  >"$OUT/volume-create.log" 2>&1 || die "volume create failed: $(cat "$OUT/volume-create.log")"
start_snapbd
for u in "$SNAPBD_URI" "$NBDKIT_URI" "$QEMU_URI"; do
  echo "prefill $u" >&2
  fill "$u"
done

peer_rows() {   # name uri suffix
  closed "$1$3" "$2"
  opened "$1-rate$3" "$2"
  if [ "$WORKLOADS" = 1 ]; then
    closed "$1-randrw$3" "$2" -w randrw
    measure "$1-seqwrite$3" "$2" -w seqwrite -d 8
  fi
}
# The same workload through fio's nbd engine (libnbd), its latency log converted to .hgrm: one plot with both.
fio_row() {   # label uri
  echo "[$1]" >&2
  "$BENCH_DIR/fio-latency.sh" --uri "$2" --label "$1" --out "$OUT" --runtime "$DURATION" --size "$SIZE" \
    --iodepth "$DEPTH" >"$OUT/$1.txt" 2>&1 || die "fio failed: $(tail -5 "$OUT/$1.txt")"
}

for r in $(seq 1 "$ROUNDS"); do
  sfx=""; [ "$ROUNDS" -gt 1 ] && sfx="@$r"
  peer_rows nbdkit "$NBDKIT_URI" "$sfx"
  peer_rows qemu-nbd "$QEMU_URI" "$sfx"

  # Each ratio's two rows run next to each other: the baselines right before the snapshot rows.
  opened "no-snapshot-rate$sfx" "$SNAPBD_URI"
  measure "no-snapshot-qd1$sfx" "$SNAPBD_URI" -d 1
  closed "no-snapshot$sfx" "$SNAPBD_URI"

  # Cold: the client warms up while there is no snapshot yet; the snapshot is taken with nothing in flight.
  BEFORE_MEASURE="'$SNAPBD' snapshot create bench s0 --data-dir '$DATA' >/dev/null" \
    closed "after-snapshot-cold$sfx" "$SNAPBD_URI" --ops "$FIRST_WRITES" --size "$FIRST_REGION" --seed $((r * 10 + 5))
  cli snapshot delete bench s0
  cli snapshot create bench s0
  warm_first_writes $((r * 10 + 6))
  closed "after-snapshot$sfx" "$SNAPBD_URI" --ops "$FIRST_WRITES" --size "$FIRST_REGION" --seed $((r * 10 + 1))
  cli snapshot delete bench s0
  cli snapshot create bench s0
  warm_first_writes $((r * 10 + 7))
  measure "after-snapshot-qd1$sfx" "$SNAPBD_URI" --ops "$QD1_FIRST_WRITES" --size "$FIRST_REGION" --seed $((r * 10 + 4)) -d 1
  cli snapshot delete bench s0
  cli snapshot create bench s0
  opened "after-snapshot-rate$sfx" "$SNAPBD_URI" --seed $((r * 10 + 2))
  echo "copy every block once" >&2
  fill "$SNAPBD_URI"
  closed "all-copied$sfx" "$SNAPBD_URI"
  opened "all-copied-rate$sfx" "$SNAPBD_URI"
  cli snapshot delete bench s0
  # The baseline of the all-copied rows, next to them: the same volume, 10 minutes and a refill later than
  # the no-snapshot rows, without the snapshot.
  closed "no-snapshot-late$sfx" "$SNAPBD_URI"
  opened "no-snapshot-rate-late$sfx" "$SNAPBD_URI"

  echo "8 snapshots, 1% of the blocks rewritten between them" >&2
  for k in 1 2 3 4 5 6 7 8; do
    cli snapshot create bench "s$k"
    if [ "$k" -lt 8 ]; then
      "$BENCH" load "$SNAPBD_URI" --ops $((BLOCKS / 100)) --seed $((r * 100 + k)) >/dev/null || die "rewrite failed"
    fi
  done
  warm_first_writes $((r * 10 + 8))
  closed "8-snapshots$sfx" "$SNAPBD_URI" --ops "$FIRST_WRITES" --size "$FIRST_REGION" --seed $((r * 10 + 3))
  for k in 1 2 3 4 5 6 7 8; do cli snapshot delete bench "s$k"; done

  cli lun-state enable bench
  closed "lun-tracking$sfx" "$SNAPBD_URI"
  cli lun-state disable bench

  if [ "$WORKLOADS" = 1 ]; then
    closed "randrw$sfx" "$SNAPBD_URI" -w randrw
    measure "seqwrite$sfx" "$SNAPBD_URI" -w seqwrite -d 8
  fi

  # Server-side histograms off, then on again right after: their cost is the ratio of these two.
  if "$SNAPBD" serve --help 2>&1 | grep -q -- --latency-histograms; then
    stop_server
    start_snapbd --latency-histograms=off
    closed "histograms-off$sfx" "$SNAPBD_URI"
    stop_server
    start_snapbd
    closed "histograms-on$sfx" "$SNAPBD_URI"
  else
    echo "this snapbd has no --latency-histograms switch: histogram cost rows skipped" >&2
  fi
done
fio_row fio-no-snapshot "$SNAPBD_URI"
fio_row fio-nbdkit "$NBDKIT_URI"
bl_stop_all
echo "load avg at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/machine.txt"

# ---------------------------------------------------------------- report
python3 "$BENCH_DIR/latency-report.py" "$OUT" "$ROUNDS" "$DEPTH" "$RATE" >"$OUT/report.md"
cd "$OUT"
plot() { local png=$1 title=$2; shift 2; "$BENCH" plot -o "$png" --title "$title" "$@" 2>/dev/null || echo "plot $png failed" >&2; }
pick() { python3 "$BENCH_DIR/latency-report.py" --pick "$OUT" "$ROUNDS" "$1"; }   # row → the median round's file stem
plot snapshots-closed.png "4 KiB random writes, closed loop depth $DEPTH: snapshot states" \
  $(for n in no-snapshot after-snapshot 8-snapshots all-copied lun-tracking; do echo "$n=$(pick "$n")-write.hgrm"; done)
plot snapshots-rate.png "4 KiB random writes, open loop at $RATE IOPS (coordinated omission corrected)" \
  $(for n in no-snapshot-rate after-snapshot-rate all-copied-rate nbdkit-rate qemu-nbd-rate; do echo "$n=$(pick "$n")-write.hgrm"; done)
plot server-side.png "4 KiB random writes, closed loop depth $DEPTH: client (bench load) vs server (snapbd stats)" \
  $(for n in no-snapshot after-snapshot all-copied; do p=$(pick "$n"); echo "$n-client=$p-write.hgrm $n-server=$p.server/bench.write.hgrm"; done)
plot peers-closed.png "4 KiB random writes, closed loop depth $DEPTH: snapbd and peers (bench load and fio)" \
  $(for n in no-snapshot nbdkit qemu-nbd; do echo "$n=$(pick "$n")-write.hgrm"; done) \
  "fio-no-snapshot=fio-no-snapshot-write.hgrm" "fio-nbdkit=fio-nbdkit-write.hgrm"
if [ "$WORKLOADS" = 1 ]; then
  plot workloads.png "70/30 random read/write (4 KiB) and 64 KiB sequential writes" \
    $(for n in randrw nbdkit-randrw qemu-nbd-randrw; do echo "$n-write=$(pick "$n")-write.hgrm $n-read=$(pick "$n")-read.hgrm"; done) \
    $(for n in seqwrite nbdkit-seqwrite qemu-nbd-seqwrite; do echo "$n=$(pick "$n")-write.hgrm"; done)
fi
cat "$OUT/report.md"
[ -n "$MARKDOWN" ] && cp "$OUT/report.md" "$MARKDOWN"
echo "latency: results in $OUT" >&2
