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
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib.sh" kernel-latency
BL_DIE_STATUS=2
runtime=20 jobs=randwrite servers=snapbd-attach,nbdkit-file iodepth=32 size=256M skip_ms=0 log=lat
out="$ROOT/benchmarks/target/kernel-latency"
usage() { bl_header_usage 2 20; }
bl_options usage --runtime runtime --jobs jobs --servers servers --iodepth iodepth --size size --skip-ms skip_ms \
  --log log --out out -- "$@"
bl_positive --runtime "$runtime"
bl_positive --iodepth "$iodepth"
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
BL_DIE_STATUS=1
bl_require_jars snapbd bench
jar=$(bl_snapbd_jar) bench_jar=$(bl_bench_jar)
bl_kernel_need nbd-client fio nbdkit java
mkdir -p "$out"
out="$(cd "$out" && pwd)"
rm -rf "$out/raw" "$out"/*.hgrm "$out/guest.sh" "$out/guest.log" "$out/guest.rc" "$out/server.log"
mkdir -p "$out/raw"

# ---- the part that runs inside UML (setup and teardown: kernel-guest.sh) --------------------------------
cat > "$out/guest.sh" <<'GUEST'
set -u
root="$1"; export SNAPBD_JAR="$2"; runtime="$3"; iodepth="$4"; size="$5"; jobfiles="$6"; targets="$7"
. "$root/benchmarks/kernel-guest.sh"
kg_setup
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
kg_teardown
exit $status
GUEST

njobs=$(( $(wc -w <<<"$jobfiles") * $(wc -w <<<"$targets") ))
echo "kernel-latency: booting UML ($njobs fio run(s) of ${runtime}s + 2s ramp, iodepth $iodepth, size $size); output in $out" >&2
start=$(date +%s)
guest_rc=0
bl_uml_run $(( 900 + njobs * (runtime + 30) )) "$out" "$out/guest.sh" "$ROOT" "$jar" "$runtime" "$iodepth" \
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
    SNAPBD_BENCH_JAR="$bench_jar" "$BENCH" fio2hgrm --out "$out" --label "$label" --skip-ms "$skip_ms" \
      "$out/raw/$label/${job}_$log" || rc=1
  done
done
[ "$guest_rc" -eq 0 ] || { echo "kernel-latency: the guest reported errors; see $out/guest.log" >&2; rc=1; }
exit $rc
