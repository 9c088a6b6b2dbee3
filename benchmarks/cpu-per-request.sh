#!/usr/bin/env bash
# cpu-per-request.sh — issue 27's "measure first": for snapbd, nbdkit's file plugin and qemu-nbd (each on a Unix
# socket, a preallocated volume written once through NBD, as in compare-peers.sh), and for each job
#   randread-4k-qd1    4 KiB random reads, depth 1, 1 connection
#   randread-4k-qd32   4 KiB random reads, depth 32 in all (8 per connection), 4 connections
#   randwrite-4k-qd32  4 KiB random writes, depth 32, 1 connection
# (fio --ioengine=nbd, RUNTIME seconds, no ramp) it measures, per request completed (fio's JSON):
#   - the server's CPU time: utime+stime from /proc/PID/stat (all threads, exited ones included), before/after,
#     and the share of it spent in the kernel (stime);
#   - context switches: voluntary + involuntary, summed over /proc/PID/task/*/status (polled every 50 ms, so a
#     thread that exits during the job counts up to its last sample);
#   - system calls: a second, separate run of the same job under `strace -c -f -p PID` (strace slows the server,
#     so IOPS there mean nothing, but the count per request does not depend on the load), and the top 5 calls.
# CPU µs and system calls per request depend much less on other load than IOPS do; on a shared machine read
# the IOPS column as context only.
#
# usage: benchmarks/cpu-per-request.sh [--size 1G] [--runtime 5] [--only snapbd,nbdkit,qemu-nbd]
#          [--jobs randread-4k-qd1,...] [--out DIR] [--markdown FILE] [--json] [--no-strace] [--jfr]
#   --jfr   also records a JFR profile (jcmd JFR.start, settings=profile) of snapbd during one extra randread-4k-qd32
#           run (OUT/snapbd-read.jfr) and counts threads and frames of its jdk.ExecutionSample and
#           jdk.NativeMethodSample events in OUT/jfr-top-frames.txt
# Output: the Markdown table on stdout (and in --markdown FILE), OUT/results.json (printed with --json).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh" cpu-per-request
HELPER=$BENCH_DIR/cpu-per-request.py

ALL_SERVERS=(snapbd nbdkit qemu-nbd)
ALL_JOBS=(randread-4k-qd1 randread-4k-qd32 randwrite-4k-qd32)
SIZE_ARG=1G RUNTIME=5 ONLY=snapbd,nbdkit,qemu-nbd JOBS_ARG="" OUT_DIR="" MARKDOWN="" JSON=0 STRACE=1 JFR=0
usage() { bl_header_usage 2 22; }
bl_options usage --size SIZE_ARG --runtime RUNTIME --only ONLY --jobs JOBS_ARG --out OUT_DIR --markdown MARKDOWN \
  --json JSON=1 --no-strace STRACE=0 --jfr JFR=1 -- "$@"
bl_positive --runtime "$RUNTIME"
SIZE_BYTES=$(bl_bytes "$SIZE_ARG") || die "bad --size '$SIZE_ARG'"
((SIZE_BYTES > 0 && SIZE_BYTES % (1 << 20) == 0)) || die "--size must be a multiple of 1 MiB"
if ((SIZE_BYTES % (1 << 30) == 0)); then SIZE_CANON=$((SIZE_BYTES >> 30))G; else SIZE_CANON=$((SIZE_BYTES >> 20))M; fi
IFS=, read -r -a SERVERS <<<"$ONLY"
for s in "${SERVERS[@]}"; do [[ " ${ALL_SERVERS[*]} " == *" $s "* ]] || die "--only: unknown server '$s'"; done
JOBS=("${ALL_JOBS[@]}")
[ -z "$JOBS_ARG" ] || IFS=, read -r -a JOBS <<<"$JOBS_ARG"
for j in "${JOBS[@]}"; do [[ " ${ALL_JOBS[*]} " == *" $j "* ]] || die "--jobs: unknown job '$j'"; done

bl_need_fio_nbd
bl_need nbdinfo python3 fallocate setsid
((STRACE == 0)) || bl_need strace
((JFR == 0)) || bl_need jfr jcmd
for s in "${SERVERS[@]}"; do
  case $s in snapbd) bl_require_jars snapbd ;; nbdkit) bl_need nbdkit ;; qemu-nbd) bl_need qemu-nbd ;; esac
done

[ -n "$OUT_DIR" ] || OUT_DIR=$BENCH_DIR/results/cpu-per-request-$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT_DIR/raw"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
bl_traps
WORK=$(mktemp -d "${TMPDIR:-/tmp}/cpr.XXXXXX")
bl_on_exit "$WORK"
declare -A URIS=() SPID=()

