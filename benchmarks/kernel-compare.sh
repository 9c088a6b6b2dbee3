#!/usr/bin/env bash
# Kernel path benchmark: fio 4k random writes and reads on /dev/nbdN through the real nbd driver, inside
# User-Mode Linux (see docs/kernel-attach.md), served one after the other by
#   snapbd-attach     snapbd, attached with `snapbd attach` (socket pair, ioctls)
#   snapbd-nbdclient  snapbd, connected with nbd-client over its Unix socket
#   nbdkit-file       nbdkit's file plugin, connected with nbd-client over its Unix socket
# on equal 256 MiB backings in guest memory (tmpfs), written once in full before the measured jobs.
# Prints a table and the ratios snapbd / nbdkit. UML is slow and its single CPU runs the server, the
# driver and fio: only the ratios measured side by side in one boot mean anything.
#
#   benchmarks/kernel-compare.sh [--runtime S] [--rounds N] [--iodepth N] [--markdown FILE]
#
# Needs the built jar (mvn -B -q -DskipTests install) and the Debian packages user-mode-linux,
# busybox-static, nbd-client, fio, nbdkit, python3 (and gcc on hosts with AMX, for the UML shim).
set -euo pipefail
root="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
runtime=20
rounds=2
iodepth=32
markdown=""
while [ $# -gt 0 ]; do
  case "$1" in
    --runtime) runtime="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --iodepth) iodepth="$2"; shift 2 ;;
    --markdown) markdown="$2"; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "kernel-compare: unknown option $1" >&2; exit 2 ;;
  esac
done
jar="${SNAPBD_JAR:-$root/nbd-server/target/snapbd.jar}"
[ -f "$jar" ] || { echo "kernel-compare: $jar is missing: run 'mvn -B -q -DskipTests install' first" >&2; exit 1; }
for t in /usr/bin/linux.uml nbd-client fio nbdkit python3; do
  command -v "$t" >/dev/null 2>&1 || { echo "kernel-compare: $t is missing (see the header of this script)" >&2; exit 1; }
done
out="$root/benchmarks/target/kernel-compare"
rm -rf "$out"
mkdir -p "$out"

# ---- the part that runs inside UML ---------------------------------------------------------------------
cat > "$out/guest.sh" <<'GUEST'
set -u
root="$1"; export SNAPBD_JAR="$2"; runtime="$3"; rounds="$4"; iodepth="$5"
out="$KT_OUT"
export SNAPBD_DATA_DIR=/run/snapbd-data
size=256M
log() { echo "[$(date +%H:%M:%S)] $*"; }
fio_job() {   # DEVICE RW LABEL ROUND
  fio --name="$3" --filename="$1" --rw="$2" --bs=4k --ioengine=libaio --iodepth="$iodepth" --direct=1 \
      --size=$size --time_based --runtime="$runtime" --ramp_time=3 --randrepeat=0 --norandommap \
      --output-format=json --output="$out/fio-$3-$2-$4.json" >/dev/null 2>&1 \
    || log "fio $3 $2 failed"
}
fill() { fio --name=fill --filename="$1" --rw=write --bs=1M --ioengine=libaio --iodepth=4 --direct=1 --size=$size >/dev/null 2>&1; }
cli() { SNAPBD_JAVA_OPTS="-XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Xmx128m" "$root/bin/snapbd" "$@"; }

cat > /run/snapbd.conf <<EOF
default-volume = vol0
default-volume-size = $size
default-save-size = 16M
tcp = none
EOF
log "starting snapbd"
SNAPBD_JAVA_OPTS="-Xmx512m" setsid "$root/bin/snapbd" serve --config /run/snapbd.conf > "$out/server.log" 2>&1 &
server=$!
for _ in $(seq 1 600); do grep -q 'snapbd ready' "$out/server.log" && break; sleep 0.5; done
truncate -s 0 /run/nbdkit.img && fallocate -l $size /run/nbdkit.img
nbdkit --unix /run/nbdkit.sock --pidfile /run/nbdkit.pid file /run/nbdkit.img
for _ in $(seq 1 100); do [ -S /run/nbdkit.sock ] && break; sleep 0.1; done

cli attach vol0 /dev/nbd0 || log "attach failed"
nbd-client -unix "$SNAPBD_DATA_DIR/nbd.sock" /dev/nbd1 -N vol0 -b 4096 >/dev/null || log "nbd-client (snapbd) failed"
nbd-client -unix /run/nbdkit.sock /dev/nbd2 -b 4096 >/dev/null || log "nbd-client (nbdkit) failed"
log "filling the backings once"
fill /dev/nbd0; fill /dev/nbd2

