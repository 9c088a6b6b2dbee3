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
# The UML boot (and the xstate shim for hosts whose CPUs have AMX) is tools/uml/uml-boot.sh's, as for uml-run.sh.
top="$here"; while [ "$top" != / ] && [ ! -d "$top/tools/uml" ]; do top="$(dirname "$top")"; done
UB_NAME=uml-systemd
. "$top/tools/uml/uml-boot.sh"
ub_args "$@"
out=$UB_OUT script=$UB_SCRIPT
shift 2
ub_prepare "$out"
command -v busybox >/dev/null || { echo "uml-systemd: busybox is missing: apt-get install busybox-static" >&2; exit 125; }
[ -x /lib/systemd/systemd ] || { echo "uml-systemd: /lib/systemd/systemd is missing: apt-get install systemd" >&2; exit 125; }

rm -f "$out/unit.result" "$out/guest-script.log" "$out/console.log"
{
  echo "#!/bin/bash"
  printf 'OUT=%q\nSCRIPT=%q\n' "$out" "$script"
  printf 'ARGS=('; for a in "$@"; do printf ' %q' "$a"; done; echo ' )'
  cat "$here/uml-systemd-init.sh"
} > "$out/init.sh"
ub_boot "$out" ro "${UML_MEM:-2G}" systemd.show_status=1
[ -f "$out/unit.result" ] || ub_unfinished "$out" "the test unit" 25
result="$(cat "$out/unit.result")"
[ "$result" = "success" ] && exit 0
echo "uml-systemd: the test unit ended with result '$result'" >&2
exit 1
