#!/usr/bin/env bash
# The serving gap of an in-place restart (snapbd restart), seen by a real client on the host: nbdsh writes 4 KiB
# and flushes in a loop on the Unix listener, reconnecting when the connection ends, while `snapbd restart` runs;
# the gap is the longest time between two completed write+flush pairs. The server logs its parts of the pause
# ("handover: ..." in the old process, "takeover: ..." in the successor). On the host there is no nbd driver: the
# client's connection is closed at the handover and reconnected to the successor's listener, so the gap is the
# old server's whole stop plus the successor's start up to its listeners (a kernel connection is handed over
# earlier, at "devices reconnected or adopted").
# Usage: benchmarks/restart-pause.sh [JAR] [RESTARTS]   (SNAPBD_CDS_DIR=DIR to run with class data sharing)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
jar="${1:-$root/nbd-server/target/snapbd.jar}"
restarts="${2:-3}"
work=$(mktemp -d /tmp/restart-pause.XXXXXX)
serving_pid() {
  SNAPBD_JAR="$jar" "$root/bin/snapbd" status --json --data-dir "$work/data" 2>/dev/null | sed -n 's/.*"pid" *: *\([0-9]*\).*/\1/p'
}
cleanup() {
  local pid
  pid=$(serving_pid || true)
  if [ -n "$pid" ]; then kill "$pid"; while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done; fi
  rm -rf "$work"
}
trap cleanup EXIT
cat > "$work/snapbd.conf" <<CONF
data-dir = $work/data
tcp = none
unix = $work/nbd.sock
volume.vol0 = 1G save=256M
volume.vol1 = 1G save=256M
CONF
SNAPBD_JAR="$jar" "$root/bin/snapbd" serve --config "$work/snapbd.conf" >"$work/server.log" 2>&1 &
for _ in $(seq 600); do grep -q "snapbd ready" "$work/server.log" && break; sleep 0.1; done
cat > "$work/writer.py" <<'PY'
import sys, time
import nbd
sock, stop_file = sys.argv[1], sys.argv[2]
import os
buf = b"x" * 4096
done = []
h = None
i = 0
while not os.path.exists(stop_file):
    try:
        if h is None:
            h = nbd.NBD()
            h.set_export_name("vol0")
            h.connect_unix(sock)
        h.pwrite(buf, (i % 4096) * 4096)
        h.flush()
        done.append(time.monotonic())
        i += 1
    except Exception:
        h = None
        time.sleep(0.001)
gaps = sorted(((b - a, a) for a, b in zip(done, done[1:])), reverse=True)
print("requests %d, longest gap %.1f ms, second %.1f ms" % (len(done), gaps[0][0] * 1000, gaps[1][0] * 1000))
PY
for r in $(seq "$restarts"); do
  rm -f "$work/stop"
  /usr/bin/python3 "$work/writer.py" "$work/nbd.sock" "$work/stop" > "$work/writer.out" &
  wpid=$!
  sleep 2
  SNAPBD_JAR="$jar" "$root/bin/snapbd" restart --json --data-dir "$work/data" > "$work/restart.json"
  sleep 2
  touch "$work/stop"
  wait "$wpid"
  echo "restart $r: $(cat "$work/writer.out"); $(grep -o '"servingAfterHandoverMillis" *: *[0-9]*' "$work/restart.json")"
done
grep -E "handover: go sent|takeover: serving|exiting without" "$work/server.log" | sed 's/^/  /' || true