start_server() {   # NAME [JAVA-OPTS]
  local name=$1 sock=$WORK/$1.sock logf=$OUT_DIR/server-$1.log
  case $name in
    nbdkit)
      [ -f "$WORK/nbdkit.img" ] || fallocate -l "$SIZE_BYTES" "$WORK/nbdkit.img"
      bl_start_nbdkit "$name" "$sock" "$logf" file "$WORK/nbdkit.img"
      URIS[$name]="nbd+unix:///?socket=$sock" ;;
    qemu-nbd)
      [ -f "$WORK/qemu-nbd.img" ] || fallocate -l "$SIZE_BYTES" "$WORK/qemu-nbd.img"
      bl_start_qemu_nbd "$name" "$sock" "$logf" "$WORK/qemu-nbd.img"
      URIS[$name]="nbd+unix:///?socket=$sock" ;;
    snapbd)
      if [ ! -d "$WORK/snapbd-data" ]; then
        mkdir -p "$WORK/snapbd-data"
        "$SNAPBD" volume create bench --size "$SIZE_CANON" --save-size 64M --data-dir "$WORK/snapbd-data" \
          >"$OUT_DIR/snapbd-volume-create.log" 2>&1 </dev/null || die "volume create failed ($OUT_DIR/snapbd-volume-create.log)"
      fi
      SNAPBD_JAVA_OPTS="${2:-}" bl_start_snapbd -a "$name" "$WORK/snapbd-data" "$sock" "$logf"
      URIS[$name]="nbd+unix:///bench?socket=$sock" ;;
  esac
  bl_wait "$name" "$logf" nbdinfo --size "${URIS[$name]}"
  SPID[$name]=$(bl_server_pid "$name")
}

# run_job NAME JOB JSON: the fio job against NAME, output in JSON.
run_job() {
  local uri=${URIS[$1]} job=$2 json=$3 a=()
  case $job in
    randread-4k-qd1) a=(--rw=randread --iodepth=1 --numjobs=1) ;;
    randread-4k-qd32) a=(--rw=randread --iodepth=8 --numjobs=4) ;;
    randwrite-4k-qd32) a=(--rw=randwrite --iodepth=32 --numjobs=1) ;;
  esac
  fio --name="$job" --ioengine=nbd --uri="$uri" --size="$SIZE_BYTES" --bs=4k "${a[@]}" --group_reporting \
    --time_based --runtime="$RUNTIME" --randrepeat=0 --norandommap --output-format=json --output="$json" \
    >"${json%.json}.stderr" 2>&1 </dev/null || { tail -n 20 "${json%.json}.stderr" >&2; die "fio failed: $job on $1"; }
  bl_alive "$1" "$OUT_DIR/server-$1.log"
}

