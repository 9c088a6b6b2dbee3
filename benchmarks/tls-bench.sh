#!/usr/bin/env bash
# tls-bench.sh — what TLS costs, snapbd against nbdkit: the same fio jobs over plain NBD and over NBD with
# STARTTLS (nbds://), against snapbd and nbdkit's file plugin, in one run, interleaved.
#
# Both servers listen on 127.0.0.1 (TCP: snapbd's Unix socket stays plain) with --tls=on and the same
# certificates (made by openssl in the run's temp dir: a CA and a server certificate for localhost/127.0.0.1),
# so one server process serves both the plain rows (nbd://) and the TLS rows (nbds://: libnbd then requires
# TLS, as --tls=require would; the encrypted data path is the same for on and require). fio talks to them with
# its libnbd engine, one connection per job.
#
# fio's nbd engine cannot take tls-certificates= in its URI: libnbd refuses local file access in URIs unless
# the program calls nbd_set_uri_allow_local_file, which fio does not. fio therefore connects with nbds:// and no
# certificate directory; libnbd 1.14 then encrypts without authenticating the server (a CA it does not know is
# accepted). The cost measured (one handshake per connection, then record encryption) is the same.
#
# Jobs: benchmarks/fio/nbd-{randwrite,randread}-4k-qd32.fio and nbd-seqwrite-1m-qd8.fio. Each round runs every
# job in both modes on both servers, the server order rotating per round; each number is the median over
# rounds. The report gives snapbd/nbdkit with TLS (target >= 1.0 per row), the same without TLS, and each
# server's TLS/plain ratio, and per row the server's CPU time per request (user+system after fio's ramp).
#
# Usage: benchmarks/tls-bench.sh [--size SIZE] [--runtime S] [--rounds N] [--out DIR] [--markdown FILE]
#                                [--tmpdir DIR] [--snapbd PATH] [--baseline JAR] [--jobs LIST]
#   --size SIZE      export / backing file size (default 256M, a multiple of 1 MiB)
#   --runtime S      measured seconds per job after a 2 s ramp (default 10)
#   --rounds N       rounds (default 2)
#   --out DIR        results directory (default benchmarks/results/tls-<timestamp>)
#   --markdown FILE  also write the tables as Markdown to FILE
#   --tmpdir DIR     where the backing files, certificates and data dir go (default $TMPDIR or /tmp)
#   --snapbd PATH    snapbd launcher (default bin/snapbd)
#   --baseline JAR   also run every job on a second snapbd started from JAR (e.g. main's snapbd.jar), server
#                    'snapbd-base' in the rotation, and snapbd's IOPS / snapbd-base's in the report ('x base')
#   --jobs LIST      comma-separated subset of the jobs above (default all three)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh" tls-bench
BL_DIE_PREFIX="error: "
FIO_DIR=$BENCH_DIR/fio

JOBS=(randwrite-4k-qd32 randread-4k-qd32 seqwrite-1m-qd8)
SERVERS=(snapbd nbdkit)
MODES=(plain tls)
BAR=1.0
SIZE_ARG=256M
RUNTIME=10
ROUNDS=2
OUT_DIR=""
MARKDOWN=""
TMP_PARENT=${TMPDIR:-/tmp}
SNAPBD_BIN=$SNAPBD
BASE_JAR=""
ORIG_ARGS=("$@")

usage() { bl_header_usage 21 32; }
bl_options usage --size SIZE_ARG --runtime RUNTIME --rounds ROUNDS --out OUT_DIR --markdown MARKDOWN \
  --tmpdir TMP_PARENT --snapbd SNAPBD_BIN --baseline BASE_JAR --jobs JOBS_ARG -- "$@"
if [[ -n ${JOBS_ARG:-} ]]; then
  IFS=, read -r -a picked <<<"$JOBS_ARG"
  for j in "${picked[@]}"; do [[ " ${JOBS[*]} " == *" $j "* ]] || die "--jobs: unknown job '$j' (jobs: ${JOBS[*]})"; done
  JOBS=("${picked[@]}")
