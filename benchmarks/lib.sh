# benchmarks/lib.sh — what the benchmark scripts share; source it after `set -euo pipefail`:
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh" NAME
# NAME prefixes every message (die, log). Sets ROOT (the repository), BENCH_DIR (benchmarks/),
# SNAPBD (bin/snapbd), BENCH (benchmarks/bench) and FIO_SUMMARY (benchmarks/fio-summary.py, the one reader
# of fio's JSON). Servers started here (bl_start*) run in their own session and are stopped, with every
# path given to bl_on_exit removed, when the script exits (bl_traps installs the traps).

BL_NAME=${1:-bench}
ROOT=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
BENCH_DIR=$ROOT/benchmarks
SNAPBD=$ROOT/bin/snapbd
BENCH=$BENCH_DIR/bench
FIO_SUMMARY=$BENCH_DIR/fio-summary.py
BL_BUILD="mvn -B -q -DskipTests package"
BL_DIE_STATUS=1      # exit status of die (some scripts use 2 for usage errors)
BL_DIE_PREFIX=""     # text between "NAME: " and the message (e.g. "error: ")

die() { echo "$BL_NAME: $BL_DIE_PREFIX$*" >&2; exit "$BL_DIE_STATUS"; }
log() { echo "$*" >&2; }

# ---------------------------------------------------------------- options
# bl_options USAGE-FUNCTION SPEC... -- "$@": SPEC is pairs: "--name VAR" takes a value (--name V or --name=V) into
# VAR; "--name VAR=VALUE" is a switch that sets VAR to VALUE. -h/--help runs USAGE-FUNCTION and exits 0.
bl_options() {
  local _bl_usage=$1 _bl_opts=() _bl_targets=() _bl_opt _bl_val _bl_inline _bl_i _bl_target
  shift
  while [ "$1" != -- ]; do _bl_opts+=("$1"); _bl_targets+=("$2"); shift 2; done
  shift
  while [ $# -gt 0 ]; do
    _bl_opt=$1 _bl_inline=0
    case $_bl_opt in
      -h|--help) "$_bl_usage"; exit 0 ;;
      --*=*) _bl_val=${_bl_opt#*=}; _bl_opt=${_bl_opt%%=*}; _bl_inline=1 ;;
    esac
    _bl_target=""
    for _bl_i in "${!_bl_opts[@]}"; do
      [ "${_bl_opts[$_bl_i]}" = "$_bl_opt" ] && { _bl_target=${_bl_targets[$_bl_i]}; break; }
    done
    [ -n "$_bl_target" ] || die "unknown option $_bl_opt (see --help)"
    if [[ $_bl_target == *=* ]]; then
      printf -v "${_bl_target%%=*}" '%s' "${_bl_target#*=}"; shift
    else
      if [ "$_bl_inline" = 0 ]; then
        [ $# -ge 2 ] || die "$_bl_opt needs a value"
        _bl_val=$2; shift
      fi
      printf -v "$_bl_target" '%s' "$_bl_val"; shift
    fi
  done
}
# bl_header_usage FIRST LAST: a usage function's body that prints the script's header comment lines.
bl_header_usage() { sed -n "$1,$2p" "$0"; }
bl_positive() { [[ $2 =~ ^[1-9][0-9]*$ ]] || die "$1 must be a positive integer, not '$2'"; }
bl_need() { local t; for t in "$@"; do command -v "$t" >/dev/null 2>&1 || die "$t is missing"; done; }
bl_need_fio_nbd() {
  command -v fio >/dev/null || die "fio is missing (apt-get install fio)"
  fio --enghelp=nbd >/dev/null 2>&1 || die "this fio has no nbd engine (fio --enghelp=nbd)"
}
# bl_bytes SIZE: bytes of SIZE (K/M/G/T binary, optionally followed by i, B or iB).
bl_bytes() {
  [[ $1 =~ ^([0-9]+)([KkMmGgTt]?)(i?[Bb]?)$ ]] || return 1
  local n=${BASH_REMATCH[1]}
  case ${BASH_REMATCH[2]^^} in
    "") echo "$n" ;; K) echo $((n << 10)) ;; M) echo $((n << 20)) ;; G) echo $((n << 30)) ;; T) echo $((n << 40)) ;;
  esac
}

