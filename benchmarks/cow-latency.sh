#!/usr/bin/env bash
# cow-latency.sh — first writes after a snapshot vs no snapshot, closed loop and at fixed rates, for one
# or more server jars side by side in one run (each jar gets its own server and 1 GiB volume; rounds
# alternate between them, so machine noise hits all of them alike).
#
# usage: benchmarks/cow-latency.sh ROUNDS LABEL=JAR [LABEL=JAR ...]
#   env CLOSED_IOS   first writes per closed-loop row (default 65536: a quarter of the volume)
#   env RATES        fixed rates for fio --rate_iops (default "2000 5000"; 4×rate writes per row)
#   env SKIP_CLOSED  set to skip the closed-loop rows
#   env OPTS_LABEL   JVM options for that label's server (e.g. OPTS_a="-Dsnapbd.overlay.mib=256")
# Rows per label: closed-ns / closed-as (fio 4k randwrite QD32, random map, no repeats; "as" right after
# `snapshot create`, so every write is a first write), rateR-ns / rateR-as. Each "as" row takes a fresh
# snapshot and deletes it afterwards. Reported: medians over rounds and ratios to the matching ns row.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh" cow-latency
ROUNDS=$1; shift
CLOSED_IOS=${CLOSED_IOS:-65536}
RATES=${RATES-"2000 5000"}
WORK=$(mktemp -d /tmp/cow-latency.XXXXXX)
echo "work: $WORK" >&2
declare -A JAR
LABELS=()
for a in "$@"; do l=${a%%=*}; JAR[$l]=${a#*=}; LABELS+=($l); done
bl_on_exit "$WORK"
bl_traps
for l in "${LABELS[@]}"; do
  d=$WORK/$l; mkdir -p $d
  SNAPBD_JAR=${JAR[$l]} $SNAPBD volume create bench --size 1G --save-size 1100M --data-dir $d/data >/dev/null
  optvar=OPTS_$l
  SNAPBD_JAVA_OPTS="${!optvar:-}" SNAPBD_JAR=${JAR[$l]} bl_start_snapbd "$l" $d/data $d/sock $d/server.log
  bl_fio_prefill "nbd+unix:///bench?socket=$d/sock" 1G
done
runfio() { # label name args
  local l=$1 n=$2; shift 2
  echo "$l $n $(bl_fio_randwrite "nbd+unix:///bench?socket=$WORK/$l/sock" $n $WORK/$l/$n.json 1G "$@")" | tee -a $WORK/results.txt
}
snap() { SNAPBD_JAR=${JAR[$1]} $SNAPBD snapshot $2 bench s --data-dir $WORK/$1/data >/dev/null; }
for r in $(seq 1 $ROUNDS); do
  for l in "${LABELS[@]}"; do
    if [ -z "${SKIP_CLOSED:-}" ]; then runfio $l "closed-ns.$r" --number_ios=$CLOSED_IOS
    snap $l create; runfio $l "closed-as.$r" --number_ios=$CLOSED_IOS; snap $l delete; fi
    for rate in $RATES; do
      ios=$((rate*4)); 
      runfio $l "rate$rate-ns.$r" --number_ios=$ios --rate_iops=$rate
      snap $l create; runfio $l "rate$rate-as.$r" --number_ios=$ios --rate_iops=$rate; snap $l delete
    done
  done
done
python3 - $WORK/results.txt <<'PY'
import sys, statistics, collections
raw = collections.defaultdict(list)
for line in open(sys.argv[1]):
    l, n, *v = line.split(); raw[(l, n.rsplit('.',1)[0])].append([float(x) for x in v])
med = {k: [statistics.median(x[i] for x in v) for i in range(4)] for k, v in raw.items()}
print("| variant | test | IOPS | p50 µs | p99 µs | p99.9 µs | IOPS × ns | p50 × ns | p99 × ns | p99.9 × ns |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for (l, n), m in sorted(med.items()):
    b = med[(l, n.replace('-as', '-ns'))]
    print(f"| {l} | {n} | {m[0]:,.0f} | {m[1]:.0f} | {m[2]:.0f} | {m[3]:.0f} | {m[0]/b[0]:.2f} | {m[1]/b[1]:.2f} | {m[2]/b[2]:.2f} | {m[3]/b[3]:.2f} |")
PY
