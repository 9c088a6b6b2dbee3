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

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
FIO_DIR=$SCRIPT_DIR/fio

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
SNAPBD_BIN=$REPO_ROOT/bin/snapbd
READY_TIMEOUT=60
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

die() { echo "compare-peers: error: $*" >&2; exit 1; }
log() { echo "$*" >&2; }

# ---------------------------------------------------------------- options
while (($#)); do
  opt=$1
  val=""
  case $opt in
    --*=*) val=${opt#*=}; opt=${opt%%=*}; shift ;;
    -h|--help) usage; exit 0 ;;
    --json|--strict) shift ;;
    --*) (($# >= 2)) || die "$opt needs a value"; val=$2; shift 2 ;;
    *) die "unexpected argument: $opt (see --help)" ;;
  esac
  case $opt in
    --size) SIZE_ARG=$val ;;
    --runtime) RUNTIME=$val ;;
    --rounds) ROUNDS=$val ;;
    --out) OUT_DIR=$val ;;
    --only) ONLY=$val ;;
    --jobs) JOBS_ARG=$val ;;
    --markdown) MARKDOWN=$val ;;
    --json) JSON=1 ;;
    --strict) STRICT=1 ;;
    --tmpdir) TMP_PARENT=$val ;;
    --snapbd) SNAPBD_BIN=$val ;;
    *) die "unknown option: $opt (see --help)" ;;
  esac
done

[[ $RUNTIME =~ ^[1-9][0-9]*$ ]] || die "--runtime must be a positive integer (seconds), got '$RUNTIME'"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "--rounds must be a positive integer, got '$ROUNDS'"

# SIZE -> bytes. K/M/G/T (optionally followed by i, B or iB) are binary, like
# fallocate -l and fio.
parse_size() {
  local s=$1 n unit mult
  [[ $s =~ ^([0-9]+)([KkMmGgTt]?)(i?[Bb]?)$ ]] || return 1
  n=${BASH_REMATCH[1]}
  unit=${BASH_REMATCH[2]^^}
  case $unit in
    "") mult=1 ;; K) mult=1024 ;; M) mult=$((1024 ** 2)) ;;
    G) mult=$((1024 ** 3)) ;; T) mult=$((1024 ** 4)) ;;
  esac
  echo $((n * mult))
}
SIZE_BYTES=$(parse_size "$SIZE_ARG") || die "bad --size '$SIZE_ARG' (examples: 1G, 512M, 1073741824)"
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

[[ -n $OUT_DIR ]] || OUT_DIR=$SCRIPT_DIR/results/$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT_DIR/raw"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
[[ -d $TMP_PARENT ]] || die "--tmpdir '$TMP_PARENT' is not a directory"