for r in $(seq 1 "$rounds"); do
  # Alternate the order between rounds so that neither side always runs first.
  if [ $((r % 2)) -eq 1 ]; then order="snapbd-attach:/dev/nbd0 snapbd-nbdclient:/dev/nbd1 nbdkit-file:/dev/nbd2"
  else order="nbdkit-file:/dev/nbd2 snapbd-nbdclient:/dev/nbd1 snapbd-attach:/dev/nbd0"; fi
  for rw in randwrite randread; do
    for s in $order; do
      log "round $r $rw ${s%%:*}"
      fio_job "${s#*:}" "$rw" "${s%%:*}" "$r"
    done
  done
done
nbd-client -d /dev/nbd2 >/dev/null; nbd-client -d /dev/nbd1 >/dev/null
cli detach /dev/nbd0 || log "detach failed"
kill "$(cat /run/nbdkit.pid)"
kill -TERM "$server"
for _ in $(seq 1 240); do [ -d /proc/$server ] && ! grep -q "^State:.*Z" /proc/$server/status 2>/dev/null || break; sleep 0.5; done
log "done"
GUEST

echo "kernel-compare: booting UML (runtime ${runtime}s, ${rounds} round(s), iodepth ${iodepth}); output in $out" >&2
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
start=$(date +%s)
UML_TIMEOUT=$(( 900 + rounds * 6 * (runtime + 10) )) \
  bash "$root/nbd-server/src/test/resources/kernel/uml-run.sh" "$out" "$out/guest.sh" "$root" "$jar" "$runtime" "$rounds" "$iodepth" \
  || { echo "kernel-compare: the UML run failed; see $out/guest.log and $out/console.log" >&2; exit 1; }
elapsed=$(( $(date +%s) - start ))
export KC_LOAD="host load average before: $load_before, after: $(cut -d' ' -f1-3 /proc/loadavg)"
export KC_CMD="benchmarks/kernel-compare.sh --runtime $runtime --rounds $rounds --iodepth $iodepth"

python3 - "$out" "$runtime" "$rounds" "$iodepth" "$elapsed" "${markdown}" <<'PY'
import glob, json, os, platform, statistics, sys
out, runtime, rounds, iodepth, elapsed, markdown = sys.argv[1:7]
rows = {}
for f in sorted(glob.glob(os.path.join(out, "fio-*.json"))):
    name = os.path.basename(f)[4:-5]
    label, rw, rnd = name.rsplit("-", 2)
    try:
        job = json.load(open(f))["jobs"][0]
    except Exception as e:
        print(f"unreadable {f}: {e}", file=sys.stderr); continue
    side = job["write" if rw == "randwrite" else "read"]
    pct = side["clat_ns"].get("percentile", {})
    rows.setdefault((rw, label), []).append((side["iops"], pct.get("50.000000", 0) / 1000, pct.get("99.000000", 0) / 1000))
labels = ["snapbd-attach", "snapbd-nbdclient", "nbdkit-file"]
lines = []
lines.append(f"fio 4k, libaio, iodepth {iodepth}, O_DIRECT on /dev/nbdN, {runtime}s + 3s ramp per job, median of {rounds} round(s); UML boot {elapsed}s")
lines.append(os.environ.get("KC_LOAD", ""))
lines.append("")
lines.append("| job | server | IOPS (median) | IOPS per round | p50 µs | p99 µs | IOPS × nbdkit |")
lines.append("|---|---|---:|---|---:|---:|---:|")
ratios = {}
for rw in ["randwrite", "randread"]:
    base = rows.get((rw, "nbdkit-file"))
    base_iops = statistics.median(r[0] for r in base) if base else None
    for label in labels:
        r = rows.get((rw, label))
        if not r:
            lines.append(f"| {rw}-4k | {label} | – | – | – | – | – |"); continue
        iops = statistics.median(x[0] for x in r)
        p50 = statistics.median(x[1] for x in r); p99 = statistics.median(x[2] for x in r)
        ratio = iops / base_iops if base_iops else float("nan")
        ratios[(rw, label)] = ratio
        per = ", ".join(f"{x[0]:,.0f}" for x in r)
        lines.append(f"| {rw}-4k | {label} | {iops:,.0f} | {per} | {p50:,.0f} | {p99:,.0f} | {ratio:.2f} |")
lines.append("")
for rw in ["randwrite", "randread"]:
    for label in labels[:2]:
        if (rw, label) in ratios:
            lines.append(f"ratio {rw} {label} / nbdkit-file: {ratios[(rw, label)]:.2f}")
text = "\n".join(lines)
print(text)
if markdown:
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    host = f"{os.cpu_count()} x {cpu}, {platform.system()} {platform.release()}; guest: User-Mode Linux, 1 CPU"
    with open(markdown, "w") as f:
        f.write(f"Command: `{os.environ.get('KC_CMD', '')}`\n\nHost: {host}\n\n{text}\n")
PY
