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
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib.sh" kernel-compare
BL_DIE_STATUS=2
runtime=20
rounds=2
iodepth=32
markdown=""
usage() { bl_header_usage 2 16; }
bl_options usage --runtime runtime --rounds rounds --iodepth iodepth --markdown markdown -- "$@"
BL_DIE_STATUS=1
bl_require_jars snapbd
jar=$(bl_snapbd_jar)
bl_kernel_need nbd-client fio nbdkit python3
out="$ROOT/benchmarks/target/kernel-compare"
rm -rf "$out"
mkdir -p "$out"

# ---- the part that runs inside UML (setup and teardown: kernel-guest.sh) --------------------------------
cat > "$out/guest.sh" <<'GUEST'
set -u
root="$1"; export SNAPBD_JAR="$2"; runtime="$3"; rounds="$4"; iodepth="$5"
size=256M
targets="snapbd-attach:/dev/nbd0 snapbd-nbdclient:/dev/nbd1 nbdkit-file:/dev/nbd2"
. "$root/benchmarks/kernel-guest.sh"
fio_job() {   # DEVICE RW LABEL ROUND
  fio --name="$3" --filename="$1" --rw="$2" --bs=4k --ioengine=libaio --iodepth="$iodepth" --direct=1 \
      --size=$size --time_based --runtime="$runtime" --ramp_time=3 --randrepeat=0 --norandommap \
      --output-format=json --output="$out/fio-$3-$2-$4.json" >/dev/null 2>&1 \
    || log "fio $3 $2 failed"
}
kg_setup
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
kg_teardown
GUEST

echo "kernel-compare: booting UML (runtime ${runtime}s, ${rounds} round(s), iodepth ${iodepth}); output in $out" >&2
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
start=$(date +%s)
bl_uml_run $(( 900 + rounds * 6 * (runtime + 10) )) "$out" "$out/guest.sh" "$ROOT" "$jar" "$runtime" "$rounds" "$iodepth" \
  || die "the UML run failed; see $out/guest.log and $out/console.log"
elapsed=$(( $(date +%s) - start ))
export KC_LOAD="host load average before: $load_before, after: $(cut -d' ' -f1-3 /proc/loadavg)"
export KC_CMD="benchmarks/kernel-compare.sh --runtime $runtime --rounds $rounds --iodepth $iodepth"

# One line per fio run: label rw iops p50 p99 (µs).
for f in "$out"/fio-*.json; do
  [ -e "$f" ] || continue
  name=$(basename "$f" .json); name=${name#fio-}; rw=${name%-*}; rw=${rw##*-}; label=${name%-*-*}
  ddir=read; [ "$rw" = randwrite ] && ddir=write
  if v=$(python3 "$FIO_SUMMARY" --lenient --ddir "$ddir" "$f" iops p50_us p99_us); then echo "$label $rw $v"
  else echo "unreadable $f" >&2; fi
done > "$out/runs.txt"
python3 - "$out" "$runtime" "$rounds" "$iodepth" "$elapsed" "${markdown}" <<'PY'
import os, platform, statistics, sys
out, runtime, rounds, iodepth, elapsed, markdown = sys.argv[1:7]
rows = {}
for line in open(os.path.join(out, "runs.txt")):
    label, rw, *v = line.split()
    if len(v) == 3:
        rows.setdefault((rw, label), []).append(tuple(float(x) for x in v))
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
