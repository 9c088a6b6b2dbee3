#!/usr/bin/env bash
# fio with per-I/O latency logs against an NBD export (fio's nbd engine), converted to .hgrm (µs) with
# `benchmarks/bench fio2hgrm`, so fio runs land on the same plots as the Java harness.
#
#   benchmarks/fio-latency.sh --uri URI --label NAME --out DIR [--runtime S] [--job randwrite|randrw|seqwrite]
#                             [--size SIZE] [--iodepth N] [--skip-ms N] [--log lat|clat]
#   benchmarks/fio-latency.sh --nbdkit-memory --label NAME --out DIR ...   (self-test: serves nbdkit's memory plugin)
#
# Runs benchmarks/fio/lat-nbd-JOB.fio (defaults: 30 s after a 2 s ramp, SIZE 1G, iodepth 32) with its logs in
# DIR/NAME.fio/ (fio.json, JOB_lat.1.log, _clat, _slat), then writes DIR/NAME-read.hgrm and/or DIR/NAME-write.hgrm
# from the total-latency (_lat) logs (--log clat for completion latency only) and prints one summary line per
# direction. --nbdkit-memory starts `nbdkit -U SOCK memory SIZE` in a temp dir instead of using --uri, and stops
# it at the end: an end-to-end check of the pipeline that needs no snapbd.
# Needs fio with the nbd engine, java, and the built benchmarks/target/snapbd-bench.jar (mvn -B -q -DskipTests package).
set -euo pipefail
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib.sh" fio-latency
BL_DIE_STATUS=2
uri="" label="" out="" runtime=30 job=randwrite size=1G iodepth=32 skip_ms=0 log=lat memory=0
usage() { bl_header_usage 2 16; }
bl_options usage --uri uri --label label --out out --runtime runtime --job job --size size --iodepth iodepth \
  --skip-ms skip_ms --log log --nbdkit-memory memory=1 -- "$@"
[ -n "$label" ] || die "--label NAME is required"
[ -n "$out" ] || die "--out DIR is required"
[ -n "$uri" ] || [ "$memory" = 1 ] || die "--uri URI (or --nbdkit-memory) is required"
[ -z "$uri" ] || [ "$memory" = 0 ] || die "--uri and --nbdkit-memory exclude each other"
case "$job" in randwrite) jobfile=lat-nbd-randwrite-4k ;; randrw) jobfile=lat-nbd-randrw-4k ;;
  seqwrite) jobfile=lat-nbd-seqwrite-64k ;; *) die "--job must be randwrite, randrw or seqwrite, not '$job'" ;; esac
case "$log" in lat|clat) ;; *) die "--log must be lat or clat, not '$log'" ;; esac
bl_positive --runtime "$runtime"
bl_positive --iodepth "$iodepth"
bl_need_fio_nbd
bl_require_jars bench

mkdir -p "$out"
out="$(cd "$out" && pwd)"
raw="$out/$label.fio"
rm -rf "$raw"
mkdir -p "$raw"

bl_traps
if [ "$memory" = 1 ]; then
  command -v nbdkit >/dev/null || die "nbdkit is missing (apt-get install nbdkit)"
  tmp="$(mktemp -d "${TMPDIR:-/tmp}/fio-latency.XXXXXX")"
  bl_on_exit "$tmp"
  bl_start_nbdkit nbdkit "$tmp/nbd.sock" "$raw/nbdkit.log" memory "$size"
  uri="nbd+unix:///?socket=$tmp/nbd.sock"
fi

echo "fio-latency: $jobfile, ${runtime}s + 2s ramp, iodepth $iodepth, size $size, $uri -> $raw" >&2
printf '%q ' "$0" --uri "$uri" --label "$label" --out "$out" --runtime "$runtime" --job "$job" --size "$size" \
  --iodepth "$iodepth" --skip-ms "$skip_ms" --log "$log" > "$raw/command.txt"
echo >> "$raw/command.txt"
# The logs go to fio's working directory (write_lat_log=JOBFILE in the job file).
(cd "$raw" && bl_fio_job "$BENCH_DIR/fio/$jobfile.fio" "$raw/fio.json" NBD_URI="$uri" SIZE="$size" RUNTIME="$runtime" \
  IODEPTH="$iodepth") || die "fio failed; see $raw/fio.stderr and $raw/fio.json"
export SNAPBD_BENCH_JAVA_OPTS="${SNAPBD_BENCH_JAVA_OPTS:--Xmx1g}"
SNAPBD_BENCH_JAR="$(bl_bench_jar)" "$BENCH" fio2hgrm --out "$out" --label "$label" --skip-ms "$skip_ms" \
  "$raw/${jobfile}_$log"