fi
if [[ -n $BASE_JAR ]]; then
  [[ -f $BASE_JAR ]] || die "--baseline: '$BASE_JAR' is not a file"
  BASE_JAR=$(cd "$(dirname "$BASE_JAR")" && pwd)/$(basename "$BASE_JAR")
  SERVERS=(snapbd snapbd-base nbdkit)
fi
CLK_TCK=$(getconf CLK_TCK)
bl_positive --runtime "$RUNTIME"
bl_positive --rounds "$ROUNDS"
SIZE_BYTES=$(bl_bytes "$SIZE_ARG") || die "bad --size '$SIZE_ARG'"
((SIZE_BYTES > 0 && SIZE_BYTES % (1 << 20) == 0)) || die "--size must be a positive multiple of 1 MiB"
SIZE_CANON=$((SIZE_BYTES >> 20))M

bl_need fio nbdkit nbdinfo openssl python3 fallocate setsid
bl_need_fio_nbd
[[ -x $SNAPBD_BIN ]] || die "snapbd launcher '$SNAPBD_BIN' is missing; build first ($BL_BUILD)"
bl_require_jars snapbd
for j in "${JOBS[@]}" prefill; do [[ -r $FIO_DIR/nbd-$j.fio ]] || die "missing $FIO_DIR/nbd-$j.fio"; done

[[ -n $OUT_DIR ]] || OUT_DIR=$BENCH_DIR/results/tls-$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT_DIR/raw"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
bl_traps
WORK=$(mktemp -d "$TMP_PARENT/tls-bench.XXXXXX")
bl_on_exit "$WORK"

# ---------------------------------------------------------------- certificates
PKI=$WORK/pki
mkdir -p "$PKI"
ossl() { (cd "$PKI" && openssl "$@") >>"$OUT_DIR/openssl.log" 2>&1 || die "openssl $1 failed (log: $OUT_DIR/openssl.log)"; }
ossl req -x509 -newkey rsa:2048 -nodes -keyout ca-key.pem -out ca-cert.pem -days 2 -subj "/CN=tls-bench CA"
ossl req -newkey rsa:2048 -nodes -keyout server-key.pem -out server.csr -subj /CN=localhost
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$PKI/server.ext"
ossl x509 -req -in server.csr -CA ca-cert.pem -CAkey ca-key.pem -CAcreateserial -out server-cert.pem -days 2 \
  -extfile server.ext
