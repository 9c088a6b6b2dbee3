#!/usr/bin/env bash
# Kernel path latency: the lat-dev-* fio jobs (per-I/O latency logs, libaio, O_DIRECT) on /dev/nbdN through the
# real nbd driver inside User-Mode Linux (see docs/kernel-attach.md and kernel-compare.sh), against
#   snapbd-attach     snapbd, attached with `snapbd attach` (socket pair, ioctls)       /dev/nbd0
#   snapbd-nbdclient  snapbd, connected with nbd-client over its Unix socket            /dev/nbd1
#   nbdkit-file       nbdkit's file plugin, connected with nbd-client over its Unix socket /dev/nbd2
# on equal backings in guest memory (tmpfs), written once in full before the measured jobs. The guest writes
# fio's logs into the output directory (the host's file system is the guest's root), and the host converts
# them with `benchmarks/bench fio2hgrm` into OUT/SERVER-JOB-read.hgrm / OUT/SERVER-JOB-write.hgrm (µs).
#
#   benchmarks/kernel-latency.sh [--runtime S] [--jobs randwrite,randrw,seqwrite] [--servers LIST]
#                                [--iodepth N] [--size SIZE] [--skip-ms N] [--log lat|clat] [--out DIR]
#
# Defaults: --runtime 20 (after a 2 s ramp), --jobs randwrite, --servers snapbd-attach,nbdkit-file,
# --iodepth 32, --size 256M, --log lat (total latency; clat = completion only), --out
# benchmarks/target/kernel-latency. UML is slow and its single CPU runs the server, the driver and fio:
# compare servers measured in one boot only.
# Needs the built jars (mvn -B -q -DskipTests package: nbd-server/target/snapbd.jar and
# benchmarks/target/snapbd-bench.jar) and the Debian packages user-mode-linux, busybox-static, nbd-client, fio,
# nbdkit (and gcc on hosts with AMX, for the UML shim).
set -euo pipefail
root="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
runtime=20 jobs=randwrite servers=snapbd-attach,nbdkit-file iodepth=32 size=256M skip_ms=0 log=lat
out="$root/benchmarks/target/kernel-latency"
die() { echo "kernel-latency: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --runtime) runtime="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    --servers) servers="$2"; shift 2 ;;
    --iodepth) iodepth="$2"; shift 2 ;;
    --size) size="$2"; shift 2 ;;
    --skip-ms) skip_ms="$2"; shift 2 ;;
    --log) log="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[[ "$runtime" =~ ^[1-9][0-9]*$ ]] || die "--runtime must be a positive number of seconds"
[[ "$iodepth" =~ ^[1-9][0-9]*$ ]] || die "--iodepth must be a positive integer"
case "$log" in lat|clat) ;; *) die "--log must be lat or clat, not '$log'" ;; esac
jobfiles=""
for j in ${jobs//,/ }; do
  case "$j" in randwrite) jobfiles+=" lat-dev-randwrite-4k" ;; randrw) jobfiles+=" lat-dev-randrw-4k" ;;
    seqwrite) jobfiles+=" lat-dev-seqwrite-64k" ;; *) die "unknown job '$j' (randwrite, randrw, seqwrite)" ;; esac
done
targets=""
for s in ${servers//,/ }; do
  case "$s" in snapbd-attach) targets+=" $s:/dev/nbd0" ;; snapbd-nbdclient) targets+=" $s:/dev/nbd1" ;;
    nbdkit-file) targets+=" $s:/dev/nbd2" ;; *) die "unknown server '$s' (snapbd-attach, snapbd-nbdclient, nbdkit-file)" ;; esac
done
[ -n "$jobfiles" ] && [ -n "$targets" ] || die "no jobs or no servers"
jar="${SNAPBD_JAR:-$root/nbd-server/target/snapbd.jar}"
bench_jar="${SNAPBD_BENCH_JAR:-$root/benchmarks/target/snapbd-bench.jar}"
for f in "$jar" "$bench_jar"; do
  [ -f "$f" ] || { echo "kernel-latency: $f is missing: run 'mvn -B -q -DskipTests package' first" >&2; exit 1; }
done
for t in /usr/bin/linux.uml nbd-client fio nbdkit java; do
  command -v "$t" >/dev/null 2>&1 || { echo "kernel-latency: $t is missing (see the header of this script)" >&2; exit 1; }