# ---------------------------------------------------------------- jars
# The server jar and the benchmark jar (SNAPBD_JAR / SNAPBD_BENCH_JAR override them).
bl_snapbd_jar() { echo "${SNAPBD_JAR:-$ROOT/nbd-server/target/snapbd.jar}"; }
bl_bench_jar() { echo "${SNAPBD_BENCH_JAR:-$ROOT/benchmarks/target/snapbd-bench.jar}"; }
# bl_require_jars [snapbd] [bench]: die unless the jars are built.
bl_require_jars() {
  local j f
  for j in "$@"; do
    f=$(bl_"$j"_jar)
    [ -f "$f" ] || die "$f is missing: build first ($BL_BUILD)"
  done
}
# bl_private_jars DIR: copies both jars into DIR and exports SNAPBD_JAR/SNAPBD_BENCH_JAR to the copies, so a
# build running meanwhile cannot replace them under a long run.
bl_private_jars() {
  bl_require_jars snapbd bench
  cp "$(bl_snapbd_jar)" "$1/snapbd.jar"
  cp "$(bl_bench_jar)" "$1/snapbd-bench.jar"
  export SNAPBD_JAR=$1/snapbd.jar SNAPBD_BENCH_JAR=$1/snapbd-bench.jar
}

# ---------------------------------------------------------------- servers and cleanup
declare -A BL_PIDS=()
BL_ON_EXIT=()
BL_PID=""
bl_on_exit() { BL_ON_EXIT+=("$@"); }   # paths removed at exit
# bl_start [-a] NAME LOG COMMAND...: starts COMMAND in its own session, output to LOG (-a: appended); its pid
# in BL_PID and BL_PIDS[NAME].
bl_start() {
  local append=0; [ "$1" = -a ] && { append=1; shift; }
  local name=$1 logf=$2; shift 2
  if [ "$append" = 1 ]; then setsid "$@" >>"$logf" 2>&1 </dev/null &
  else setsid "$@" >"$logf" 2>&1 </dev/null &
  fi
  BL_PID=$!
  BL_PIDS[$name]=$BL_PID
}
# bl_alive NAME LOG: die (with the log's tail) if NAME's server has exited.
bl_alive() {
  kill -0 "${BL_PIDS[$1]}" 2>/dev/null && return 0
  tail -n 20 "$2" >&2 || true
  die "$1 (pid ${BL_PIDS[$1]}) exited unexpectedly (log: $2)"
}
# bl_wait NAME LOG TEST...: waits up to BL_READY_TIMEOUT (60) s until the command TEST succeeds.
bl_wait() {
  local name=$1 logf=$2 deadline=$((SECONDS + ${BL_READY_TIMEOUT:-60})); shift 2
  until "$@" >/dev/null 2>&1; do
    bl_alive "$name" "$logf"
    [ "$SECONDS" -lt "$deadline" ] || { tail -n 20 "$logf" >&2 || true; die "$name not ready after ${BL_READY_TIMEOUT:-60} s (log: $logf)"; }
    sleep 0.1
  done
}
# bl_track NAME PID: a background process of the script itself, stopped at exit like the servers.
bl_track() { BL_PIDS[$1]=$2; }
bl_wait_socket() { bl_wait "$1" "$2" test -S "$3"; }   # NAME LOG SOCKET
# bl_stop NAME: SIGTERM to NAME's session (catches a JVM behind a launcher), SIGKILL after 5 s.
bl_stop() {
  local pid=${BL_PIDS[$1]:-} i
  [ -n "$pid" ] || return 0
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    log "$BL_NAME: $1 (pid $pid) ignored SIGTERM; sending SIGKILL"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  unset "BL_PIDS[$1]"
}
# bl_server_pid NAME: the pid of NAME's server process itself. bl_start's pid is setsid's, which normally execs the
# server (and bin/snapbd execs java); if it forked instead, the one java/nbdkit/qemu-nbd process of that session.
bl_server_pid() {
  local pid=${BL_PIDS[$1]} p
  case $(cat "/proc/$pid/comm") in java|nbdkit|qemu-nbd) echo "$pid"; return ;; esac
  for p in $(pgrep -s "$pid"); do
    case $(cat "/proc/$p/comm") in java|nbdkit|qemu-nbd) echo "$p"; return ;; esac
  done
  die "cannot find the $1 server process in session $pid"
}
bl_stop_all() { local n; for n in "${!BL_PIDS[@]}"; do bl_stop "$n"; done; }
bl_cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$BL_FIO_PID" ]; then kill -TERM "$BL_FIO_PID" 2>/dev/null || true; wait "$BL_FIO_PID" 2>/dev/null || true; fi
  bl_stop_all
  local p; for p in "${BL_ON_EXIT[@]}"; do [ -n "$p" ] && rm -rf -- "$p"; done
  exit "$rc"
}
bl_traps() { trap bl_cleanup EXIT; trap 'exit 130' INT; trap 'exit 143' TERM; }

