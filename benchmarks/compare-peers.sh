#!/usr/bin/env bash
# compare-peers.sh — run the same fio jobs against snapbd, nbdkit's file plugin
# and qemu-nbd, in one run, interleaved, and report IOPS, p50/p99/p99.9
# latency and the ratio to nbdkit.
#
# Every server listens on its own Unix socket in a private temp dir and serves
# an export of exactly SIZE bytes backed by a file on the same filesystem.
# fio talks to them with its libnbd engine (--ioengine=nbd --uri=...), one
# connection per job. Job definitions: benchmarks/fio/nbd-*.fio.
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
ALL_JOBS=(randwrite-4k-qd1 randwrite-4k-qd32 randread-4k-qd1 randread-4k-qd32 seqwrite-1m-qd8)
BAR=0.8                  # performance bar: snapbd IOPS >= BAR x nbdkit on every row
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
backing files, interleaved, and prints IOPS, p50/p99/p99.9 completion latency
and the ratio to nbdkit (median over rounds).

Jobs: ${ALL_JOBS[*]}

Options:
  --size SIZE        export / backing file size (default 1G; K/M/G/T are
                     powers of 1024; must be a multiple of 1 MiB)
  --runtime SECONDS  measured seconds per job, after a 2 s ramp (default 20)
  --rounds N         rounds; each runs every job on every server (default 3)
  --out DIR          results directory (default benchmarks/results/<timestamp>)
  --only LIST        comma-separated subset of: snapbd,nbdkit,qemu-nbd
                     (default: all three)
  --jobs LIST        comma-separated subset of the jobs above (default: all)
  --markdown FILE    also write the result table as Markdown to FILE
  --json             also print the results as JSON on stdout
  --strict           exit with status 3 if snapbd is below ${BAR}x nbdkit's
                     IOPS on any row
  --tmpdir DIR       where the backing files and sockets go (default \$TMPDIR
                     or /tmp); needs about SIZE x servers of free space
  --snapbd PATH      snapbd launcher (default bin/snapbd in the repository)
  -h, --help         this help

Example (peers only, quick):
  benchmarks/compare-peers.sh --only nbdkit,qemu-nbd --runtime 10 --rounds 1
EOF
}

# ---------------------------------------------------------------- options
bl_options usage --size SIZE_ARG --runtime RUNTIME --rounds ROUNDS --out OUT_DIR --only ONLY --jobs JOBS_ARG \
  --markdown MARKDOWN --json JSON=1 --strict STRICT=1 --tmpdir TMP_PARENT --snapbd SNAPBD_BIN -- "$@"
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

JOBS=()
if [[ -z $JOBS_ARG ]]; then
  JOBS=("${ALL_JOBS[@]}")
else
  IFS=, read -r -a job_list <<<"$JOBS_ARG"
  for j in "${job_list[@]}"; do
    [[ " ${ALL_JOBS[*]} " == *" $j "* ]] || die "--jobs: unknown job '$j' (${ALL_JOBS[*]})"
  done
  for j in "${ALL_JOBS[@]}"; do
    for o in "${job_list[@]}"; do [[ $o == "$j" ]] && { JOBS+=("$j"); break; }; done
  done
fi

has_server() { [[ " ${SERVERS[*]} " == *" $1 "* ]]; }

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
for j in "${JOBS[@]}" prefill; do
  [[ -r $FIO_DIR/nbd-$j.fio ]] || die "missing fio job file $FIO_DIR/nbd-$j.fio"
done

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
    snapbd)
      mkdir -p "$WORK/snapbd-data"
      if ! "$SNAPBD_BIN" volume create "$SNAPBD_EXPORT" --size "$SIZE_CANON" \
           --save-size "$SNAPBD_SAVE_SIZE" --data-dir "$WORK/snapbd-data" \
           >"$OUT_DIR/snapbd-volume-create.log" 2>&1 </dev/null; then
        tail -n 20 "$OUT_DIR/snapbd-volume-create.log" >&2 || true
        die "'$SNAPBD_BIN volume create' failed (log: $OUT_DIR/snapbd-volume-create.log)"
      fi
      SNAPBD=$SNAPBD_BIN bl_start_snapbd "$name" "$WORK/snapbd-data" "$sock" "$logf"
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

# Runs one fio job file against one server; $4 is the raw output basename.
run_fio() {
  local jobfile=$1 name=$2 runtime=$3 base=$4
  bl_fio_job "$jobfile" "$OUT_DIR/raw/$base.json" NBD_URI="${URIS[$name]}" SIZE="$SIZE_BYTES" RUNTIME="$runtime" || {
    bl_alive "$name" "$OUT_DIR/server-$name.log"
    die "fio failed: $jobfile on $name (see $OUT_DIR/raw/$base.*)"
  }
  bl_alive "$name" "$OUT_DIR/server-$name.log"
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
for name in "${SERVERS[@]}"; do
  wait_ready "$name"
  log "$name ready on ${URIS[$name]} (pid ${BL_PIDS[$name]})"
done
for name in "${SERVERS[@]}"; do
  log "prefill: writing all $SIZE_BYTES bytes of $name once ..."
  run_fio "$FIO_DIR/nbd-prefill.fio" "$name" 0 "prefill-$name"
done

TSV=$OUT_DIR/runs.tsv
: >"$TSV"
total=$((ROUNDS * ${#JOBS[@]} * ${#SERVERS[@]}))
n=0
for ((r = 1; r <= ROUNDS; r++)); do
  # Rotate the server order by one each round (see the header comment).
  order=()
  for ((i = 0; i < ${#SERVERS[@]}; i++)); do
    order+=("${SERVERS[$(((i + r - 1) % ${#SERVERS[@]}))]}")
  done
  for job in "${JOBS[@]}"; do
    for name in "${order[@]}"; do
      n=$((n + 1))
      log "[$n/$total] round $r: $job on $name ..."
      sync
      base="r$r-$job-$name"
      run_fio "$FIO_DIR/nbd-$job.fio" "$name" "$RUNTIME" "$base"
      line="$r	$job	$name	$(python3 "$FIO_SUMMARY" --tsv "$OUT_DIR/raw/$base.json" ddir iops bw_bytes p50_ns p99_ns p999_ns mean_ns ios)"
      echo "$line" >>"$TSV"
      awk -F'\t' '{ printf "        %s: %.0f IOPS, p50 %.1f us, p99 %.1f us, p99.9 %.1f us\n", $3, $5, $7 / 1000, $8 / 1000, $9 / 1000 }' <<<"$line" >&2
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
