#!/usr/bin/env bash
# compare-peers.sh — run the same fio jobs against snapbd, nbdkit's file plugin
# and qemu-nbd, in one run, interleaved, and report IOPS, the server's CPU time
# per request, p50/p99/p99.9 latency and the ratios to the better peer.
#
# Every server listens on its own Unix socket in a private temp dir and serves
# an export of exactly SIZE bytes backed by a file on the same filesystem.
# fio talks to them with its libnbd engine (--ioengine=nbd --uri=...), one
# connection per fio job. A job is described by its name (see --help);
# benchmarks/fio/nbd-job.fio runs it.
#
# CPU per request: the server process's utime+stime (/proc/PID/stat, all its
# threads) from the end of fio's ramp to the end of the job, divided by the
# requests fio completed after the ramp.
#
# Order: for each round, for each job, each server runs the job once
# (job1/snapbd, job1/nbdkit, job1/qemu-nbd, job2/...). The server order is
# rotated by one position per round so no server always runs right after the
# same neighbour (whose dirty pages the kernel may still be writing back).
# `sync` runs (untimed) before each job for the same reason. Each reported
# number is the median over rounds of that metric.
#
# Run with --help for the options.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh" compare-peers
BL_DIE_PREFIX="error: "
FIO_DIR=$BENCH_DIR/fio

ALL_SERVERS=(snapbd nbdkit qemu-nbd)
# The default (short) set, and issue 27's matrix (--jobs full): depth 1 and 32, one and four connections, reads
# and writes, 4 KiB random and 1 MiB sequential, and a 70/30 random read/write mix.
QUICK_JOBS=(randwrite-4k-qd1 randwrite-4k-qd32 randread-4k-qd1 randread-4k-qd32 seqwrite-1m-qd8)
FULL_JOBS=()
for _rw in randread-4k randwrite-4k seqread-1m seqwrite-1m; do
  FULL_JOBS+=("$_rw-qd1" "$_rw-qd4-c4" "$_rw-qd32" "$_rw-qd32-c4")
done
FULL_JOBS+=(randrw70-4k-qd1 randrw70-4k-qd32 randrw70-4k-qd32-c4)
BAR=0.8                  # performance bar: snapbd IOPS >= BAR x nbdkit on every row
BASE_JAR=""              # --baseline: a second snapbd (e.g. main's jar) on the rows that write
BASE_READS=0             # --baseline-reads: snapbd-base runs the read-only rows too
SNAPBD_SAVE_SIZE=64M     # save volume of the benchmark volume (no snapshots are taken)
SNAPBD_EXPORT=bench

SIZE_ARG=1G
RUNTIME=20
ROUNDS=3
OUT_DIR=""
ONLY="snapbd,nbdkit,qemu-nbd"
JOBS_ARG=""
MARKDOWN=""
JSON=0
STRICT=0
TMP_PARENT=${TMPDIR:-/tmp}
SNAPBD_BIN=$SNAPBD
ORIG_ARGS=("$@")