# Free space: one SIZE file per server (+ the save volume and metadata for snapbd).
need_kib=$(( (SIZE_BYTES / 1024 + 128 * 1024) * ${#SERVERS[@]} ))
avail_kib=$(df -Pk "$TMP_PARENT" | awk 'NR == 2 { print $4 }')
((avail_kib > need_kib)) || die "not enough space in $TMP_PARENT: need ~$((need_kib / 1024)) MiB, have $((avail_kib / 1024)) MiB (use --tmpdir or a smaller --size)"

# ---------------------------------------------------------------- cleanup
WORK=""
FIO_PID=""
declare -A PIDS=() URIS=()
# shellcheck disable=SC2317  # invoked via trap
cleanup() {
  local rc=$? name pid i
  trap - EXIT INT TERM
  if [[ -n $FIO_PID ]]; then
    kill -TERM "$FIO_PID" 2>/dev/null || true
    wait "$FIO_PID" 2>/dev/null || true
  fi
  # Servers were started with setsid, so each is the leader of its own process
  # group: signal the group (catches a JVM behind a launcher script), then the pid.
  for name in "${!PIDS[@]}"; do
    pid=${PIDS[$name]}
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  done
  for name in "${!PIDS[@]}"; do
    pid=${PIDS[$name]}
    for ((i = 0; i < 50; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "compare-peers: $name (pid $pid) ignored SIGTERM; sending SIGKILL"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
  # The backing files are SIZE each: always remove them.
  [[ -n $WORK && -d $WORK ]] && rm -rf -- "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

WORK=$(mktemp -d "$TMP_PARENT/compare-peers.XXXXXX")
# AF_UNIX paths are limited to 107 bytes.
((${#WORK} + 20 < 107)) || die "temp dir path '$WORK' is too long for Unix socket paths; use a shorter --tmpdir"

# ---------------------------------------------------------------- fio JSON helper
HELPER=$WORK/fio_report.py
cat >"$HELPER" <<'PY'
"""Helpers for compare-peers.sh: extract one fio run, and summarise all runs."""
import json, statistics, sys

def load_fio(path):
    text = open(path, encoding="utf-8", errors="replace").read()
    # fio's nbd engine may print "fio: connected to NBD server" before the JSON.
    start = text.find("{")
    if start < 0:
        raise SystemExit(f"{path}: no JSON in fio output")
    return json.loads(text[start:])

def extract(path, job, server, rnd):
    d = load_fio(path)
    jobs = d.get("jobs") or []
    if len(jobs) != 1:
        raise SystemExit(f"{path}: expected one fio job, found {len(jobs)}")
    j = jobs[0]
    if j.get("error"):
        raise SystemExit(f"{path}: fio job error {j['error']}")
    # The direction that did I/O (reads for randread, writes otherwise).
    ddir = max(("read", "write"), key=lambda k: j[k]["io_bytes"])
    st = j[ddir]
    if st["io_bytes"] == 0:
        raise SystemExit(f"{path}: fio did no I/O")
    pct = st["clat_ns"].get("percentile") or {}
    def p(key):
        if key not in pct:
            raise SystemExit(f"{path}: no clat percentile {key} (percentile_list=50:99:99.9 missing?)")
        return pct[key]
    print("\t".join(str(x) for x in (
        rnd, job, server, ddir, st["iops"], st["bw_bytes"],
        p("50.000000"), p("99.000000"), p("99.900000"),
        st["clat_ns"]["mean"], st["total_ios"])))

FIELDS = ("round", "job", "server", "ddir", "iops", "bw_bytes", "p50_ns", "p99_ns", "p999_ns", "mean_ns", "ios")

def report(tsv, servers, jobs, rounds, bar, md_path, json_path, md_header):
    servers = servers.split(",")
    jobs = jobs.split(",")
    runs = []
    with open(tsv, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                r = dict(zip(FIELDS, line.rstrip("\n").split("\t")))
                for k in FIELDS[4:]:
                    r[k] = float(r[k])
                runs.append(r)
    rows = {}
    for job in jobs:
        for srv in servers:
            rs = [r for r in runs if r["job"] == job and r["server"] == srv]
            if not rs:
                continue
            med = lambda k: statistics.median(r[k] for r in rs)
            rows[(job, srv)] = {
                "job": job, "server": srv, "rounds": len(rs),
                "iops": med("iops"), "mib_s": med("bw_bytes") / 2**20,
                "iops_min": min(r["iops"] for r in rs), "iops_max": max(r["iops"] for r in rs),
                "p50_us": med("p50_ns") / 1e3, "p99_us": med("p99_ns") / 1e3,
                "p999_us": med("p999_ns") / 1e3,
            }
    for (job, srv), row in rows.items():
        ref = rows.get((job, "nbdkit"))
        if ref:
            row["ratio_iops"] = row["iops"] / ref["iops"]
            for k in ("p50", "p99", "p999"):
                row[f"ratio_{k}"] = ref[f"{k}_us"] / row[f"{k}_us"]
    verdict = []
    if "snapbd" in servers and "nbdkit" in servers:
        for job in jobs:
            row = rows.get((job, "snapbd"))
            if row and "ratio_iops" in row:
                verdict.append({"job": job, "ratio_iops": row["ratio_iops"], "pass": row["ratio_iops"] >= bar})

    def fnum(x, nd=0):
        return f"{x:,.{nd}f}"
    def fr(row, k):
        return f"{row[k]:.2f}" if k in row else "-"

    cols = ["job", "server", "IOPS", "IOPS min-max", "MiB/s", "p50 µs", "p99 µs", "p99.9 µs",
            "IOPS ×", "p50 ×", "p99 ×", "p99.9 ×"]
    table = []
    for job in jobs:
        for srv in servers:
            row = rows.get((job, srv))
            if not row:
                continue
            table.append([job, srv, fnum(row["iops"]),
                          f"{fnum(row['iops_min'])}-{fnum(row['iops_max'])}",
                          fnum(row["mib_s"], 1), fnum(row["p50_us"], 1), fnum(row["p99_us"], 1),
                          fnum(row["p999_us"], 1), fr(row, "ratio_iops"), fr(row, "ratio_p50"),
                          fr(row, "ratio_p99"), fr(row, "ratio_p999")])
    convention = ("Medians over {r} round(s). Latency = fio completion latency (clat) in µs. "
                  "Ratios vs nbdkit's file plugin: 'IOPS ×' = server/nbdkit, latency '×' = nbdkit/server; "
                  "> 1 means better than nbdkit.").format(r=rounds)
    widths = [max(len(c), *(len(t[i]) for t in table)) if table else len(c) for i, c in enumerate(cols)]
    def line(cells):
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    out = [convention, "", line(cols), line(["-" * w for w in widths])]
    prev = None
    for t in table:
        if prev is not None and t[0] != prev:
            out.append("")
        out.append(line(t))
        prev = t[0]
    if verdict:
        out.append("")
        bad = [v for v in verdict if not v["pass"]]
        out.append(f"Bar: snapbd IOPS >= {bar}x nbdkit on every row: " + ("PASS" if not bad else
                   "FAIL (" + ", ".join(f"{v['job']} {v['ratio_iops']:.2f}x" for v in bad) + ")"))
    print("\n".join(out))

    if md_path:
        md = [md_header.rstrip("\n"), "", convention, "",
              "| " + " | ".join(cols) + " |",
              "|" + "|".join(["---", "---"] + ["---:"] * (len(cols) - 2)) + "|"]
        md += ["| " + " | ".join(t) + " |" for t in table]
        if verdict:
            md.append("")
            md.append(out[-1])
        with open(md_path, "w", encoding="utf-8") as f:
            f.write("\n".join(md) + "\n")

    result = {"rounds": rounds, "servers": servers, "jobs": jobs, "bar": bar,
              "latency": "clat", "rows": list(rows.values()), "bar_check": verdict, "runs": runs}
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    return 0 if all(v["pass"] for v in verdict) else 3

if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "extract":
        extract(*sys.argv[2:6])
    elif cmd == "report":
        a = sys.argv[2:]
        sys.exit(report(a[0], a[1], a[2], int(a[3]), float(a[4]), a[5], a[6], a[7]))
    else:
        raise SystemExit(f"unknown command {cmd}")
PY

# ---------------------------------------------------------------- machine description
first_line() { "$@" 2>&1 | head -n 1 || true; }
describe_machine() {
  local cpu mem fs git_rev
  cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
  mem=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
  fs=$(df -PT "$WORK" | awk 'NR == 2 { print $2 " on " $1 " (mounted on " $7 ")" }')
  git_rev=$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
  if [[ $git_rev != unknown && -n $(git -C "$REPO_ROOT" status --porcelain 2>/dev/null | head -n 1) ]]; then
    git_rev="$git_rev (with uncommitted changes)"
  fi
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
start_server() {
  local name=$1 sock=$WORK/$1.sock logf=$OUT_DIR/server-$1.log
  case $name in
    nbdkit)
      fallocate -l "$SIZE_BYTES" "$WORK/nbdkit.img"
      # file plugin defaults: cache=default (page cache), fadvise=normal;
      # thread model "parallel" with nbdkit's default 16 threads.
      setsid nbdkit --foreground --unix "$sock" file "$WORK/nbdkit.img" \
        >"$logf" 2>&1 </dev/null &
      URIS[$name]="nbd+unix:///?socket=$sock"
      ;;
    qemu-nbd)
      fallocate -l "$SIZE_BYTES" "$WORK/qemu-nbd.img"
      setsid qemu-nbd --socket="$sock" --format=raw --persistent --shared=8 \
        --cache=writeback --aio=threads "$WORK/qemu-nbd.img" \
        >"$logf" 2>&1 </dev/null &
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
      # snapbd prints a line containing "ready" on stderr once listening; we
      # rely on the socket answering NBD instead (below), same as the peers.
      setsid "$SNAPBD_BIN" serve --data-dir "$WORK/snapbd-data" --tcp none \
        --unix "$sock" >"$logf" 2>&1 </dev/null &
      URIS[$name]="nbd+unix:///$SNAPBD_EXPORT?socket=$sock"
      ;;
  esac
  PIDS[$name]=$!
}

server_alive() {
  local name=$1
  if ! kill -0 "${PIDS[$name]}" 2>/dev/null; then
    tail -n 20 "$OUT_DIR/server-$name.log" >&2 || true
    die "$name (pid ${PIDS[$name]}) exited unexpectedly (log: $OUT_DIR/server-$name.log)"
  fi
}

wait_ready() {
  local name=$1 uri=${URIS[$1]} deadline=$((SECONDS + READY_TIMEOUT)) got
  until nbdinfo --size "$uri" >/dev/null 2>&1; do
    server_alive "$name"
    ((SECONDS < deadline)) || die "$name did not answer on $uri within ${READY_TIMEOUT}s (log: $OUT_DIR/server-$name.log)"
    sleep 0.2
  done
  got=$(nbdinfo --size "$uri")
  [[ $got == "$SIZE_BYTES" ]] || die "$name exports $got bytes, expected $SIZE_BYTES: sizes must be equal"
}

# Runs one fio job file against one server; $4 is the raw output basename.
run_fio() {
  local jobfile=$1 name=$2 runtime=$3 base=$4
  # fio runs in the background and we `wait` for it, so that SIGINT/SIGTERM
  # reach our trap at once instead of after the job's runtime.
  NBD_URI=${URIS[$name]} SIZE=$SIZE_BYTES RUNTIME=$runtime \
    fio --output-format=json --output="$OUT_DIR/raw/$base.json" "$jobfile" \
    >"$OUT_DIR/raw/$base.stderr" 2>&1 </dev/null &
  FIO_PID=$!
  if ! wait "$FIO_PID"; then
    FIO_PID=""
    tail -n 20 "$OUT_DIR/raw/$base.stderr" >&2 || true
    server_alive "$name"
    die "fio failed: $jobfile on $name (see $OUT_DIR/raw/$base.*)"
  fi
  FIO_PID=""
  server_alive "$name"
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
  log "$name ready on ${URIS[$name]} (pid ${PIDS[$name]})"
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
      line=$(python3 "$HELPER" extract "$OUT_DIR/raw/$base.json" "$job" "$name" "$r")
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
python3 "$HELPER" report "$TSV" "$(IFS=,; echo "${SERVERS[*]}")" "$(IFS=,; echo "${JOBS[*]}")" \
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
