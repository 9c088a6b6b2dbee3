#!/usr/bin/env bash
# Boots User-Mode Linux with the host file system as its root and runs one script inside it, as root, with
# the real nbd driver loaded. Used by KernelIT and benchmarks/kernel-compare.sh and kernel-latency.sh (through
# benchmarks/lib.sh) and power-loss.sh; SystemdUmlIT's uml-systemd.sh boots through the same uml-boot.sh.
#
#   uml-run.sh OUTDIR GUEST-SCRIPT [ARGS...]
#
# OUTDIR (created) receives console.log
# (the UML console), guest.log (the script's output) and whatever the script writes there ($KT_OUT).
# Environment: UML_MEM (default 3G), UML_TIMEOUT seconds for the whole boot (default 1800), KT_NBDS (nbd
# devices, default 8), UML_UBD0 (a host file the guest sees as the block device /dev/ubda; benchmarks/power-loss.sh). Exit status: the guest script's, 124 on timeout, 125 when UML cannot run here.
set -euo pipefail
here="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)"
UB_NAME=uml-run
. "$here/uml-boot.sh"
ub_args "$@"
out=$UB_OUT script=$UB_SCRIPT
shift 2
ub_prepare "$out"

# The init script the guest runs: the variables are baked in, since init gets no environment of ours.
rm -f "$out/guest.rc" "$out/guest.log"
{
  echo "#!/bin/bash"
  printf 'export KT_OUT=%q KT_NBDS=%q KT_HOSTNAME=uml\n' "$out" "${KT_NBDS:-8}"
  printf 'exec /bin/bash %q %q' "$here/guest-init.sh" "$script"
  for a in "$@"; do printf ' %q' "$a"; done
  echo
} > "$out/init.sh"
ub_boot "$out" rw "${UML_MEM:-3G}" ${UML_UBD0:+"ubd0=$UML_UBD0"}
[ -f "$out/guest.rc" ] || ub_unfinished "$out" "the guest script" 15
exit "$(cat "$out/guest.rc")"