done
mkdir -p "$out"
out="$(cd "$out" && pwd)"
rm -rf "$out/raw" "$out"/*.hgrm "$out/guest.sh" "$out/guest.log" "$out/guest.rc" "$out/server.log"
mkdir -p "$out/raw"

# ---- the part that runs inside UML ---------------------------------------------------------------------
cat > "$out/guest.sh" <<'GUEST'
set -u
root="$1"; export SNAPBD_JAR="$2"; runtime="$3"; iodepth="$4"; size="$5"; jobfiles="$6"; targets="$7"
out="$KT_OUT"
export SNAPBD_DATA_DIR=/run/snapbd-data
log() { echo "[$(date +%H:%M:%S)] $*"; }
fill() { fio --name=fill --filename="$1" --rw=write --bs=1M --ioengine=libaio --iodepth=4 --direct=1 --size="$size" >/dev/null 2>&1 \
           || log "fill $1 failed"; }
cli() { SNAPBD_JAVA_OPTS="-XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Xmx128m" "$root/bin/snapbd" "$@"; }
want() { case " $targets " in *" $1:"*) return 0 ;; *) return 1 ;; esac; }

status=0
if want snapbd-attach || want snapbd-nbdclient; then
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
  grep -q 'snapbd ready' "$out/server.log" || { log "snapbd did not start; see server.log"; status=1; }
fi
if want snapbd-attach; then cli attach vol0 /dev/nbd0 || { log "attach failed"; status=1; }; fi
if want snapbd-nbdclient; then
  nbd-client -unix "$SNAPBD_DATA_DIR/nbd.sock" /dev/nbd1 -N vol0 -b 4096 >/dev/null || { log "nbd-client (snapbd) failed"; status=1; }
fi
if want nbdkit-file; then
  truncate -s 0 /run/nbdkit.img && fallocate -l "$size" /run/nbdkit.img
  nbdkit --unix /run/nbdkit.sock --pidfile /run/nbdkit.pid file /run/nbdkit.img
  for _ in $(seq 1 100); do [ -S /run/nbdkit.sock ] && break; sleep 0.1; done
  nbd-client -unix /run/nbdkit.sock /dev/nbd2 -b 4096 >/dev/null || { log "nbd-client (nbdkit) failed"; status=1; }
fi
log "filling the backings once"
for s in $targets; do [ "${s%%:*}" = snapbd-nbdclient ] || fill "${s#*:}"; done   # nbd1 is the same volume as nbd0

for job in $jobfiles; do
  for s in $targets; do
    name="${s%%:*}"; dev="${s#*:}"; dir="$out/raw/$name-${job#lat-dev-}"
    mkdir -p "$dir"
    log "$job on $name ($dev)"
    # The logs land in fio's working directory (write_lat_log=JOB in the job file), i.e. on the host.
    (cd "$dir" && NBD_DEV="$dev" SIZE="$size" RUNTIME="$runtime" IODEPTH="$iodepth" \
       fio --output-format=json --output="$dir/fio.json" "$root/benchmarks/fio/$job.fio" >"$dir/fio.stdout" 2>"$dir/fio.stderr") \
      || { log "fio $job on $name failed: $(tail -3 "$dir/fio.stderr")"; status=1; }
  done
done
sync
if want snapbd-nbdclient; then nbd-client -d /dev/nbd1 >/dev/null; fi
if want nbdkit-file; then nbd-client -d /dev/nbd2 >/dev/null; kill "$(cat /run/nbdkit.pid)"; fi
if want snapbd-attach; then cli detach /dev/nbd0 || log "detach failed"; fi
if [ -n "${server:-}" ]; then
  kill -TERM "$server"
  for _ in $(seq 1 240); do [ -d /proc/$server ] && ! grep -q "^State:.*Z" /proc/$server/status 2>/dev/null || break; sleep 0.5; done
fi
log "done"
exit $status
GUEST

njobs=$(( $(wc -w <<<"$jobfiles") * $(wc -w <<<"$targets") ))
echo "kernel-latency: booting UML ($njobs fio run(s) of ${runtime}s + 2s ramp, iodepth $iodepth, size $size); output in $out" >&2
start=$(date +%s)
guest_rc=0
UML_TIMEOUT=$(( 900 + njobs * (runtime + 30) )) \
  bash "$root/nbd-server/src/test/resources/kernel/uml-run.sh" "$out" "$out/guest.sh" "$root" "$jar" "$runtime" "$iodepth" \
    "$size" "$jobfiles" "$targets" || guest_rc=$?
echo "kernel-latency: UML run took $(( $(date +%s) - start ))s (guest exit $guest_rc); guest log: $out/guest.log" >&2
if [ "$guest_rc" -ge 124 ]; then
  echo "kernel-latency: the UML run failed; see $out/guest.log and $out/console.log" >&2
  exit 1
fi

# ---- on the host: convert the logs ---------------------------------------------------------------------
export SNAPBD_BENCH_JAVA_OPTS="${SNAPBD_BENCH_JAVA_OPTS:--Xmx1g}"
rc=0
for job in $jobfiles; do
  for s in $targets; do
    label="${s%%:*}-${job#lat-dev-}"
    SNAPBD_BENCH_JAR="$bench_jar" "$root/benchmarks/bench" fio2hgrm --out "$out" --label "$label" --skip-ms "$skip_ms" \
      "$out/raw/$label/${job}_$log" || rc=1
  done
done
[ "$guest_rc" -eq 0 ] || { echo "kernel-latency: the guest reported errors; see $out/guest.log" >&2; rc=1; }
exit $rc
