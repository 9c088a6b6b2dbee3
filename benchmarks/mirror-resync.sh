#!/usr/bin/env bash
# mirror-resync.sh — resync after a crash: how many bytes snapbd's reconciliation copies after `kill -9` under
# random writes, against the bytes in flight at the kill, and what DRBD's activity log and an md write-intent
# bitmap would copy for the same write trace (mirror-resync-report.py computes both from the trace).
#
# usage: benchmarks/mirror-resync.sh [options]
#   --size SIZE        volume size (default 8G; sparse files: the legs take only what is written, but the
#                      script wants 3 x SIZE free under --tmpdir and stops otherwise: pass a smaller --size)
#   --rounds N         kills (default 5)
#   --min-delay S      seconds of load before the kill, at least (default 3) ...
#   --max-delay S      ... and at most (default 10); the moment is drawn at random in between
#   --connections N    load connections (default 2)    --depth N   writes in flight per connection (default 16)
#   --bs SIZE          write size (default 4k)          --seed N    seed of offsets, data and kill moments
#   --al-extents N     DRBD al-extents (default 1237)   --md-delay S  md bitmap daemon delay (default 5)
#   --factor X         the bound checked: copied <= X * in flight, every round (default 1.5)
#   --tmpdir DIR       where the data directory, the legs and the sockets go (default $TMPDIR or /tmp)
#   --out DIR          results (default benchmarks/results/mirror-resync-<timestamp>)
#   --svg FILE         also write the plot there (default OUT/mirror-resync.svg)
#   --no-full-compare  skip the final cmp of the legs over the whole volume (each round still compares every
#                      block the traces wrote, on every leg)
#   --json             print the summary as JSON on stdout (the table goes to stderr)
# The volume (leg 0 = data.img) has a file leg (leg 1) and an NBD leg on nbdkit's file plugin over a Unix socket
# (leg 2). Per round: `bench trace-load` writes at random over the whole volume, logging when each write was sent
# and acknowledged; snapbd gets SIGKILL at a random moment; snapbd restarts (reconciliation at open);
# `mirror status --json` gives lastReconciliation.bytesCopied; `bench trace-check` checks every traced block is
# the same on all three legs and that every acknowledged write is there. Exit 0: every round within the factor,
# legs identical, nothing acknowledged lost; 3: a round copied more than the factor allows; 1: any other failure.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh" mirror-resync
usage() { bl_header_usage 2 28; }
SIZE=8G ROUNDS=5 MIN_DELAY=3 MAX_DELAY=10 CONNS=2 DEPTH=16 BS=4k SEED=$(( $(date +%s) % 100000 )) AL=1237 MD_DELAY=5
FACTOR=1.5 TMPD=${TMPDIR:-/tmp} OUT="" SVG="" FULL=1 JSON=0
bl_options usage --size SIZE --rounds ROUNDS --min-delay MIN_DELAY --max-delay MAX_DELAY --connections CONNS \
  --depth DEPTH --bs BS --seed SEED --al-extents AL --md-delay MD_DELAY --factor FACTOR --tmpdir TMPD --out OUT \
  --svg SVG --no-full-compare FULL=0 --json JSON=1 -- "$@"