usage() {
  cat <<EOF
Usage: benchmarks/compare-peers.sh [options]

Runs the same fio jobs (fio --ioengine=nbd over a Unix socket) against snapbd,
nbdkit's file plugin and qemu-nbd on equal, preallocated, fully written
backing files, interleaved, and prints IOPS, the server's CPU time per request,
p50/p99/p99.9 completion latency and the ratios to the better of nbdkit and
qemu-nbd on each row (median over rounds).

A job's name says what it does: KIND-BS-qdDEPTH[-cCONNS]
  KIND   randread, randwrite, seqread, seqwrite, or randrw70 (random, 70 % reads)
  BS     4k or 1m
  DEPTH  requests in flight in all, spread evenly over CONNS connections
         (default 1): qd32-c4 is 4 connections x 8, qd4-c4 is 4 x 1
Sequential jobs on several connections give each its own share of the export.

Default jobs (short): ${QUICK_JOBS[*]}
--jobs full: ${FULL_JOBS[*]}

Options:
  --size SIZE        export / backing file size (default 1G; K/M/G/T are
                     powers of 1024; must be a multiple of 1 MiB)
  --runtime SECONDS  measured seconds per job, after a 2 s ramp (default 20)
  --rounds N         rounds; each runs every job on every server (default 3)
  --out DIR          results directory (default benchmarks/results/<timestamp>)
  --only LIST        comma-separated subset of: snapbd,nbdkit,qemu-nbd
                     (default: all three)
  --jobs LIST        comma-separated job names (any name of the form above),
                     or 'full' for issue 27's matrix (default: the short set)
  --baseline JAR     also run the jobs that write on a second snapbd started
                     from JAR (e.g. main's snapbd.jar): server 'snapbd-base',
                     and snapbd's IOPS / snapbd-base's IOPS in the report
  --baseline-reads   with --baseline: snapbd-base runs every job, not only
                     the jobs that write (a change to the read path)
  --markdown FILE    also write the result table as Markdown to FILE
  --json             also print the results as JSON on stdout
  --strict           exit with status 3 if snapbd is below ${BAR}x nbdkit's
                     IOPS on any row
  --tmpdir DIR       where the backing files and sockets go (default \$TMPDIR
                     or /tmp); needs about SIZE x servers of free space
  --snapbd PATH      snapbd launcher (default bin/snapbd in the repository)
  -h, --help         this help

Examples:
  benchmarks/compare-peers.sh --only nbdkit,qemu-nbd --runtime 10 --rounds 1
  benchmarks/compare-peers.sh --jobs full --runtime 5 --rounds 2 --baseline /tmp/main-snapbd.jar
  benchmarks/compare-peers.sh --jobs randread-4k-qd1,randrw70-4k-qd32-c4 --runtime 5 --rounds 1
EOF
}

# ---------------------------------------------------------------- options
bl_options usage --size SIZE_ARG --runtime RUNTIME --rounds ROUNDS --out OUT_DIR --only ONLY --jobs JOBS_ARG \
  --markdown MARKDOWN --json JSON=1 --strict STRICT=1 --baseline-reads BASE_READS=1 --tmpdir TMP_PARENT --snapbd SNAPBD_BIN --baseline BASE_JAR \
  -- "$@"
bl_positive --runtime "$RUNTIME"
bl_positive --rounds "$ROUNDS"

# SIZE -> bytes. K/M/G/T (optionally followed by i, B or iB) are binary, like fallocate -l and fio.
SIZE_BYTES=$(bl_bytes "$SIZE_ARG") || die "bad --size '$SIZE_ARG' (examples: 1G, 512M, 1073741824)"
((SIZE_BYTES > 0 && SIZE_BYTES % (1024 * 1024) == 0)) || die "--size must be a positive multiple of 1 MiB"
# Canonical spelling handed to snapbd's CLI (largest exact binary unit).
if ((SIZE_BYTES % (1024 ** 3) == 0)); then SIZE_CANON=$((SIZE_BYTES / 1024 ** 3))G
else SIZE_CANON=$((SIZE_BYTES / 1024 ** 2))M; fi

SERVERS=()
IFS=, read -r -a only_list <<<"$ONLY"
for s in "${only_list[@]}"; do
  case $s in snapbd|nbdkit|qemu-nbd) ;; *) die "--only: unknown server '$s' (snapbd, nbdkit, qemu-nbd)" ;; esac
done
for s in "${ALL_SERVERS[@]}"; do          # keep the canonical order
  for o in "${only_list[@]}"; do [[ $o == "$s" ]] && { SERVERS+=("$s"); break; }; done
