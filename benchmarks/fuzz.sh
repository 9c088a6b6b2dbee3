#!/usr/bin/env bash
# fuzz.sh — coverage-guided fuzzing of everything snapbd parses (Jazzer, JUnit 5 @FuzzTest).
#
# usage: benchmarks/fuzz.sh [SECONDS] [TARGET ...]
#   SECONDS  how long each target fuzzes (default 300)
#   TARGET   Class#method (default: all targets below)
#   env FUZZ_INPUT_TIMEOUT  seconds one input may run before it counts as a hang (default 20)
#   env FUZZ_JVM_OPTS       the test JVM's options (default -Xmx768m: the targets' direct buffers and mappings
#                           are freed by GC, and a small heap makes it run)
#   env FUZZ_LOGS           where each target's log goes (default target/fuzz-logs)
#
# Each target runs in its own surefire JVM with JAZZER_FUZZ=1 (Jazzer fuzzes one @FuzzTest per run).
# A finding fails that run and is written by Jazzer into the target's regression inputs directory
# (src/test/resources/<package>/<Class>Inputs/<method>/crash-…), where every later `mvn verify` replays it;
# inputs that grew coverage go to <module>/.cifuzz-corpus/ (not checked in). Without JAZZER_FUZZ every
# `mvn verify` only replays the checked-in inputs (regression mode).
# Prints one line per target: seconds, executions, corpus size, coverage, findings.
# The engine module must be built (the nbd-server targets use it from the reactor: -am).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SECONDS_PER=${1:-300}
shift || true
ENGINE_TARGETS=(OnDiskFuzzTest#volumeFiles OnDiskFuzzTest#tagTable OnDiskFuzzTest#tagCounter OnDiskFuzzTest#regionMap)
SERVER_TARGETS=(NbdFuzzTest#handshake NbdFuzzTest#transmission AdminFuzzTest#adminRequest ConfigFuzzTest#configFile)
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
  TARGETS=("${ENGINE_TARGETS[@]}" "${SERVER_TARGETS[@]}")
fi
LOGS=${FUZZ_LOGS:-$ROOT/target/fuzz-logs}
mkdir -p "$LOGS"
printf '%-32s %8s %10s %8s %6s  %s\n' target seconds execs corpus cov result
status=0
for t in "${TARGETS[@]}"; do
  module=nbd-server
  case " ${ENGINE_TARGETS[*]} " in *" $t "*) module=engine ;; esac
  log=$LOGS/${t/\#/.}.log
  set +e
  # -am builds the modules the target's module depends on; the other modules' tests are not selected.
  # The JUnit timeout (10 m per test by default) must not end a long run: raised to the run plus a margin.
  # One input running longer than FUZZ_INPUT_TIMEOUT seconds (default 20) is a finding (a hang).
  JAZZER_FUZZ=1 nice mvn -B -o -pl "$module" -am test -Dtest="$t" -Dsurefire.failIfNoSpecifiedTests=false \
      -Djazzer.hooks=true -Djazzer.internal.arg.0=fuzz -Djazzer.internal.arg.1=-max_total_time="$SECONDS_PER" \
      -Djazzer.internal.arg.2=-timeout="${FUZZ_INPUT_TIMEOUT:-20}" -DargLine="${FUZZ_JVM_OPTS:--Xmx768m}" \
      -Djunit.jupiter.execution.timeout.default="$((SECONDS_PER + 600)) s" -f "$ROOT/pom.xml" >"$log" 2>&1
  rc=$?
  set -e
  done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true)
  last=$(grep -E '^#[0-9]+[[:space:]]' "$log" | tail -1 || true)
  [ -n "$done_line" ] || done_line=$last
  execs=$(sed -nE 's/^#([0-9]+).*/\1/p' <<<"$done_line")
  cov=$(sed -nE 's/.*cov: ([0-9]+).*/\1/p' <<<"$done_line")
  corp=$(sed -nE 's/.*corp: ([0-9]+).*/\1/p' <<<"$done_line")
  secs=$(sed -nE 's/^Done [0-9]+ runs in ([0-9]+) second.*/\1/p' "$log" | tail -1)
  if [ $rc -eq 0 ]; then
    result=ok
  else
    status=1
    result="FINDING or failure (rc $rc): see $log"
    grep -E '== Java Exception|^Caused by|crash-[0-9a-f]+' "$log" | head -5 | sed 's/^/    /' || true
  fi
  printf '%-32s %8s %10s %8s %6s  %s\n' "$t" "${secs:-?}" "${execs:-?}" "${corp:-?}" "${cov:-?}" "$result"
done
exit $status
