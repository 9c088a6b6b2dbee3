#!/usr/bin/env bash
# diff-bench.sh — differential of a 64 GiB volume (sparse data file) with 8 snapshots and 1% of the
# blocks changed: time to produce all extents and memory used. Engine-level (no NBD), one process.
# Usage: benchmarks/diff-bench.sh [SIZE_GIB] [SNAPSHOTS] [PERCENT]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
JAR=$ROOT/nbd-server/target/snapbd.jar
CLASSES=$ROOT/benchmarks/target/classes
[ -f "$JAR" ] && [ -d "$CLASSES/io/snapbd/bench" ] || { echo "diff-bench: build first: mvn -B -q -DskipTests package" >&2; exit 1; }
WORK=$(mktemp -d /tmp/diff-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
java -Xmx2g -cp "$JAR:$CLASSES" io.snapbd.bench.DiffBench "$WORK" "${1:-64}" "${2:-8}" "${3:-1}"
