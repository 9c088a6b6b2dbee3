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
root="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
uri="" label="" out="" runtime=30 job=randwrite size=1G iodepth=32 skip_ms=0 log=lat memory=0
die() { echo "fio-latency: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --uri) uri="$2"; shift 2 ;;
    --label) label="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --runtime) runtime="$2"; shift 2 ;;
    --job) job="$2"; shift 2 ;;
    --size) size="$2"; shift 2 ;;
    --iodepth) iodepth="$2"; shift 2 ;;
    --skip-ms) skip_ms="$2"; shift 2 ;;
    --log) log="$2"; shift 2 ;;
    --nbdkit-memory) memory=1; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[ -n "$label" ] || die "--label NAME is required"
[ -n "$out" ] || die "--out DIR is required"
[ -n "$uri" ] || [ "$memory" = 1 ] || die "--uri URI (or --nbdkit-memory) is required"
[ -z "$uri" ] || [ "$memory" = 0 ] || die "--uri and --nbdkit-memory exclude each other"
case "$job" in randwrite) jobfile=lat-nbd-randwrite-4k ;; randrw) jobfile=lat-nbd-randrw-4k ;;
  seqwrite) jobfile=lat-nbd-seqwrite-64k ;; *) die "--job must be randwrite, randrw or seqwrite, not '$job'" ;; esac
case "$log" in lat|clat) ;; *) die "--log must be lat or clat, not '$log'" ;; esac
[[ "$runtime" =~ ^[1-9][0-9]*$ ]] || die "--runtime must be a positive number of seconds"
[[ "$iodepth" =~ ^[1-9][0-9]*$ ]] || die "--iodepth must be a positive integer"
command -v fio >/dev/null || die "fio is missing (apt-get install fio)"
fio --enghelp=nbd >/dev/null 2>&1 || die "this fio has no nbd engine (fio --enghelp=nbd)"
jar="${SNAPBD_BENCH_JAR:-$root/benchmarks/target/snapbd-bench.jar}"
[ -f "$jar" ] || die "$jar is missing: build first (mvn -B -q -DskipTests package)"

mkdir -p "$out"
out="$(cd "$out" && pwd)"
raw="$out/$label.fio"
rm -rf "$raw"
mkdir -p "$raw"

tmp=""
nbdkit_pid=""
cleanup() {
  if [ -n "$nbdkit_pid" ]; then kill "$nbdkit_pid" 2>/dev/null || true; fi
  if [ -n "$tmp" ]; then rm -rf "$tmp"; fi
}
trap cleanup EXIT
if [ "$memory" = 1 ]; then
  command -v nbdkit >/dev/null || die "nbdkit is missing (apt-get install nbdkit)"
  tmp="$(mktemp -d "${TMPDIR:-/tmp}/fio-latency.XXXXXX")"
  nbdkit --unix "$tmp/nbd.sock" --pidfile "$tmp/nbdkit.pid" memory "$size" >"$raw/nbdkit.log" 2>&1 \
    || die "nbdkit failed to start; see $raw/nbdkit.log"
  for _ in $(seq 1 100); do [ -s "$tmp/nbdkit.pid" ] && [ -S "$tmp/nbd.sock" ] && break; sleep 0.1; done
  nbdkit_pid="$(cat "$tmp/nbdkit.pid")"
  uri="nbd+unix:///?socket=$tmp/nbd.sock"
fi

echo "fio-latency: $jobfile, ${runtime}s + 2s ramp, iodepth $iodepth, size $size, $uri -> $raw" >&2
printf '%q ' "$0" --uri "$uri" --label "$label" --out "$out" --runtime "$runtime" --job "$job" --size "$size" \
  --iodepth "$iodepth" --skip-ms "$skip_ms" --log "$log" > "$raw/command.txt"
echo >> "$raw/command.txt"
# The logs go to fio's working directory (write_lat_log=JOBFILE in the job file).
if ! (cd "$raw" && NBD_URI="$uri" SIZE="$size" RUNTIME="$runtime" IODEPTH="$iodepth" \
      fio --output-format=json --output="$raw/fio.json" "$root/benchmarks/fio/$jobfile.fio" >"$raw/fio.stdout" 2>"$raw/fio.stderr"); then
  cat "$raw/fio.stderr" >&2
  die "fio failed; see $raw/fio.stderr and $raw/fio.json"
fi
export SNAPBD_BENCH_JAVA_OPTS="${SNAPBD_BENCH_JAVA_OPTS:--Xmx1g}"
SNAPBD_BENCH_JAR="$jar" "$root/benchmarks/bench" fio2hgrm --out "$out" --label "$label" --skip-ms "$skip_ms" \
  "$raw/${jobfile}_$log"