# bl_start_snapbd [-a] NAME DATA-DIR SOCKET LOG [SERVE-ARGS...]: bin/snapbd serve on a Unix socket only; waits
# until the socket exists.
bl_start_snapbd() {
  local a=(); [ "$1" = -a ] && { a=(-a); shift; }
  local name=$1 data=$2 sock=$3 logf=$4; shift 4
  rm -f "$sock"
  bl_start "${a[@]}" "$name" "$logf" "$SNAPBD" serve --data-dir "$data" --tcp none --unix "$sock" "$@"
  bl_wait_socket "$name" "$logf" "$sock"
}
# bl_start_nbdkit NAME SOCKET LOG PLUGIN ARGS...: nbdkit in the foreground on a Unix socket.
bl_start_nbdkit() {
  local name=$1 sock=$2 logf=$3; shift 3
  bl_start "$name" "$logf" nbdkit --foreground --unix "$sock" "$@"
  bl_wait_socket "$name" "$logf" "$sock"
}
# bl_start_qemu_nbd NAME SOCKET LOG IMAGE: qemu-nbd, raw, cache=writeback, aio=threads, up to 8 clients.
bl_start_qemu_nbd() {
  local name=$1 sock=$2 logf=$3 img=$4
  bl_start "$name" "$logf" qemu-nbd --socket="$sock" --format=raw --persistent --shared=8 --cache=writeback \
    --aio=threads "$img"
  bl_wait_socket "$name" "$logf" "$sock"
}

# ---------------------------------------------------------------- fio
# bl_fio_job JOBFILE JSON [VAR=VALUE...]: runs a benchmarks/fio job file with that environment, its JSON in
# JSON and fio's other output in JSON's name with .stderr for .json; on failure prints that file's tail and
# returns 1. fio runs in the background so that SIGINT/SIGTERM reach the script's trap at once.
BL_FIO_PID=""
bl_fio_job() {
  local job=$1 json=$2; shift 2
  env "$@" fio --output-format=json --output="$json" "$job" >"${json%.json}.stderr" 2>&1 </dev/null &
  BL_FIO_PID=$!
  if ! wait "$BL_FIO_PID"; then
    BL_FIO_PID=""
    tail -n 20 "${json%.json}.stderr" >&2 || true
    return 1
  fi
  BL_FIO_PID=""
}
# bl_fio_nbd URI [FIO-ARGS...]: fio's nbd engine against URI, output discarded.
bl_fio_nbd() { local uri=$1; shift; fio --ioengine=nbd --uri="$uri" "$@" >/dev/null; }
# bl_fio_prefill URI SIZE: writes the whole export once (1 MiB sequential, depth 8).
bl_fio_prefill() { bl_fio_nbd "$1" --name=prefill --rw=write --bs=1M --iodepth=8 --size="$2"; }
# bl_fio_randwrite URI NAME JSON SIZE [FIO-ARGS...]: 4 KiB random writes at depth 32 without repeats, then
# prints "IOPS p50 p99 p99.9" (µs) of the run.
bl_fio_randwrite() {
  local uri=$1 name=$2 json=$3 size=$4; shift 4
  bl_fio_nbd "$uri" --name="$name" --rw=randwrite --bs=4k --iodepth=32 --size="$size" --randrepeat=0 \
    --percentile_list=50:99:99.9 --output-format=json --output="$json" "$@"
  python3 "$FIO_SUMMARY" --ddir write "$json"
}

# cpu_ticks PID: utime+stime of the process (all its threads, exited ones included), in clock ticks.
cpu_ticks() {
  local stat f
  stat=$(<"/proc/$1/stat")
  read -r -a f <<<"${stat##*) }"     # after comm: f[0] is the state (field 3), utime field 14, stime 15
  echo $((f[11] + f[12]))
}

# ---------------------------------------------------------------- report header
# bl_git_rev: the short commit of the repository, "(with uncommitted changes)" when dirty.
bl_git_rev() {
  local rev; rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
  if [ "$rev" != unknown ] && [ -n "$(git -C "$ROOT" status --porcelain 2>/dev/null | head -n 1)" ]; then
    rev="$rev (with uncommitted changes)"
  fi
  echo "$rev"
}

# ---------------------------------------------------------------- User-Mode Linux (kernel-*.sh)
# The UML runner KernelIT uses too; the guest scripts source benchmarks/kernel-guest.sh.
BL_UML_RUN=$ROOT/tools/uml/uml-run.sh
# bl_kernel_need TOOL...: die unless UML and the TOOLs are installed.
bl_kernel_need() {
  local t
  for t in /usr/bin/linux.uml "$@"; do
    command -v "$t" >/dev/null 2>&1 || die "$t is missing (see the header of this script)"
  done
}
# bl_uml_run TIMEOUT OUT GUEST-SCRIPT [ARGS...]: boots UML (at most TIMEOUT s) and runs GUEST-SCRIPT in it with
# its output in OUT/guest.log; returns the guest script's status (124: timeout, 125: UML cannot run).
bl_uml_run() { local t=$1; shift; UML_TIMEOUT=$t bash "$BL_UML_RUN" "$@"; }