done
((${#SERVERS[@]} > 0)) || die "--only selects no server"
if [[ -n $BASE_JAR ]]; then
  [[ -f $BASE_JAR ]] || die "--baseline: '$BASE_JAR' is not a file"
  BASE_JAR=$(cd "$(dirname "$BASE_JAR")" && pwd)/$(basename "$BASE_JAR")
  [[ " ${SERVERS[*]} " == *" snapbd "* ]] || die "--baseline needs snapbd among --only"
  SERVERS+=(snapbd-base)
fi

# job_spec NAME: prints "RW RWMIXREAD UNIFIED BS IODEPTH NUMJOBS" for fio (nbd-job.fio), or fails.
job_spec() {
  [[ $1 =~ ^(randread|randwrite|seqread|seqwrite|randrw70)-(4k|1m)-qd([1-9][0-9]*)(-c([1-9][0-9]*))?$ ]] || return 1
  local kind=${BASH_REMATCH[1]} bs=${BASH_REMATCH[2]} depth=${BASH_REMATCH[3]} conns=${BASH_REMATCH[5]:-1}
  ((depth % conns == 0)) || return 1
  local rw=$kind mix=50 unified=none
  case $kind in
    seqread) rw=read ;;
    seqwrite) rw=write ;;
    randrw70) rw=randrw mix=70 unified=mixed ;;
  esac
  echo "$rw $mix $unified $bs $((depth / conns)) $conns"
}
# writes_job NAME: the job writes (the rows --baseline runs).
writes_job() { [[ $1 == *write* || $1 == randrw* ]]; }

JOBS=()
if [[ -z $JOBS_ARG ]]; then
  JOBS=("${QUICK_JOBS[@]}")
elif [[ $JOBS_ARG == full ]]; then
  JOBS=("${FULL_JOBS[@]}")
else
  IFS=, read -r -a job_list <<<"$JOBS_ARG"
  for j in "${job_list[@]}"; do
    job_spec "$j" >/dev/null || die "--jobs: '$j' is not a job name (KIND-BS-qdDEPTH[-cCONNS], see --help)"
    [[ " ${JOBS[*]} " == *" $j "* ]] || JOBS+=("$j")
  done
