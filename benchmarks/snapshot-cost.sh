#!/usr/bin/env bash
# snapshot-cost.sh — what a snapshot costs the write path, measured side by side in one run.
#
# Rows (fio --ioengine=nbd, 4 KiB random writes, queue depth 32, one connection, over a Unix socket):
#   no-snapshot     the volume has no snapshot
#   after-snapshot  right after `snapshot create`: random writes without repeats (fio's random map),
#                   so every write is a first write and copies its block into the save volume
#   all-copied      the same snapshot after every block was copied once: writes go in place again
#   lun-tracking    no snapshot, LUN state tracking enabled (HP counter on every write)
# Each round deletes the snapshot and takes it again, so every round starts from the same state.
# Reported: median over rounds of IOPS, p50/p99/p99.9, and each row's ratio to the no-snapshot row
# (IOPS: row/no-snapshot; latency: row/no-snapshot, so above 1 means slower).
#
# Also measures `snapshot create` time on a 1 GiB and a 64 GiB volume (the 64 GiB data file is
# sparse for this measurement only) — creation must not grow with the volume size.
set -euo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh" snapshot-cost
SIZE=1G
RUNTIME=15
ROUNDS=3
COPY_IOS=65536           # first writes measured right after the snapshot (a quarter of a 1 GiB volume)
MARKDOWN=""

usage() {
  cat <<EOF
Usage: benchmarks/snapshot-cost.sh [--runtime S] [--rounds N] [--copy-ios N] [--markdown FILE]
  --runtime S     seconds for the time-based rows (default $RUNTIME)
  --rounds N      rounds (default $ROUNDS)
  --copy-ios N    writes measured right after the snapshot, all first writes (default $COPY_IOS)
  --markdown FILE also write the tables as Markdown
EOF
}
bl_options usage --runtime RUNTIME --rounds ROUNDS --copy-ios COPY_IOS --markdown MARKDOWN -- "$@"
[ -x "$SNAPBD" ] || die "$SNAPBD missing"
bl_need fio nbdinfo python3

WORK=$(mktemp -d /tmp/snapshot-cost.XXXXXX)
DATA=$WORK/data
SOCK=$WORK/nbd.sock
bl_on_exit "$WORK"
bl_traps

cli() { "$SNAPBD" "$@" --data-dir "$DATA"; }
URI="nbd+unix:///bench?socket=$SOCK"
run_fio() {   # name, extra args... -> "iops p50 p99 p999" (µs)
  local name=$1; shift
  bl_fio_randwrite "$URI" "$name" "$WORK/$name.json" "$SIZE" "$@"
}