chmod 600 "$PKI"/*-key.pem

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# ---------------------------------------------------------------- servers
declare -A URIS=()
SNAPBD_PORT=$(free_port)
mkdir -p "$WORK/snapbd-data"
"$SNAPBD_BIN" volume create bench --size "$SIZE_CANON" --save-size 64M --data-dir "$WORK/snapbd-data" \
  >"$OUT_DIR/snapbd-volume-create.log" 2>&1 </dev/null || die "volume create failed (log: $OUT_DIR/snapbd-volume-create.log)"
bl_start snapbd "$OUT_DIR/server-snapbd.log" "$SNAPBD_BIN" serve --data-dir "$WORK/snapbd-data" \
  --tcp "127.0.0.1:$SNAPBD_PORT" --unix "$WORK/snapbd.sock" --tls=on --tls-certificates="$PKI"
URIS[snapbd-plain]="nbd://127.0.0.1:$SNAPBD_PORT/bench"
URIS[snapbd-tls]="nbds://localhost:$SNAPBD_PORT/bench"
if [[ -n $BASE_JAR ]]; then
  BASE_PORT=$(free_port)
  mkdir -p "$WORK/snapbd-base-data"
  SNAPBD_JAR=$BASE_JAR "$SNAPBD_BIN" volume create bench --size "$SIZE_CANON" --save-size 64M \
    --data-dir "$WORK/snapbd-base-data" >"$OUT_DIR/snapbd-base-volume-create.log" 2>&1 </dev/null \
    || die "volume create (baseline) failed (log: $OUT_DIR/snapbd-base-volume-create.log)"
  SNAPBD_JAR=$BASE_JAR bl_start snapbd-base "$OUT_DIR/server-snapbd-base.log" "$SNAPBD_BIN" serve \
    --data-dir "$WORK/snapbd-base-data" --tcp "127.0.0.1:$BASE_PORT" --unix "$WORK/snapbd-base.sock" --tls=on \
    --tls-certificates="$PKI"
  URIS[snapbd-base-plain]="nbd://127.0.0.1:$BASE_PORT/bench"
  URIS[snapbd-base-tls]="nbds://localhost:$BASE_PORT/bench"
fi

NBDKIT_PORT=$(free_port)
fallocate -l "$SIZE_BYTES" "$WORK/nbdkit.img"
bl_start nbdkit "$OUT_DIR/server-nbdkit.log" nbdkit --foreground -i 127.0.0.1 -p "$NBDKIT_PORT" \
  --tls=on --tls-certificates="$PKI" file "$WORK/nbdkit.img"
URIS[nbdkit-plain]="nbd://127.0.0.1:$NBDKIT_PORT/"
URIS[nbdkit-tls]="nbds://localhost:$NBDKIT_PORT/"

declare -A SPIDS=()
for s in "${SERVERS[@]}"; do
  bl_wait "$s" "$OUT_DIR/server-$s.log" nbdinfo --size "${URIS[$s-tls]}"
  got=$(nbdinfo --size "${URIS[$s-plain]}")
  [[ $got == "$SIZE_BYTES" ]] || die "$s exports $got bytes, expected $SIZE_BYTES"
  SPIDS[$s]=$(bl_server_pid "$s")
done

run_fio() {   # JOB SERVER MODE RUNTIME BASE
  local job=$1 s=$2 mode=$3 runtime=$4 base=$5
  bl_fio_job "$FIO_DIR/nbd-$job.fio" "$OUT_DIR/raw/$base.json" NBD_URI="${URIS[$s-$mode]}" SIZE="$SIZE_BYTES" \
    RUNTIME="$runtime" || { bl_alive "$s" "$OUT_DIR/server-$s.log"; die "fio failed: $job on $s ($mode)"; }
  bl_alive "$s" "$OUT_DIR/server-$s.log"
}

# run_measured JOB SERVER MODE BASE: one measured run; prints the server's CPU microseconds after fio's 2 s ramp.
run_measured() {
  local pid=${SPIDS[$2]} t0 t1 sampler
  (sleep 2; cpu_ticks "$pid" >"$WORK/cpu0") &
  sampler=$!
  run_fio "$1" "$2" "$3" "$RUNTIME" "$4"
  t1=$(cpu_ticks "$pid")
  wait "$sampler"
  t0=$(<"$WORK/cpu0")
  echo $(((t1 - t0) * 1000000 / CLK_TCK))
}

MACHINE=$(
  echo "date:        $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host cpus:   $(nproc) x $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
  echo "kernel:      $(uname -srm)"
  echo "load avg:    $(cut -d' ' -f1-3 /proc/loadavg) at start (shared machine: other work skews results)"
  echo "fio:         $(fio --version)"
  echo "libnbd:      $(nbdinfo --version 2>&1 | head -n 1)"
  echo "nbdkit:      $(nbdkit --version 2>&1 | head -n 1)"
  echo "java:        $(java -version 2>&1 | head -n 1)"
  echo "snapbd:      git $(bl_git_rev)"
  [[ -z $BASE_JAR ]] || echo "snapbd-base: $BASE_JAR"
  echo "size:        $SIZE_BYTES bytes, runtime ${RUNTIME}s + 2s ramp per job, rounds $ROUNDS, TCP 127.0.0.1"
)
echo "$MACHINE" | tee "$OUT_DIR/machine.txt"
echo "command:     benchmarks/tls-bench.sh ${ORIG_ARGS[*]}" | tee "$OUT_DIR/command.txt"

for s in "${SERVERS[@]}"; do
  log "prefill: writing all of $s once (plain) ..."
  run_fio prefill "$s" plain 0 "prefill-$s"
done

: >"$OUT_DIR/runs-plain.tsv"
: >"$OUT_DIR/runs-tls.tsv"
total=$((ROUNDS * ${#JOBS[@]} * ${#MODES[@]} * ${#SERVERS[@]}))
n=0
for ((r = 1; r <= ROUNDS; r++)); do
  order=()     # the servers' order rotates by one per round
  for ((i = 0; i < ${#SERVERS[@]}; i++)); do order+=("${SERVERS[(i + r - 1) % ${#SERVERS[@]}]}"); done
  for job in "${JOBS[@]}"; do
    for mode in "${MODES[@]}"; do
      for s in "${order[@]}"; do
        n=$((n + 1))
        log "[$n/$total] round $r: $job on $s ($mode) ..."
        sync
        base="r$r-$job-$s-$mode"
        cpu=$(run_measured "$job" "$s" "$mode" "$base")
        line="$r	$job	$s	$(python3 "$FIO_SUMMARY" --tsv "$OUT_DIR/raw/$base.json" ddir iops bw_bytes p50_ns p99_ns p999_ns mean_ns ios)	$cpu"
        echo "$line" >>"$OUT_DIR/runs-$mode.tsv"
        awk -F'\t' '{ printf "        %.0f IOPS, %.1f MiB/s, p99 %.1f us\n", $5, $6 / 1048576, $8 / 1000 }' <<<"$line" >&2
      done
    done
  done
done

# The TLS connections really were TLS: both servers log or count them differently, so ask the server's log.
grep -q -i 'tls' "$OUT_DIR/server-snapbd.log" || log "note: snapbd's log does not mention TLS (see $OUT_DIR/server-snapbd.log)"

report() {   # MODE TITLE BAR
  python3 "$BENCH_DIR/compare-peers-report.py" "$OUT_DIR/runs-$1.tsv" "$(IFS=,; echo "${SERVERS[*]}")" "$(IFS=,; echo "${JOBS[*]}")" \
    "$ROUNDS" "$3" "$OUT_DIR/results-$1.md" "$OUT_DIR/results-$1.json" "#### $2" >"$OUT_DIR/results-$1.txt" || [[ $? == 3 ]]
}
report tls "With TLS (nbds://): snapbd vs nbdkit" "$BAR"
report plain "Without TLS (nbd://, same servers, same run)" "$BAR"
python3 - "$OUT_DIR/results-plain.json" "$OUT_DIR/results-tls.json" >"$OUT_DIR/results-cost.md" <<'EOF'
import json, sys
plain = {(r["job"], r["server"]): r for r in json.load(open(sys.argv[1]))["rows"]}
tls = {(r["job"], r["server"]): r for r in json.load(open(sys.argv[2]))["rows"]}
print("#### TLS cost per server (TLS IOPS / plain IOPS, medians)\n")
print("| job | snapbd plain | snapbd TLS | snapbd TLS/plain | nbdkit plain | nbdkit TLS | nbdkit TLS/plain | snapbd-TLS / nbdkit-TLS |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for job in dict.fromkeys(j for j, _ in tls):
    sp, st, kp, kt = plain.get((job, "snapbd")), tls.get((job, "snapbd")), plain.get((job, "nbdkit")), tls.get((job, "nbdkit"))
    if not (sp and st and kp and kt):
        continue
    ratio = st["iops"] / kt["iops"]
    print(f"| {job} | {sp['iops']:,.0f} | {st['iops']:,.0f} | {st['iops'] / sp['iops']:.2f} | {kp['iops']:,.0f} | "
          f"{kt['iops']:,.0f} | {kt['iops'] / kp['iops']:.2f} | {ratio:.2f} {'(>= 1.0)' if ratio >= 1.0 else '(below 1.0)'} |")
EOF
{
  echo "### TLS run $(date -u +%Y-%m-%d)"
  echo
  echo "Command: \`$(cat "$OUT_DIR/command.txt" | sed 's/^command: *//')\`"
  echo
  echo '```text'
  echo "$MACHINE"
  echo "load avg at end: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo '```'
  echo
  cat "$OUT_DIR/results-cost.md"
  echo
  cat "$OUT_DIR/results-tls.md"
  echo
  cat "$OUT_DIR/results-plain.md"
} >"$OUT_DIR/results.md"
cat "$OUT_DIR/results.md"
[[ -z $MARKDOWN ]] || cp "$OUT_DIR/results.md" "$MARKDOWN"
