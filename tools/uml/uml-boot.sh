# tools/uml/uml-boot.sh — what the two User-Mode Linux runners share: uml-run.sh (KernelIT, benchmarks/kernel-*.sh,
# power-loss.sh: a script as PID 1's child) and nbd-server/src/test/resources/systemd/uml-systemd.sh (SystemdUmlIT:
# systemd as PID 1). Source it after `set -euo pipefail` with UB_NAME set (the prefix of every message), then
#   ub_args "$@"                 the runner's OUTDIR GUEST-SCRIPT [ARGS...]: OUTDIR created and absolute in UB_OUT,
#                                GUEST-SCRIPT absolute in UB_SCRIPT (the caller shifts 2 for ARGS)
#   ub_prepare OUTDIR            checks UML, builds the xstate shim into OUTDIR (exit 125 when UML cannot run here)
#   (write OUTDIR/init.sh)
#   ub_boot OUTDIR ro|rw MEM [KERNEL-ARGS...]
#                                boots UML with the host's root as its root (hostfs, ro or rw) and init OUTDIR/init.sh,
#                                its console in OUTDIR/console.log, at most UML_TIMEOUT (default 1800) s: exit 124
#                                when it had to be killed, else UML's exit status in UB_RC
#   ub_unfinished OUTDIR WHAT N  says WHAT did not finish, with the last N console lines, and exits 125
# Environment: UML (default /usr/bin/linux.uml), UML_TIMEOUT, UML_TMPDIR (where UML keeps its memory file).
UB_HERE="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)"
UB_UML="${UML:-/usr/bin/linux.uml}"
UB_PRELOAD=""
UB_RC=0

ub_args() {
  if [ $# -lt 2 ]; then
    echo "usage: $UB_NAME.sh OUTDIR GUEST-SCRIPT [ARGS...]" >&2
    exit 2
  fi
  mkdir -p "$1"
  UB_OUT="$(cd "$1" && pwd)"
  UB_SCRIPT="$(readlink -f "$2")"
}

ub_prepare() {
  local out=$1
  if [ ! -x "$UB_UML" ]; then
    echo "$UB_NAME: $UB_UML is missing: apt-get install user-mode-linux" >&2
    exit 125
  fi
  # The shim works around hosts with AMX (see uml-xstate-shim.c); it is harmless elsewhere.
  local shim="$out/uml-xstate-shim.so"
  if [ ! -f "$shim" ] || [ "$UB_HERE/uml-xstate-shim.c" -nt "$shim" ]; then
    if command -v cc >/dev/null 2>&1; then
      cc -shared -fPIC -O2 -Wall -o "$shim" "$UB_HERE/uml-xstate-shim.c" -ldl
    else
      echo "$UB_NAME: no C compiler to build the UML xstate shim (apt-get install gcc libc6-dev); trying without it" >&2
    fi
  fi
  if [ -f "$shim" ]; then UB_PRELOAD="$shim"; fi
}

ub_boot() {
  local out=$1 mode=$2 mem=$3
  shift 3
  chmod +x "$out/init.sh"
  # UML keeps its memory in a file under TMPDIR; /dev/shm keeps it off the disk when there is room.
  export TMPDIR="${UML_TMPDIR:-/dev/shm}"
  [ -d "$TMPDIR" ] && [ -w "$TMPDIR" ] || export TMPDIR=/tmp
  set +e
  LD_PRELOAD="$UB_PRELOAD" timeout --kill-after=30 "${UML_TIMEOUT:-1800}" "$UB_UML" mem="$mem" \
    root=/dev/root rootfstype=hostfs rootflags=/ "$mode" init="$out/init.sh" con=null con0=fd:0,fd:1 "$@" \
    </dev/null >"$out/console.log" 2>&1
  UB_RC=$?
  set -e
  if [ "$UB_RC" -eq 124 ] || [ "$UB_RC" -eq 137 ]; then
    echo "$UB_NAME: UML did not power off within ${UML_TIMEOUT:-1800} s (killed); see $out/console.log" >&2
    exit 124
  fi
}

ub_unfinished() {
  echo "$UB_NAME: $2 did not finish (UML exit $UB_RC); last console lines:" >&2
  grep -v '^ \[<' "$1/console.log" | tail -"$3" >&2
  exit 125
}
