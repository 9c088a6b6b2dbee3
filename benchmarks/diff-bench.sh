#!/usr/bin/env bash
# diff-bench.sh — differential of a 64 GiB volume (sparse data file) with 8 snapshots and 1% of the
# blocks changed: time to produce all extents and memory used. Engine-level (no NBD), one process.
# Usage: benchmarks/diff-bench.sh [SIZE_GIB] [SNAPSHOTS] [PERCENT]
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh" diff-bench
CLASSES=$BENCH_DIR/target/classes
bl_require_jars snapbd
[ -d "$CLASSES/io/snapbd/bench" ] || die "build first: $BL_BUILD"
WORK=$(mktemp -d /tmp/diff-bench.XXXXXX)
bl_on_exit "$WORK"
bl_traps
java -Xmx2g -cp "$(bl_snapbd_jar):$CLASSES" io.snapbd.bench.DiffBench "$WORK" "${1:-64}" "${2:-8}" "${3:-1}"