fi
((${#JOBS[@]} > 0)) || die "--jobs selects no job"

has_server() { [[ " ${SERVERS[*]} " == *" $1 "* ]]; }
# runs_job SERVER JOB: whether SERVER runs JOB (snapbd-base only runs the jobs that write, unless --baseline-reads).
runs_job() { [[ $1 != snapbd-base ]] || ((BASE_READS)) || writes_job "$2"; }

# ---------------------------------------------------------------- prerequisites
need() { command -v "$1" >/dev/null 2>&1 || die "'$1' not found; $2"; }
need fio "apt-get install -y fio"
need nbdinfo "apt-get install -y libnbd-bin"
need python3 "python3 is used to parse fio's JSON output"
need fallocate "util-linux is required"
need setsid "util-linux is required"
fio --enghelp=nbd >/dev/null 2>&1 || die "this fio has no nbd engine (needs fio >= 3.20 built with libnbd)"
has_server nbdkit && need nbdkit "apt-get install -y nbdkit"
has_server qemu-nbd && need qemu-nbd "apt-get install -y qemu-utils"
if has_server snapbd; then
  [[ -x $SNAPBD_BIN ]] || die "snapbd launcher '$SNAPBD_BIN' is missing or not executable; build snapbd first, pass --snapbd PATH, or leave it out with --only nbdkit,qemu-nbd"
fi
for j in job prefill; do
  [[ -r $FIO_DIR/nbd-$j.fio ]] || die "missing fio job file $FIO_DIR/nbd-$j.fio"
done
CLK_TCK=$(getconf CLK_TCK)

[[ -n $OUT_DIR ]] || OUT_DIR=$BENCH_DIR/results/$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT_DIR/raw"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
[[ -d $TMP_PARENT ]] || die "--tmpdir '$TMP_PARENT' is not a directory"

# Free space: one SIZE file per server (+ the save volume and metadata for snapbd).
need_kib=$(( (SIZE_BYTES / 1024 + 128 * 1024) * ${#SERVERS[@]} ))
avail_kib=$(df -Pk "$TMP_PARENT" | awk 'NR == 2 { print $4 }')
((avail_kib > need_kib)) || die "not enough space in $TMP_PARENT: need ~$((need_kib / 1024)) MiB, have $((avail_kib / 1024)) MiB (use --tmpdir or a smaller --size)"

# ---------------------------------------------------------------- cleanup
# Servers are stopped and the backing files (SIZE each) removed on every exit (lib.sh).
declare -A URIS=()
bl_traps
WORK=$(mktemp -d "$TMP_PARENT/compare-peers.XXXXXX")
bl_on_exit "$WORK"
# AF_UNIX paths are limited to 107 bytes.
((${#WORK} + 20 < 107)) || die "temp dir path '$WORK' is too long for Unix socket paths; use a shorter --tmpdir"

# ---------------------------------------------------------------- machine description
first_line() { "$@" 2>&1 | head -n 1 || true; }
describe_machine() {
  local cpu mem fs git_rev
  cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
  mem=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
  fs=$(df -PT "$WORK" | awk 'NR == 2 { print $2 " on " $1 " (mounted on " $7 ")" }')
  git_rev=$(bl_git_rev)
  echo "date:        $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host cpus:   $(nproc) x ${cpu:-unknown}"
  echo "memory:      $mem"
  echo "kernel:      $(uname -srm)"
  echo "load avg:    $(cut -d' ' -f1-3 /proc/loadavg) at start (1/5/15 min; other work skews results)"
  echo "backing fs:  $fs"
  echo "fio:         $(first_line fio --version)"
  echo "libnbd:      $(first_line nbdinfo --version)"
  if has_server nbdkit; then echo "nbdkit:      $(first_line nbdkit --version)"; fi
  if has_server qemu-nbd; then echo "qemu-nbd:    $(first_line qemu-nbd --version)"; fi
  if has_server snapbd; then
    echo "java:        $(first_line java -version)"
    echo "snapbd:      git $git_rev"
  fi
  if has_server snapbd-base; then echo "snapbd-base: $BASE_JAR ($( ((BASE_READS)) && echo "every job" || echo "the jobs that write"))"; fi
  echo "size:        $SIZE_BYTES bytes ($SIZE_CANON), runtime ${RUNTIME}s + 2s ramp per job, rounds $ROUNDS"
}

# ---------------------------------------------------------------- servers
# Backing files. Each peer gets `fallocate -l SIZE` (extents reserved up front,
# as snapbd preallocates its own volume file), and then EVERY server, snapbd
# included, has its whole export written once through its own NBD socket by
# benchmarks/fio/nbd-prefill.fio, before any measured job. Why through NBD and
# not dd on the files: snapbd's volume file is created and owned by snapbd, and
# writing it behind its back would leave its meta bit map saying "not in use"
# (reads could then take a zero fast path). Why written at all: fallocate leaves
# "unwritten" extents, and the first write to one costs the filesystem an
# extent conversion that the later writes don't pay; reads of unwritten extents
# return zeros without touching the page cache. Why fio's random buffers and
# not zeros: no server can take a zero-detection shortcut. After the prefill,
# all three start from allocated, written, non-sparse blocks with the same
# content in the same (page-cached) state.
start_server() {   # starts NAME and waits until its socket exists
  local name=$1 sock=$WORK/$1.sock logf=$OUT_DIR/server-$1.log
  case $name in
    nbdkit)
      fallocate -l "$SIZE_BYTES" "$WORK/nbdkit.img"
      # file plugin defaults: cache=default (page cache), fadvise=normal;
      # thread model "parallel" with nbdkit's default 16 threads.
      bl_start_nbdkit "$name" "$sock" "$logf" file "$WORK/nbdkit.img"
      URIS[$name]="nbd+unix:///?socket=$sock"
      ;;
    qemu-nbd)
      fallocate -l "$SIZE_BYTES" "$WORK/qemu-nbd.img"
      bl_start_qemu_nbd "$name" "$sock" "$logf" "$WORK/qemu-nbd.img"
      URIS[$name]="nbd+unix:///?socket=$sock"
      ;;
    snapbd|snapbd-base)
      local jar=${SNAPBD_JAR:-}
      [[ $name == snapbd ]] || jar=$BASE_JAR
      mkdir -p "$WORK/$name-data"
      if ! SNAPBD_JAR=$jar "$SNAPBD_BIN" volume create "$SNAPBD_EXPORT" --size "$SIZE_CANON" \
           --save-size "$SNAPBD_SAVE_SIZE" --data-dir "$WORK/$name-data" \
           >"$OUT_DIR/$name-volume-create.log" 2>&1 </dev/null; then
        tail -n 20 "$OUT_DIR/$name-volume-create.log" >&2 || true
        die "'$SNAPBD_BIN volume create' failed (log: $OUT_DIR/$name-volume-create.log)"
      fi
      SNAPBD_JAR=$jar SNAPBD=$SNAPBD_BIN bl_start_snapbd "$name" "$WORK/$name-data" "$sock" "$logf"
      URIS[$name]="nbd+unix:///$SNAPBD_EXPORT?socket=$sock"
      ;;
  esac
}

# Ready: the export answers NBD with exactly SIZE bytes.
wait_ready() {
  local name=$1 uri=${URIS[$1]} got
  bl_wait "$name" "$OUT_DIR/server-$name.log" nbdinfo --size "$uri"
  got=$(nbdinfo --size "$uri")
  [[ $got == "$SIZE_BYTES" ]] || die "$name exports $got bytes, expected $SIZE_BYTES: sizes must be equal"
}

# Runs one fio job file against one server; $4 is the raw output basename, the rest fio's environment.
run_fio() {
  local jobfile=$1 name=$2 runtime=$3 base=$4; shift 4
  bl_fio_job "$jobfile" "$OUT_DIR/raw/$base.json" NBD_URI="${URIS[$name]}" SIZE="$SIZE_BYTES" RUNTIME="$runtime" "$@" || {
    bl_alive "$name" "$OUT_DIR/server-$name.log"
    die "fio failed: $jobfile on $name (see $OUT_DIR/raw/$base.*)"
  }
  bl_alive "$name" "$OUT_DIR/server-$name.log"
}

# run_job JOB NAME BASE: one measured run; prints "CPU-MICROSECONDS" spent by the server after the ramp.
run_job() {
  local job=$1 name=$2 base=$3 pid=${SPIDS[$2]} rw mix unified bs depth conns size=$SIZE_BYTES incr=0 t0 t1 sampler
  read -r rw mix unified bs depth conns < <(job_spec "$job")
  if [[ $rw == read || $rw == write ]] && ((conns > 1)); then
    size=$((SIZE_BYTES / conns)); size=$((size - size % (1 << 20))); incr=$size
  fi
  # The CPU counter is read when fio's 2 s ramp ends (fio needs a few ms more to connect: close enough).
  (sleep 2; cpu_ticks "$pid" >"$WORK/cpu0") &
  sampler=$!
  run_fio "$FIO_DIR/nbd-job.fio" "$name" "$RUNTIME" "$base" SIZE="$size" OFFSET_INCREMENT="$incr" RW="$rw" \
    RWMIXREAD="$mix" UNIFIED="$unified" BS="$bs" IODEPTH="$depth" NUMJOBS="$conns"
  t1=$(cpu_ticks "$pid")
  wait "$sampler"
  t0=$(<"$WORK/cpu0")
  echo $(((t1 - t0) * 1000000 / CLK_TCK))
}

# ---------------------------------------------------------------- run
# The command line, quoted only where the shell needs it.
shell_words() {
  local w out=()
  for w in "$@"; do
    if [[ $w =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then out+=("$w")
    else out+=("$(printf '%q' "$w")"); fi
  done
  echo "${out[*]}"
}
MACHINE=$(describe_machine)
shell_words "benchmarks/compare-peers.sh" "${ORIG_ARGS[@]}" >"$OUT_DIR/command.txt"
echo "$MACHINE" >"$OUT_DIR/machine.txt"
echo "== compare-peers: ${SERVERS[*]}"
echo "command:     $(cat "$OUT_DIR/command.txt")"
echo "$MACHINE"
echo "results:     $OUT_DIR"
echo

for name in "${SERVERS[@]}"; do
  log "starting $name ..."
  start_server "$name"
done
declare -A SPIDS=()
for name in "${SERVERS[@]}"; do
  wait_ready "$name"
  SPIDS[$name]=$(bl_server_pid "$name")
  log "$name ready on ${URIS[$name]} (pid ${SPIDS[$name]})"
done
for name in "${SERVERS[@]}"; do
  log "prefill: writing all $SIZE_BYTES bytes of $name once ..."
  run_fio "$FIO_DIR/nbd-prefill.fio" "$name" 0 "prefill-$name"
done

TSV=$OUT_DIR/runs.tsv
: >"$TSV"
total=0
for job in "${JOBS[@]}"; do
  for name in "${SERVERS[@]}"; do runs_job "$name" "$job" && total=$((total + 1)); done
done
total=$((total * ROUNDS))
n=0
for ((r = 1; r <= ROUNDS; r++)); do
  # Rotate the server order by one each round (see the header comment).
  order=()
  for ((i = 0; i < ${#SERVERS[@]}; i++)); do
    order+=("${SERVERS[$(((i + r - 1) % ${#SERVERS[@]}))]}")
  done
  for job in "${JOBS[@]}"; do
    for name in "${order[@]}"; do
      runs_job "$name" "$job" || continue
      n=$((n + 1))
      log "[$n/$total] round $r: $job on $name ..."
      sync
      base="r$r-$job-$name"
      cpu=$(run_job "$job" "$name" "$base")
      line="$r	$job	$name	$(python3 "$FIO_SUMMARY" --tsv "$OUT_DIR/raw/$base.json" ddir iops bw_bytes p50_ns p99_ns p999_ns mean_ns ios)	$cpu"
      echo "$line" >>"$TSV"
      awk -F'\t' '{ printf "        %s: %.0f IOPS, %.1f us CPU/request, p50 %.1f us, p99 %.1f us, p99.9 %.1f us\n", $3, $5, $12 / $11, $7 / 1000, $8 / 1000, $9 / 1000 }' <<<"$line" >&2
    done
  done
done

MD_HEADER=$(
  echo "### Peer comparison run $(date -u +%Y-%m-%d)"
  echo
  echo "Command: \`$(cat "$OUT_DIR/command.txt")\`"
  echo
  echo '```text'
  echo "$MACHINE"
  echo '```'
)
MD_OUT=""
if [[ -n $MARKDOWN ]]; then
  mkdir -p "$(dirname "$MARKDOWN")"
  MD_OUT=$(cd "$(dirname "$MARKDOWN")" && pwd)/$(basename "$MARKDOWN")
fi
echo
set +e
python3 "$BENCH_DIR/compare-peers-report.py" "$TSV" "$(IFS=,; echo "${SERVERS[*]}")" "$(IFS=,; echo "${JOBS[*]}")" \
  "$ROUNDS" "$BAR" "$MD_OUT" "$OUT_DIR/results.json" "$MD_HEADER" | tee "$OUT_DIR/results.txt"
report_rc=${PIPESTATUS[0]}
set -e
((report_rc == 0 || report_rc == 3)) || die "report failed"
[[ -n $MD_OUT ]] && log "markdown written to $MD_OUT"
LOAD_END="load avg at end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "$LOAD_END" | tee -a "$OUT_DIR/machine.txt"
if [[ -n $MD_OUT ]]; then printf '\n%s\n' "${LOAD_END^}" >>"$MD_OUT"; fi
if ((JSON)); then
  echo
  cat "$OUT_DIR/results.json"
fi
if ((STRICT && report_rc == 3)); then
  exit 3
fi
exit 0