bl_positive --rounds "$ROUNDS"; bl_positive --connections "$CONNS"; bl_positive --depth "$DEPTH"
bl_positive --max-delay "$MAX_DELAY"; [[ $MIN_DELAY =~ ^[0-9]+$ ]] && [ "$MIN_DELAY" -le "$MAX_DELAY" ] || die "--min-delay must be 0..--max-delay"
SIZE_B=$(bl_bytes "$SIZE") || die "bad --size $SIZE"
[ $((SIZE_B % (1 << 20))) -eq 0 ] || die "--size must be a multiple of 1 MiB"
bl_need nbdkit python3 cmp
bl_require_jars snapbd bench
OUT=${OUT:-$BENCH_DIR/results/mirror-resync-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
SVG=${SVG:-$OUT/mirror-resync.svg}
mkdir -p "$TMPD"
WORK=$(mktemp -d "$TMPD/mirror-resync.XXXXXX")
bl_on_exit "$WORK"
bl_traps
# Space: the legs are sparse, but a long run can write every block of each.
need=$((3 * SIZE_B + (256 << 20)))
avail=$(( $(df -Pk "$WORK" | awk 'NR == 2 { print $4 }') * 1024 ))
[ "$avail" -ge "$need" ] || die "only $((avail >> 20)) MiB free under $TMPD; three legs of $SIZE need $((need >> 20)) MiB: pass a smaller --size (or --tmpdir)"
bl_private_jars "$WORK"
export SNAPBD_BENCH_JAVA_OPTS=${SNAPBD_BENCH_JAVA_OPTS:--Xmx1g}   # the trace stays in memory until the end of a round
echo "$0 $*" > "$OUT/command.txt"
log "mirror-resync: size $SIZE, $ROUNDS rounds, kill after ${MIN_DELAY}-${MAX_DELAY} s, $CONNS x depth $DEPTH of $BS, seed $SEED; work $WORK, out $OUT"

DATA=$WORK/data SOCK=$WORK/nbd.sock KSOCK=$WORK/kit.sock LEG1=$WORK/leg1.img KIT=$WORK/kit.img
# nbdkit's file must hold the volume and the leg's tag table after it (docs/mirrors.md: size + 2 101 248 bytes).
truncate -s $((SIZE_B + 2101248)) "$KIT"
# One worker thread: nbdkit 1.32 with several can abort when its client is killed mid-reply (a reply that failed
# with EPIPE closes the socket under a second worker still sending: "raw_send_socket: Assertion `sock >= 0'
# failed"), and a leg server gone would fail the round for a reason that is not snapbd's.
bl_start_nbdkit nbdkit "$KSOCK" "$OUT/nbdkit.log" --threads 1 file "$KIT"
KURI="nbd+unix:///?socket=$KSOCK"
$SNAPBD volume create vol --size "$SIZE" --save-size 64M --sparse --data-dir "$DATA" --mirror "$LEG1" --mirror "$KURI" >"$OUT/create.log" 2>&1 \
  || die "volume create failed: $(tail -3 "$OUT/create.log")"
DATA_IMG=$DATA/volumes/vol/data.img
[ -f "$DATA_IMG" ] || die "no $DATA_IMG after volume create"
start_snapbd() { bl_start_snapbd -a snapbd "$DATA" "$SOCK" "$OUT/snapbd.log" --warm-up off; }
start_snapbd
URI="nbd+unix:///vol?socket=$SOCK"
status() { $SNAPBD mirror status vol --json --data-dir "$DATA"; }

rand_delay() { python3 -c "import random, sys; r = random.Random($SEED * 1000 + $1); print('%.2f' % r.uniform($MIN_DELAY, $MAX_DELAY))"; }
traces=()
for r in $(seq 1 "$ROUNDS"); do
  trace=$OUT/round-$r.trace ready=$WORK/ready-$r
  bl_start load "$OUT/round-$r.load.log" "$BENCH" trace-load "$URI" --trace "$trace" --round "$r" --seed "$SEED" \
    --connections "$CONNS" --depth "$DEPTH" --bs "$BS" --duration 3600 --ready "$ready"
  BL_READY_TIMEOUT=120 bl_wait load "$OUT/round-$r.load.log" test -f "$ready"
  delay=$(rand_delay "$r")
  sleep "$delay"
  bl_alive load "$OUT/round-$r.load.log"
  bl_alive snapbd "$OUT/snapbd.log"
  pid=${BL_PIDS[snapbd]}
  kill_ns=$(date +%s%N)
  kill -KILL "$pid"
  wait "$pid" 2>/dev/null || true
  # The process dies some time after the signal is sent (milliseconds on a loaded machine): writes sent in between
  # still reached it, so what counts as in flight is cut at its death as this shell sees it, not at the signal.
  dead_ns=$(date +%s%N)
  unset "BL_PIDS[snapbd]"
  # The load ends when its connections break, then writes the trace.
  for _ in $(seq 1 1200); do kill -0 "${BL_PIDS[load]}" 2>/dev/null || break; sleep 0.1; done
  kill -0 "${BL_PIDS[load]}" 2>/dev/null && die "round $r: trace-load did not end after the kill (log $OUT/round-$r.load.log)"
  wait "${BL_PIDS[load]}" 2>/dev/null || true
  unset "BL_PIDS[load]"
  [ -s "$trace" ] || die "round $r: no trace written: $(tail -3 "$OUT/round-$r.load.log")"
  echo "$kill_ns" > "$OUT/round-$r.kill"
  echo "$dead_ns" > "$OUT/round-$r.dead"
  echo "$delay" > "$OUT/round-$r.delay"
  start_snapbd
  status > "$OUT/round-$r.status.json" || die "round $r: mirror status failed"
  traces+=("$trace")
  "$BENCH" trace-check --image "$DATA_IMG" --image "$LEG1" --image "$KIT" "${traces[@]}" > "$OUT/round-$r.check.json" 2>"$OUT/round-$r.check.log" \
    || die "round $r: the legs differ or an acknowledged write is missing: $(cat "$OUT/round-$r.check.json" "$OUT/round-$r.check.log")"
  log "round $r: killed after $delay s; $(tail -1 "$OUT/round-$r.load.log" | sed 's/^bench trace-load: //'); legs checked: $(cat "$OUT/round-$r.check.json")"
done
if [ "$FULL" = 1 ]; then
  log "comparing the three legs over the whole volume ($SIZE)"
  cmp -n "$SIZE_B" "$DATA_IMG" "$LEG1" >"$OUT/cmp.txt" 2>&1 || die "leg 1 differs from data.img: $(cat "$OUT/cmp.txt")"
  cmp -n "$SIZE_B" "$DATA_IMG" "$KIT" >>"$OUT/cmp.txt" 2>&1 || die "the nbdkit leg differs from data.img: $(cat "$OUT/cmp.txt")"
  echo "identical" >> "$OUT/cmp.txt"
fi
bl_stop snapbd
grep -q 'volumes closed cleanly' "$OUT/snapbd.log" || log "mirror-resync: note: snapbd's last stop was not logged as clean"
{
  echo "commit $(bl_git_rev), $(nproc) CPUs, $(uname -r)"
  echo "size $SIZE ($SIZE_B bytes), rounds $ROUNDS, kill after $MIN_DELAY..$MAX_DELAY s, $CONNS connections x depth $DEPTH, bs $BS, seed $SEED"
  echo "legs: data.img, $LEG1 (file), nbdkit file plugin over $KSOCK; full compare: $([ "$FULL" = 1 ] && echo yes || echo no)"
} > "$OUT/machine.txt"
report=(python3 "$BENCH_DIR/mirror-resync-report.py" "$OUT" --size "$SIZE_B" --al-extents "$AL" --md-delay "$MD_DELAY"
  --factor "$FACTOR" --svg "$SVG" --markdown "$OUT/results.md")
[ "$JSON" = 1 ] && report+=(--json)
rc=0
"${report[@]}" || rc=$?
if [ "$JSON" = 1 ]; then cat "$OUT/results.md" >&2; fi
exit "$rc"