# measure NAME JOB: one line of runs.tsv.
measure() {
  local name=$1 job=$2 pid=${SPID[$1]} base=$OUT_DIR/raw/$2-$1 stop=$WORK/stop u0 s0 u1 s1 t0 t1 ctx ios iops secs ios_s=0 st='{"calls": 0, "top": []}'
  rm -f "$stop"
  sync
  nice python3 "$HELPER" ctxsample "$pid" "$stop" >"$base.ctx" &
  local sampler=$!
  until [ -s "$base.ctx" ]; do sleep 0.05; done
  read -r u0 s0 < <(python3 "$HELPER" cpu "$pid"); t0=$(date +%s.%N)
  run_job "$name" "$job" "$base.json"
  read -r u1 s1 < <(python3 "$HELPER" cpu "$pid"); t1=$(date +%s.%N)
  touch "$stop"; wait "$sampler"
  ctx=$(tail -n 1 "$base.ctx")
  read -r ios iops < <(python3 "$FIO_SUMMARY" "$base.json" ios iops)
  secs=$(python3 -c "print(f'{$t1 - $t0:.3f}')")
  if ((STRACE)); then
    strace -c -f -S calls -o "$base.strace" -p "$pid" 2>"$base.strace.stderr" &
    local tracer=$!
    sleep 1   # strace attaches to every thread
    run_job "$name" "$job" "$base-strace.json"
    kill -INT "$tracer"; wait "$tracer" || true
    ios_s=$(python3 "$FIO_SUMMARY" "$base-strace.json" ios)
    st=$(python3 "$HELPER" strace "$base.strace")
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$job" "$ios" "$secs" "$iops" "$((u1 + s1 - u0 - s0))" \
    "${ctx% *}" "${ctx#* }" "$ios_s" "$(python3 -c "import json,sys; d=json.loads(sys.argv[1]); print(d['calls'], json.dumps(d['top']), sep='\t')" "$st")" "$((s1 - s0))" \
    >>"$TSV"
  log "  $job on $name: $ios requests, $(tail -n 1 "$TSV" | cut -f6) µs CPU, ctx $ctx, strace: $ios_s requests, $(tail -n 1 "$TSV" | cut -f10) calls"
}

TSV=$OUT_DIR/runs.tsv
: >"$TSV"
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
for name in "${SERVERS[@]}"; do
  log "== $name: start, prefill $SIZE_CANON once"
  start_server "$name"
  bl_fio_prefill "${URIS[$name]}" "$SIZE_BYTES"
  for job in "${JOBS[@]}"; do measure "$name" "$job"; done
  bl_stop "$name"
done

if ((JFR)) && [[ " ${SERVERS[*]} " == *" snapbd "* ]]; then
  # The recording covers the job only (jcmd JFR.start/JFR.dump on the running server), not the server's start-up
  # work (e.g. the copy-on-write warm-up), which -XX:StartFlightRecording in SNAPBD_JAVA_OPTS would include.
  log "== snapbd under JFR (settings=profile): randread-4k-qd32"
  start_server snapbd
  jcmd "${SPID[snapbd]}" JFR.start name=cpr settings=profile >"$OUT_DIR/raw/jfr-start.log" 2>&1 || die "jcmd JFR.start failed"
  run_job snapbd randread-4k-qd32 "$OUT_DIR/raw/jfr-randread-4k-qd32.json"
  jcmd "${SPID[snapbd]}" JFR.dump name=cpr filename="$OUT_DIR/snapbd-read.jfr" >>"$OUT_DIR/raw/jfr-start.log" 2>&1 || die "jcmd JFR.dump failed"
  bl_stop snapbd
  # Java samples (jdk.ExecutionSample: thread running Java code) and native samples (jdk.NativeMethodSample:
  # thread inside a native method, e.g. a read/write system call), counted by thread, innermost frame and
  # frame anywhere in the stack (64 frames deep).
  jfr print --stack-depth 64 --events jdk.ExecutionSample,jdk.NativeMethodSample "$OUT_DIR/snapbd-read.jfr" \
    >"$OUT_DIR/jfr-samples.txt"
  python3 - "$OUT_DIR/jfr-samples.txt" >"$OUT_DIR/jfr-top-frames.txt" <<'EOF2'
import collections, re, sys
kinds = {}
event = thread = frames = None
def done():
    if event and frames:
        k = kinds.setdefault(event, [0, collections.Counter(), collections.Counter(), collections.Counter()])
        k[0] += 1
        k[1][thread] += 1
        k[2][frames[0]] += 1
        for f in set(frames):
            k[3][f] += 1
for line in open(sys.argv[1]):
    s = line.strip()
    m = re.match(r"(jdk\.\w+) \{", s)
    if m:
        event, thread, frames = m.group(1), "?", None
    elif s.startswith("sampledThread = "):
        thread = re.sub(r" \(javaThreadId.*", "", s[len("sampledThread = "):])
    elif s.startswith("stackTrace = ["):
        frames = []
    elif frames is not None and s.startswith("]"):
        done()
        event = frames = None
    elif frames is not None and s and s != "...":
        frames.append(re.sub(r"\s+line:.*", "", s))
for name, (n, threads, top, incl) in sorted(kinds.items()):
    print(f"== {name}: {n} samples")
    print("threads:")
    for f, c in threads.most_common(8):
        print(f"  {100 * c / n:5.1f}%  {f}")
    print("innermost frames:")
    for f, c in top.most_common(15):
        print(f"  {100 * c / n:5.1f}%  {f}")
    print("inclusive (frame anywhere in the stack):")
    for f, c in incl.most_common(30):
        print(f"  {100 * c / n:5.1f}%  {f}")
    print()
EOF2
  log "JFR top frames: $OUT_DIR/jfr-top-frames.txt"
fi

HEADER="Command: \`benchmarks/cpu-per-request.sh $*\` on $(nproc) CPUs, git $(bl_git_rev), $(date -u +%Y-%m-%dT%H:%MZ), \
${RUNTIME} s per job, load average $LOAD0 at start, $(cut -d' ' -f1-3 /proc/loadavg) at end."
python3 "$HELPER" report "$TSV" "$MARKDOWN" "$OUT_DIR/results.json" "$HEADER"
log "results: $OUT_DIR"
((JSON == 0)) || cat "$OUT_DIR/results.json"