echo "== machine" >&2
MACHINE=$(printf 'date: %s\ncpus: %s x %s\nmemory: %s\nkernel: %s\nfio: %s\njava: %s\nfs: %s\n' \
  "$(date -u +%FT%TZ)" "$(nproc)" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" \
  "$(free -h | awk '/Mem:/{print $2}')" "$(uname -sr)" "$(fio --version)" \
  "$(java -version 2>&1 | head -1)" "$(df -T /tmp | awk 'NR==2{print $2}')")
echo "$MACHINE" >&2

mkdir -p "$DATA"
cli volume create bench --size "$SIZE" --save-size 1100M >/dev/null
bl_start_snapbd server "$DATA" "$SOCK" "$WORK/server.log"
echo "prefill" >&2
bl_fio_prefill "$URI" "$SIZE"

declare -A RES
for r in $(seq 1 "$ROUNDS"); do
  echo "[round $r/$ROUNDS] no-snapshot" >&2
  RES[no-snapshot,$r]=$(run_fio "ns$r" --time_based --runtime="$RUNTIME" --ramp_time=2 --norandommap)
  cli snapshot create bench s >/dev/null
  echo "[round $r/$ROUNDS] after-snapshot ($COPY_IOS first writes)" >&2
  RES[after-snapshot,$r]=$(run_fio "as$r" --number_ios="$COPY_IOS")
  echo "[round $r/$ROUNDS] copy the rest once" >&2
  bl_fio_nbd "$URI" --name=fill --rw=write --bs=1M --iodepth=8 --size="$SIZE"
  echo "[round $r/$ROUNDS] all-copied" >&2
  RES[all-copied,$r]=$(run_fio "ac$r" --time_based --runtime="$RUNTIME" --ramp_time=2 --norandommap)
  cli snapshot delete bench s >/dev/null
  cli lun-state enable bench >/dev/null
  echo "[round $r/$ROUNDS] lun-tracking" >&2
  RES[lun-tracking,$r]=$(run_fio "lt$r" --time_based --runtime="$RUNTIME" --ramp_time=2 --norandommap)
  cli lun-state disable bench >/dev/null
done
bl_stop server

# Snapshot creation time, 1 GiB vs 64 GiB (sparse), median of 5, each on a flushed, idle volume.
create_times() {   # size sparse?
  local size=$1 dir=$WORK/c$1
  "$SNAPBD" volume create v --size "$size" --save-size 64M --sparse --data-dir "$dir" >/dev/null
  bl_start_snapbd server "$dir" "$dir/nbd.sock" "$dir.log"
  bl_fio_nbd "nbd+unix:///v?socket=$dir/nbd.sock" --name=w --rw=randwrite --bs=4k --size="$size" \
      --number_ios=20000 --iodepth=16
  local times=()
  for i in 1 2 3 4 5; do
    "$SNAPBD" snapshot create v "s$i" --data-dir "$dir" --json >/dev/null   # flushes the writes above
    times+=("$("$SNAPBD" snapshot create v "t$i" --data-dir "$dir" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["createMicros"])')")
  done
  bl_stop server
  printf '%s\n' "${times[@]}" | sort -n | sed -n 3p
  rm -rf "$dir"
}
echo "snapshot create time: 1G" >&2
C1=$(create_times 1G)
echo "snapshot create time: 64G (sparse)" >&2
C64=$(create_times 64G)

for k in "${!RES[@]}"; do echo "$k ${RES[$k]}"; done > "$WORK/results.txt"
python3 - "$ROUNDS" "$C1" "$C64" "$MACHINE" "$MARKDOWN" "$WORK/results.txt" <<'PY'
import sys, statistics
rounds = int(sys.argv[1]); c1, c64 = int(sys.argv[2]), int(sys.argv[3]); machine = sys.argv[4]; md = sys.argv[5]
raw = {}
for line in open(sys.argv[6]):
    key, *vals = line.split()
    raw[key] = [float(x) for x in vals]
rows = ["no-snapshot", "after-snapshot", "all-copied", "lun-tracking"]
med = {}
for row in rows:
    vals = [raw[f"{row},{r}"] for r in range(1, rounds + 1)]
    med[row] = [statistics.median(v[i] for v in vals) for i in range(4)]
base = med["no-snapshot"]
out = []
out.append("| row | IOPS | p50 µs | p99 µs | p99.9 µs | IOPS × no-snapshot | p99 × no-snapshot | p99.9 × no-snapshot |")
out.append("|---|---:|---:|---:|---:|---:|---:|---:|")
for row in rows:
    m = med[row]
    out.append(f"| {row} | {m[0]:,.0f} | {m[1]:.1f} | {m[2]:.1f} | {m[3]:.1f} | {m[0]/base[0]:.2f} | {m[2]/base[2]:.2f} | {m[3]/base[3]:.2f} |")
out.append("")
out.append("| snapshot create (median of 5, µs) | 1 GiB volume | 64 GiB volume (sparse) | 64 GiB / 1 GiB |")
out.append("|---|---:|---:|---:|")
out.append(f"| snapbd | {c1} | {c64} | {c64/max(c1,1):.2f} |")
text = "\n".join(out)
print("```text\n" + machine + "```\n")
print(text)
if md:
    open(md, "w").write("```text\n" + machine + "```\n\n" + text + "\n")
PY
