#!/usr/bin/env bash
# Boots User-Mode Linux with the host file system as its root and runs one script inside it, as root, with
# the real nbd driver loaded. Used by KernelIT and benchmarks/kernel-compare.sh and kernel-latency.sh (through
# benchmarks/lib.sh); SystemdUmlIT's uml-systemd.sh builds the same xstate shim.
#
#   uml-run.sh OUTDIR GUEST-SCRIPT [ARGS...]
#
# OUTDIR (created) receives console.log
# (the UML console), guest.log (the script's output) and whatever the script writes there ($KT_OUT).
# Environment: UML_MEM (default 3G), UML_TIMEOUT seconds for the whole boot (default 1800), KT_NBDS (nbd
# devices, default 8), UML_UBD0 (a host file the guest sees as the block device /dev/ubda; benchmarks/power-loss.sh). Exit status: the guest script's, 124 on timeout, 125 when UML cannot run here.
set -euo pipefail
here="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)"
out="${1:?usage: uml-run.sh OUTDIR GUEST-SCRIPT [ARGS...]}"
script="${2:?usage: uml-run.sh OUTDIR GUEST-SCRIPT [ARGS...]}"
shift 2
mkdir -p "$out"
out="$(cd "$out" && pwd)"
script="$(readlink -f "$script")"

uml="${UML:-/usr/bin/linux.uml}"
if [ ! -x "$uml" ]; then
  echo "uml-run: $uml is missing: apt-get install user-mode-linux" >&2
  exit 125
fi

# The shim works around hosts with AMX (see uml-xstate-shim.c); it is harmless elsewhere.
shim="$out/uml-xstate-shim.so"
preload=""
if [ ! -f "$shim" ] || [ "$here/uml-xstate-shim.c" -nt "$shim" ]; then
  if command -v cc >/dev/null 2>&1; then
    cc -shared -fPIC -O2 -Wall -o "$shim" "$here/uml-xstate-shim.c" -ldl
  else
    echo "uml-run: no C compiler to build the UML xstate shim (apt-get install gcc libc6-dev); trying without it" >&2
  fi
fi
[ -f "$shim" ] && preload="$shim"

# The init script the guest runs: the variables are baked in, since init gets no environment of ours.
rm -f "$out/guest.rc" "$out/guest.log"
{
  echo "#!/bin/bash"
  printf 'export KT_OUT=%q KT_NBDS=%q KT_HOSTNAME=uml\n' "$out" "${KT_NBDS:-8}"
  printf 'exec /bin/bash %q %q' "$here/guest-init.sh" "$script"
  for a in "$@"; do printf ' %q' "$a"; done
  echo
} > "$out/init.sh"
chmod +x "$out/init.sh"

# UML keeps its memory in a file under TMPDIR; /dev/shm keeps it off the disk when there is room.
export TMPDIR="${UML_TMPDIR:-/dev/shm}"
[ -d "$TMPDIR" ] && [ -w "$TMPDIR" ] || export TMPDIR=/tmp
set +e
LD_PRELOAD="$preload" timeout --kill-after=30 "${UML_TIMEOUT:-1800}" "$uml" mem="${UML_MEM:-3G}" \
  root=/dev/root rootfstype=hostfs rootflags=/ rw init="$out/init.sh" con=null con0=fd:0,fd:1 \
  ${UML_UBD0:+"ubd0=$UML_UBD0"} \
  </dev/null >"$out/console.log" 2>&1
rc=$?
set -e
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
  echo "uml-run: UML did not power off within ${UML_TIMEOUT:-1800} s (killed); see $out/console.log" >&2
  exit 124
fi
if [ ! -f "$out/guest.rc" ]; then
  echo "uml-run: the guest script did not finish (UML exit $rc); last console lines:" >&2
  grep -v '^ \[<' "$out/console.log" | tail -15 >&2
  exit 125
fi
exit "$(cat "$out/guest.rc")"
