#!/usr/bin/env bash
# histogram-cost.sh — what the server-side latency histograms cost in IOPS, measured on one running server.
#
# Restarting the server between "off" and "on" (as latency.sh's two rows do) changes the JIT state and
# the page cache and leaves a ±10% difference on a shared machine, more than the 3% being measured. Here
# one server stays up; `latency-histograms` is switched with SIGHUP (re-reads --config) between short
# closed-loop windows, in ABBA order (off,on,on,off,...) so a drift hits both sides alike. Each pair gives
# a ratio on/off; the median over the pairs is the cost.
#
# usage: benchmarks/histogram-cost.sh [--pairs N] [--window S] [--size SIZE] [--depth N] [--json FILE]
# Needs: bin/snapbd and benchmarks/target/snapbd-bench.jar (mvn -B -q -DskipTests package).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh" histogram-cost.sh
BL_DIE_STATUS=2
PAIRS=10 WINDOW=4 SIZE=1G DEPTH=32 JSON=""
usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; }
bl_options usage --pairs PAIRS --window WINDOW --size SIZE --depth DEPTH --json JSON -- "$@"
BL_DIE_STATUS=1
WORK=$(mktemp -d /tmp/histogram-cost.XXXXXX)
bl_on_exit "$WORK"
bl_traps
# Private copies of the jars: a build running meanwhile must not change them under the server.
bl_private_jars "$WORK"

conf() { printf 'data-dir = %s\nunix = %s\ntcp = none\nlatency-histograms = %s\n' "$WORK/data" "$WORK/sock" "$1" >"$WORK/snapbd.conf"; }
"$SNAPBD" volume create bench --size "$SIZE" --save-size 64M --data-dir "$WORK/data" >/dev/null
conf on
# SIGHUP at its default even under nohup: the JVM installs no handler for a signal ignored at start.
bl_start server "$WORK/server.log" env --default-signal=HUP "$SNAPBD" serve --config "$WORK/snapbd.conf"
PID=$BL_PID
bl_wait_socket server "$WORK/server.log" "$WORK/sock"
URI="nbd+unix:///bench?socket=$WORK/sock"
"$BENCH" load "$URI" -w seqwrite --ops $(( $(numfmt --from=iec "$SIZE") / 65536 )) -d 8 >/dev/null
"$BENCH" load "$URI" -t 10 --warmup 2 -d "$DEPTH" >/dev/null      # JIT warm-up, not measured

setting() {   # on|off: switch and wait until the server logged it
  local before; before=$(grep -c "latency-histograms" "$WORK/server.log" || true)
  conf "$1"; kill -HUP "$PID"
  for _ in $(seq 1 100); do
    [ "$(grep -c "latency-histograms" "$WORK/server.log" || true)" -gt "$before" ] && return 0
    sleep 0.05
  done
  tail -5 "$WORK/server.log" >&2; die "the server did not apply latency-histograms = $1"
}
current=on
IOPS=""
window() {   # on|off -> IOPS of one window in $IOPS (no subshell: the switch state must persist)
  [ "$1" = "$current" ] || { setting "$1"; current=$1; }
  "$BENCH" load "$URI" -t "$WINDOW" --warmup 1 -d "$DEPTH" --seed $RANDOM --json >"$WORK/window.json"
  IOPS=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print([r for r in d["results"] if r["op"]=="write"][0]["iops"])' "$WORK/window.json")
}
: >"$WORK/pairs.txt"
for p in $(seq 1 "$PAIRS"); do
  if [ $((p % 2)) = 1 ]; then window off; off=$IOPS; window on; on=$IOPS; else window on; on=$IOPS; window off; off=$IOPS; fi
  echo "$on $off" >>"$WORK/pairs.txt"
  printf 'pair %2d: on %9.0f IOPS, off %9.0f IOPS, cost %+5.1f%%\n' "$p" "$on" "$off" \
    "$(python3 -c "print((1 - $on / $off) * 100)")" >&2
done
python3 - "$WORK/pairs.txt" "$JSON" "$PAIRS" "$WINDOW" "$DEPTH" <<'PY'
import json, statistics, sys
pairs = [tuple(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
costs = [1 - on / off for on, off in pairs]
med = statistics.median(costs)
q = statistics.quantiles(costs, n=4) if len(costs) >= 4 else [min(costs), med, max(costs)]
print(f"histogram cost (median of {len(costs)} on/off pairs, {sys.argv[4]} s windows, depth {sys.argv[5]}): "
      f"{med * 100:+.1f}% IOPS (quartiles {q[0] * 100:+.1f}% .. {q[2] * 100:+.1f}%); target <= 3%: "
      f"{'PASS' if med <= 0.03 else 'FAIL'}")
if sys.argv[2]:
    with open(sys.argv[2], "w") as f:
        json.dump({"pairs": [{"on": a, "off": b} for a, b in pairs], "medianCost": med,
                   "quartiles": [q[0], q[2]], "pass": med <= 0.03}, f, indent=2)
PY
