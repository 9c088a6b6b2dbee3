# tools/uml/guest-steps.sh — the step runner of the scenarios that run inside User-Mode Linux (KernelIT's
# kernel-steps.sh, SystemdUmlIT's systemd-steps.sh). Source it with RESULTS and OUT set.
#   step NAME FUNCTION   runs FUNCTION in a subshell, its output in OUT/step-NAME.log, and appends one line to
#                        RESULTS: STEP NAME PASS <its last output line> | FAIL <the reason> | SKIP <the reason>,
#                        each with its duration; on FAIL it calls step_failed LOG when the scenario defines it
#   fail MESSAGE         ends the step as failed;  skip MESSAGE: ends it as skipped (exit 3)
#   must CMD...          runs CMD (bounded) and fails the step with its exit status when it fails
#   bounded CMD...       runs CMD under timeout(1) (600 s); shell functions bound themselves

fail() { echo "FAIL: $*"; exit 1; }
skip() { echo "SKIP: $*"; exit 3; }
bounded() {
  if [ "$(type -t "$1")" = function ]; then "$@"; else timeout 600 "$@"; fi
}
must() {
  echo "+ $*"
  bounded "$@"
  local rc=$?
  [ "$rc" -eq 0 ] || fail "'$*' exited $rc"
}
step() {
  local name="$1"; shift
  local log="$OUT/step-$name.log"
  local t0; t0=$(date +%s)
  ( "$@" ) > "$log" 2>&1 </dev/null
  local rc=$? t1; t1=$(date +%s)
  local detail
  if [ "$rc" -eq 0 ]; then
    detail="$(grep -v '^+' "$log" | grep . | tail -1)"
    echo "STEP $name PASS ${detail:-ok} ($((t1 - t0)) s)" >> "$RESULTS"
  elif [ "$rc" -eq 3 ]; then
    detail="$(grep '^SKIP: ' "$log" | tail -1 | sed 's/^SKIP: //')"
    echo "STEP $name SKIP ${detail} ($((t1 - t0)) s)" >> "$RESULTS"
  else
    detail="$(grep '^FAIL: ' "$log" | tail -1 | sed 's/^FAIL: //')"
    [ -n "$detail" ] || detail="exit $rc: $(tail -3 "$log" | tr '\n' ' ')"
    detail="$(printf '%s' "$detail" | tr -d '\r\n' | head -c 2000)"
    echo "STEP $name FAIL ${detail} ($((t1 - t0)) s)" >> "$RESULTS"
    if [ "$(type -t step_failed)" = function ]; then step_failed "$log"; fi
  fi
}
