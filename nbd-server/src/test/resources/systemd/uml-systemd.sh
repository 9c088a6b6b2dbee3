#!/usr/bin/env bash
# Boots Debian's systemd as PID 1 inside User-Mode Linux and runs one test script as a systemd unit.
# Used by SystemdUmlIT.
#
#   uml-systemd.sh OUTDIR GUEST-SCRIPT [ARGS...]
#
# The guest's root is the host's root file system, mounted read-only (hostfs), below an overlay whose
# upper layer is a tmpfs inside the guest: packages, units and volumes installed by the test vanish at
# power-off and nothing reaches the host's files, except OUTDIR, mounted read-write at the same path.
# Before systemd starts, overlay.ko and nbd.ko are loaded from the UML modules with busybox insmod.
# Then `chroot OVERLAY /lib/systemd/systemd --unit=snapbd-uml-test.target` becomes PID 1; the target
# pulls in snapbd-uml-test.service, which runs GUEST-SCRIPT ARGS with $OUT=OUTDIR, and systemd powers
# off when it ends (SuccessAction=/FailureAction=poweroff), stopping every unit on the way.
#
# OUTDIR receives console.log (the UML console: kernel and systemd), guest-script.log (its output) and
# whatever the script writes. Environment: UML_MEM (default 2G), UML_TIMEOUT seconds for the whole
# boot (default 1800). Exit status: the test unit's result ("0" when it succeeded), 124 on timeout,
# 125 when UML cannot run here or the guest never reached the test.
set -euo pipefail
here="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)"
out="${1:?usage: uml-systemd.sh OUTDIR GUEST-SCRIPT [ARGS...]}"
script="${2:?usage: uml-systemd.sh OUTDIR GUEST-SCRIPT [ARGS...]}"
shift 2
mkdir -p "$out"
out="$(cd "$out" && pwd)"
script="$(readlink -f "$script")"

uml="${UML:-/usr/bin/linux.uml}"
[ -x "$uml" ] || { echo "uml-systemd: $uml is missing: apt-get install user-mode-linux" >&2; exit 125; }
command -v busybox >/dev/null || { echo "uml-systemd: busybox is missing: apt-get install busybox-static" >&2; exit 125; }
[ -x /lib/systemd/systemd ] || { echo "uml-systemd: /lib/systemd/systemd is missing: apt-get install systemd" >&2; exit 125; }

# UML on hosts whose CPUs have AMX needs the xstate shim of tools/uml/uml-run.sh (see its comment).
top="$here"; while [ "$top" != / ] && [ ! -d "$top/tools/uml" ]; do top="$(dirname "$top")"; done
shim_src="$top/tools/uml/uml-xstate-shim.c"
shim="$out/uml-xstate-shim.so"
preload=""
if [ -f "$shim_src" ] && { [ ! -f "$shim" ] || [ "$shim_src" -nt "$shim" ]; }; then
  if command -v cc >/dev/null 2>&1; then
    cc -shared -fPIC -O2 -Wall -o "$shim" "$shim_src" -ldl
  else
    echo "uml-systemd: no C compiler for the UML xstate shim (apt-get install gcc libc6-dev); trying without it" >&2
  fi
fi
[ -f "$shim" ] && preload="$shim"

rm -f "$out/unit.result" "$out/guest-script.log" "$out/console.log"
{
  echo "#!/bin/bash"
  printf 'OUT=%q\nSCRIPT=%q\n' "$out" "$script"
  printf 'ARGS=('; for a in "$@"; do printf ' %q' "$a"; done; echo ' )'
  cat "$here/uml-systemd-init.sh"
} > "$out/init.sh"
chmod +x "$out/init.sh"

export TMPDIR="${UML_TMPDIR:-/dev/shm}"
[ -d "$TMPDIR" ] && [ -w "$TMPDIR" ] || export TMPDIR=/tmp
set +e
LD_PRELOAD="$preload" timeout --kill-after=30 "${UML_TIMEOUT:-1800}" "$uml" mem="${UML_MEM:-2G}" \
  root=/dev/root rootfstype=hostfs rootflags=/ ro init="$out/init.sh" con=null con0=fd:0,fd:1 \
  systemd.show_status=1 \
  </dev/null >"$out/console.log" 2>&1
rc=$?
set -e
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
  echo "uml-systemd: UML did not power off within ${UML_TIMEOUT:-1800} s (killed); see $out/console.log" >&2
  exit 124
fi
if [ ! -f "$out/unit.result" ]; then
  echo "uml-systemd: the test unit did not finish (UML exit $rc); last console lines:" >&2
  grep -v '^ \[<' "$out/console.log" | tail -25 >&2
  exit 125
fi
result="$(cat "$out/unit.result")"
[ "$result" = "success" ] && exit 0
echo "uml-systemd: the test unit ended with result '$result'" >&2
exit 1
