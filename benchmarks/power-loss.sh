#!/usr/bin/env bash
# benchmarks/power-loss.sh — real power cuts under snapbd, inside User-Mode Linux (docs/power-loss.md).
#
#   benchmarks/power-loss.sh [--rounds N] [--seed S] [--max-delay SECONDS] [--out DIR] [--json]
#
# Each round boots a UML guest whose snapbd data directory is on ext4 on /dev/ubda (a host file), runs
# snapbd there and a client workload against it (`bench power-loss`: random writes with and without FUA,
# FLUSH, TRIM, WRITE_ZEROES, snapshot create/delete/restore, LUN state enable/get), each acknowledged
# operation logged to a host file through hostfs and forced before the next is sent; then, after a delay
# drawn from the seed, SIGKILLs the UML processes: the guest's page cache is lost, only what it had written
# to /dev/ubda survives. The next boot replays the ext4 journal, runs `snapbd fsck`, starts snapbd
# (recovery) and checks the volume, its snapshots and its LUN state against the log; then it starts the
# next round on a new volume. The last boot only checks, stops snapbd and runs fsck again.
#
# Options:
#   --rounds N        power cuts (default 20)
#   --seed S          campaign seed (default: from the clock); round R uses seed S*1000+R
#   --max-delay S     the cut comes 0.5..S seconds after the workload's first operation (default 20); in three
#                     rounds of four it then waits (up to 30 s) for a snapshot create, delete or restore
#                     to be sent and cuts 0..50 ms into it
#   --out DIR         where logs go (default benchmarks/results/power-loss-<timestamp>)
#   --json            print the summary as JSON on stdout
#   --keep-going      run every round even after a violation (default: stop at the first)
#   --features F      what the workload adds to the basic one: mix (default: each round's seed picks a combination,
#                     all 16 in 16 rounds), none, or a comma-separated list of clone (clones of snapshots, written
#                     to), mirror (a second leg, a file or an NBD export of a second snapbd by seed, online adds and
#                     removes of a third; legs compared and fsck'd after the recovery), concurrent (two
#                     connections, two operations in flight), full (a 512 KiB save volume: snapshots terminated)
#   --aim KIND        every round waits for KIND (time, SNAP_CREATE, SNAP_DELETE, RESTORE, CLONE, MIRROR_ADD) instead of
#                     a kind drawn from the seed, e.g. to cut during clones (with --features clone) or during an online
#                     mirror add's copy (with --features mirror)
#   --self-test       the workload sends no FLUSH and no FUA yet logs them as done: the check must find
#                     violations (exit 0 when it does, 3 when it finds none)
#   --resume          go on with the campaign in --out DIR where it stopped (the host or the session ended under
#                     it): the same settings, jars and disk; the round cut by the interruption is checked as any
#                     other (its cut time is unknown), then the remaining rounds run
#   --lanes L         run L guests side by side, each on a disk of its own (default 1): lane K runs rounds K, K+L,
#                     K+2L, ... (a round's workload depends on its seed only), logs in OUT/lane-K; the summary adds
#                     the lanes up. A round takes ~30-60 s of one CPU, mostly JVM starts in the guest: use one lane
#                     per idle CPU. With a violation in one lane, the others stop too (unless --keep-going).
# Exit: 0 no violation; 3 violations; 77 a prerequisite is missing (UML, mkfs.ext4, the jars); 1 other errors.
# Needs: user-mode-linux, e2fsprogs, the jars (mvn -B -q -DskipTests package).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh" power-loss
usage() { bl_header_usage 2 42; }

rounds=20 seed="" max_delay=20 out="" json=0 keep_going=0 self_test="" features=mix aim="" lanes=1 lane="" resume=0
bl_options usage --rounds rounds --seed seed --max-delay max_delay --out out --json json=1 --keep-going keep_going=1 \
  --self-test self_test=self-test --features features --aim aim --lanes lanes --lane lane --resume resume=1 -- "$@"
if [ "$resume" = 1 ]; then
  # The interrupted campaign's settings (its campaign.args), whatever else the command line says.
  [ -n "$out" ] || die "--resume needs the interrupted campaign's --out DIR"
  [ -f "$out/campaign.args" ] || die "--resume: $out/campaign.args is missing (not a campaign directory, or a campaign from before --resume)"
  # shellcheck disable=SC1091
  . "$out/campaign.args"
fi
[[ -z $aim || $aim =~ ^(time|SNAP_CREATE|SNAP_DELETE|RESTORE|CLONE|MIRROR_ADD)$ ]] || die "--aim must be time, SNAP_CREATE, SNAP_DELETE, RESTORE, CLONE or MIRROR_ADD, not '$aim'"
[[ $features =~ ^(mix|none|(clone|mirror|concurrent|full)(,(clone|mirror|concurrent|full))*)$ ]] \
  || die "--features must be mix, none or a comma-separated list of clone, mirror, concurrent, full; not '$features'"
bl_positive --rounds "$rounds"
bl_positive --max-delay "$max_delay"
bl_positive --lanes "$lanes"
[ "$lanes" -le "$rounds" ] || die "--lanes ($lanes) must not exceed --rounds ($rounds)"
[ "$lanes" = 1 ] || [ -z "$self_test" ] || die "--self-test runs in one lane (--lanes 1)"
[ -z "$lane" ] || { bl_positive --lane "$lane"; [ "$lane" -le "$lanes" ] || die "--lane must be at most --lanes"; }
[ -n "$seed" ] || seed=$(( $(date +%s) % 100000 ))
[[ $seed =~ ^[0-9]+$ ]] || die "--seed must be a non-negative integer, not '$seed'"

missing() { echo "power-loss: $*" >&2; exit 77; }
[ -x /usr/bin/linux.uml ] || missing "/usr/bin/linux.uml is missing (apt-get install user-mode-linux)"
command -v mkfs.ext4 >/dev/null || missing "mkfs.ext4 is missing (apt-get install e2fsprogs)"
command -v java >/dev/null || missing "java is missing"
for j in "$(bl_snapbd_jar)" "$(bl_bench_jar)"; do [ -f "$j" ] || missing "$j is missing: build first ($BL_BUILD)"; done

[ -n "$out" ] || out=$BENCH_DIR/results/power-loss-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$out"
out=$(cd "$out" && pwd)
if [ "$resume" = 0 ]; then
  printf 'rounds=%q seed=%q max_delay=%q features=%q aim=%q self_test=%q lanes=%q\n' \
    "$rounds" "$seed" "$max_delay" "$features" "$aim" "$self_test" "$lanes" > "$out/campaign.args"
fi

if [ "$lanes" -gt 1 ] && [ -z "$lane" ]; then
  # Several lanes: this script once per lane (--lane K, its own guest, disk and directory), then their summaries added up.
  [ "$resume" = 1 ] || rm -rf "$out"/lane-*
  log "power-loss: $rounds round(s) in $lanes lanes, seed $seed, output in $out ($(bl_git_rev))"
  declare -A lane_pid=()
  for ((k = 1; k <= lanes; k++)); do
    "$0" --rounds "$rounds" --seed "$seed" --max-delay "$max_delay" --features "$features" ${aim:+--aim "$aim"} \
      $([ "$keep_going" = 1 ] && echo --keep-going) $([ "$resume" = 1 ] && echo --resume) --lanes "$lanes" --lane "$k" \
      --out "$out/lane-$k" --json > "$out/lane-$k.json" 2> >(tee "$out/lane-$k.log" >&2) < /dev/null &
    lane_pid[$k]=$!
  done
  stop_lanes() { local k; for k in "${!lane_pid[@]}"; do kill -TERM "${lane_pid[$k]}" 2>/dev/null || true; done; }
  trap 'stop_lanes; exit 143' TERM
  trap 'stop_lanes; exit 130' INT
  declare -A lane_rc=()
  while [ "${#lane_rc[@]}" -lt "$lanes" ]; do
    running=(); for k in "${!lane_pid[@]}"; do [ -n "${lane_rc[$k]:-}" ] || running+=("${lane_pid[$k]}"); done
    done_pid=""       # `wait -p` unsets it when no job is left to wait for
    wait -n -p done_pid "${running[@]}" && rc=0 || rc=$?
    if [ -n "${done_pid:-}" ]; then
      for k in "${!lane_pid[@]}"; do [ "${lane_pid[$k]}" = "$done_pid" ] && { lane_rc[$k]=$rc; done_lane=$k; }; done
    else
      # Lanes that ended together (e.g. all killed at once): bash may already have reported them, and `wait -n`
      # then no longer sees them ("no such job"); `wait PID` still gives each one's saved exit status.
      for k in "${!lane_pid[@]}"; do
        if [ -z "${lane_rc[$k]:-}" ] && ! kill -0 "${lane_pid[$k]}" 2>/dev/null; then
          wait "${lane_pid[$k]}" 2>/dev/null && lane_rc[$k]=0 || lane_rc[$k]=$?
          rc=${lane_rc[$k]}; done_lane=$k
        fi
      done
    fi
    # A violation (3) ends the campaign unless --keep-going; an error (1) or a missing prerequisite (77) always does.
    if [ "$rc" != 0 ] && { [ "$rc" != 3 ] || [ "$keep_going" = 0 ]; } && [ "${#lane_rc[@]}" -lt "$lanes" ]; then
      log "power-loss: lane $done_lane ended with exit $rc: stopping the other lanes"
      stop_lanes
    fi
  done
  worst=0
  for k in "${!lane_rc[@]}"; do
    case ${lane_rc[$k]} in 0) ;; 3) [ "$worst" = 0 ] && worst=3 ;; *) worst=1 ;; esac
  done
  python3 - "$out" "$lanes" "$json" "$seed" "$features" <<'PY' || worst=1
import json, sys, os
out, lanes, as_json, seed, features = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", int(sys.argv[4]), sys.argv[5]
keys = ["rounds", "kills", "opsAcknowledged", "bytesChecked", "notDurableBlocksKept", "notDurableBlocksLost",
        "tornBlocks", "violations", "clonesChecked", "snapshotsTerminated", "writesRefused"]
total = dict.fromkeys(keys, 0)
per_round, missing = [], []
for k in range(1, lanes + 1):
    try:
        d = json.load(open(os.path.join(out, "lane-%d.json" % k)))
    except (OSError, ValueError):
        missing.append(k)
        continue
    for key in keys:
        total[key] += d.get(key, 0)
    per_round += d.get("perRound", [])
per_round.sort(key=lambda r: r["round"])
kinds, feats = {}, {}
for r in per_round:
    kinds[r["inFlight"]] = kinds.get(r["inFlight"], 0) + 1
    for f in r["features"].split(","):
        if f != "none":
            feats[f] = feats.get(f, 0) + 1
print("\n| rounds | kills | ops acknowledged | bytes checked | not-durable blocks kept / lost / torn | violations |", file=sys.stderr)
print("|---|---|---|---|---|---|", file=sys.stderr)
print("| %d | %d | %d | %d | %d / %d / %d | %d |" % tuple(total[k] for k in keys[:8]), file=sys.stderr)
print("lanes: %d%s" % (lanes, "; no summary from lane(s) %s (see lane-K.log)" % missing if missing else ""), file=sys.stderr)
print("in flight at the cut: " + " ".join("%s=%d" % kv for kv in sorted(kinds.items())), file=sys.stderr)
legs = {}
for r in per_round:
    if r.get("leg", "-") != "-":
        legs[r["leg"]] = legs.get(r["leg"], 0) + 1
print("mirrored rounds per second leg: file=%d nbd=%d" % (legs.get("file", 0), legs.get("nbd", 0)), file=sys.stderr)
print("rounds with each feature: " + " ".join("%s=%d" % (f, feats.get(f, 0)) for f in ["clone", "mirror", "concurrent", "full"])
      + "; clones checked: %d; snapshots terminated by a full save volume: %d; writes refused: %d"
      % (total["clonesChecked"], total["snapshotsTerminated"], total["writesRefused"]), file=sys.stderr)
if as_json:
    total.update(seed=seed, features=features, lanes=lanes, perRound=per_round)
    print(json.dumps(total))
sys.exit(1 if missing else 0)
PY
  log "command: benchmarks/power-loss.sh --rounds $rounds --seed $seed --max-delay $max_delay --features $features --lanes $lanes${aim:+ --aim $aim}; output in $out"
  exit "$worst"
fi
# This run's rounds: all of them, or lane K's share (K, K+L, ...); local round b is campaign round global_round[b].
lane=${lane:-1}
declare -a global_round=()
for ((g = lane, b = 1; g <= rounds; g += lanes, b++)); do global_round[$b]=$g; done
my_rounds=${#global_round[@]}
if [ "$resume" = 0 ]; then
  # A previous run's logs in the same directory would be taken for this run's (the cut waits for ops.log).
  rm -rf "$out"/round-* "$out"/boot-*
  bl_private_jars "$out"
else
  # The campaign's own jars (copied at its start), not what the tree holds now.
  for j in snapbd.jar snapbd-bench.jar; do [ -f "$out/$j" ] || die "--resume: $out/$j is missing"; done
  export SNAPBD_JAR=$out/snapbd.jar SNAPBD_BENCH_JAR=$out/snapbd-bench.jar
fi
bl_traps
# linux.uml puts itself in a session of its own, out of reach of bl_stop's process-group kill.
pl_cleanup() {
  local rc=$?
  # shellcheck disable=SC2046
  [ -z "${BL_PIDS[uml]:-}" ] || kill -KILL $(uml_pids "${BL_PIDS[uml]}") 2>/dev/null || true
  (exit "$rc")
  bl_cleanup
}
trap pl_cleanup EXIT

# The data disk: a sparse host file with ext4 on it, made once; every boot mounts it.
disk=$out/disk.img
if [ "$resume" = 0 ]; then
  rm -f "$disk"
  truncate -s 512M "$disk"
  mkfs.ext4 -q -F "$disk"
fi
uml_pids() {   # $1 and all its descendants (the runner, timeout, linux.uml, which calls setsid, and its helpers)
  ps -e -o pid=,ppid= | awk -v root="$1" '{ parent[$1] = $2 }
    END { for (p in parent) { q = p; while (q != "" && q != 0 && q != root) q = parent[q]; if (q == root) print p } }'
}
# boot N PREV CUR SEED: runs the guest; with CUR, cuts the power once the workload has run for a while.
# Sets cut_delay, cut_target (the kind of operation the cut waited for, or "time") and cut_lines (log
# lines seen just before the cut).
boot() {
  local n=$1 prev=$2 cur=$3 rseed=$4 bdir=$out/boot-$1
  rm -rf "$bdir"      # a resumed campaign boots again where the interrupted one had begun
  mkdir -p "$bdir"
  RANDOM=$rseed       # the round's cut delay and aim: the same in one lane or several, resumed or not
  UML_UBD0=$disk UML_MEM=1200M UML_TIMEOUT=900 setsid bash "$BL_UML_RUN" "$bdir" "$BENCH_DIR/power-loss-guest.sh" \
    "$ROOT" "$SNAPBD_JAR" "$SNAPBD_BENCH_JAR" "$prev" "$cur" "$rseed" "$features" $self_test > "$bdir/uml-run.log" 2>&1 < /dev/null &
  local pid=$! rc
  BL_PIDS[uml]=$pid
  if [ "$cur" = - ]; then
    wait "$pid" && rc=0 || rc=$?
    unset "BL_PIDS[uml]"
    [ "$rc" = 0 ] || [ "$rc" = 3 ] || { tail -n 20 "$bdir/guest.log" >&2 || true; die "the last boot failed (exit $rc, see $bdir)"; }
    return 0
  fi
  # Wait for the workload's first acknowledged operation, then cut after the round's delay.
  local deadline=$((SECONDS + 600))
  until [ "$(grep -c '^ACK ' "$cur/ops.log" 2>/dev/null)" -ge 1 ] 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 20 "$bdir/guest.log" >&2 || true
      die "boot $n ended before the workload started (see $bdir)"
    fi
    [ "$SECONDS" -lt "$deadline" ] || die "boot $n: the workload did not start within 600 s (see $bdir)"
    sleep 0.2
  done
  cut_delay=$(( 500 + (RANDOM * 32768 + RANDOM) % (max_delay * 1000 - 499) ))
  local targets=(time SNAP_CREATE SNAP_DELETE RESTORE) jitter=$((RANDOM % 50)) pick=$RANDOM
  # A round with clones (its log's header names its features) also aims at a clone's copy.
  head -n 1 "$cur/ops.log" | grep -q 'features=[a-z,]*clone' && targets+=(CLONE)
  head -n 1 "$cur/ops.log" | grep -q ' thirdLeg=' && targets+=(MIRROR_ADD)     # a mirrored round with online leg changes
  cut_target=${aim:-${targets[$((pick % ${#targets[@]}))]}}
  sleep "$(printf '%d.%03d' $((cut_delay / 1000)) $((cut_delay % 1000)))"
  if [ "$cut_target" != time ]; then
    # ops.log.sending names the operation being sent (written through hostfs before each one).
    local until=$((SECONDS + 30))
    until grep -q "^$cut_target " "$cur/ops.log.sending" 2>/dev/null || [ "$SECONDS" -ge "$until" ]; do sleep 0.01; done
    # A clone's create and copy take longer than the other operations: aim anywhere in its first 2 s.
    # So does a mirror add's copy (ops.log.sending names it until the add is answered).
    [[ $cut_target =~ ^(CLONE|MIRROR_ADD)$ ]] && jitter=$(( (jitter * 40 + RANDOM) % 2000 ))
    sleep "$((jitter / 1000)).$(printf '%03d' $((jitter % 1000)))"
  fi
  cut_lines=$(grep -c '^ACK ' "$cur/ops.log" || true)
  grep -q '^ERROR ' "$cur/ops.log" && { cat "$cur/ops.log" | tail -n 3 >&2; die "boot $n: the workload failed before the cut (see $bdir/guest.log)"; }
  # The power cut: SIGKILL to the runner and every process under it (linux.uml and its helpers) at once.
  local victims left p
  victims=$(uml_pids "$pid")
  # shellcheck disable=SC2086
  kill -KILL $victims 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  unset "BL_PIDS[uml]"
  for _ in $(seq 1 100); do
    left=""; for p in $victims; do [ -d "/proc/$p" ] && [ "$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null)" != Z ] && left+=" $p"; done
    [ -z "$left" ] && break; sleep 0.1
  done
  [ -z "$left" ] || die "boot $n: processes$left survived SIGKILL"
  # The log went through hostfs and was forced record by record: it must hold every record seen before the cut.
  local after; after=$(grep -c '^ACK ' "$cur/ops.log" || true)
  [ "$after" -ge "$cut_lines" ] || die "boot $n: the operation log lost records in the cut ($cut_lines before, $after after)"
}

total_kills=0 total_bytes=0 total_violations=0 total_ops=0 total_torn=0 rounds_done=0 total_lost=0 total_kept=0
total_clones=0 total_invalidated=0 total_refused=0
declare -A points=() featured=() leg_kinds=()
results_json="["
check_round() {   # R: reads round R's verdict (written by the next boot) and prints its progress line
  local r=$1 rdir=$out/round-$1 v fsck_crash fsck_open="-" vio extra="" g=${global_round[$1]}
  [ -f "$rdir/check.json" ] || die "round $r: no verdict ($rdir/check.json missing; see $out/boot-$((r + 1)))"
  v=$(python3 - "$rdir/check.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print(d.get("opsAcknowledged", 0), d.get("bytesChecked", 0), len(d.get("violations", [])), d.get("tornBlocks", 0),
      d.get("inFlightKind", "?"), d.get("snapshotsChecked", 0), d.get("notDurableBlocksKept", 0), d.get("notDurableBlocksLost", 0),
      d.get("features", "none"), d.get("clonesChecked", 0), d.get("snapshotsInvalidated", 0), d.get("opsRefusedNoSpace", 0),
      d.get("mirrorBlocksDiffering", "-"), d.get("legKind", "-"))
PY
)
  read -r ops bytes vio torn kind snaps kept lost feats clones invalidated refused differ legkind <<< "$v"
  local fsck_rec=-
  [ -f "$rdir/fsck-recovered.rc" ] && fsck_rec=$(cat "$rdir/fsck-recovered.rc")
  if [ "$fsck_rec" != - ] && [ "$fsck_rec" != 0 ]; then vio=$((vio + 1)); extra+=" fsck of the reconciled mirror: exit $fsck_rec ($rdir/fsck-recovered.txt)"; fi
  fsck_crash=$(cat "$rdir/fsck-crash.rc" 2>/dev/null || echo missing)
  [ -f "$rdir/fsck-open.rc" ] && fsck_open=$(cat "$rdir/fsck-open.rc")
  if [ "$fsck_crash" != 0 ]; then vio=$((vio + 1)); extra+=" fsck after the cut: exit $fsck_crash ($rdir/fsck-crash.txt)"; fi
  if [ "$fsck_open" != - ] && [ "$fsck_open" != 0 ]; then vio=$((vio + 1)); extra+=" fsck after recovery: exit $fsck_open"; fi
  total_bytes=$((total_bytes + bytes)) total_violations=$((total_violations + vio)) total_ops=$((total_ops + ops))
  total_torn=$((total_torn + torn)) rounds_done=$((rounds_done + 1)) total_lost=$((total_lost + lost)) total_kept=$((total_kept + kept))
  points[$kind]=$(( ${points[$kind]:-0} + 1 ))
  total_clones=$((total_clones + clones)) total_invalidated=$((total_invalidated + invalidated)) total_refused=$((total_refused + refused))
  local f; for f in ${feats//,/ }; do [ "$f" = none ] || featured[$f]=$(( ${featured[$f]:-0} + 1 )); done
  local legshow=""; [ "$legkind" = - ] || { leg_kinds[$legkind]=$(( ${leg_kinds[$legkind]:-0} + 1 )); legshow=" ($legkind leg)"; }
  printf 'round %d/%d seed %d (features %s, write-back %s, cut %s): at %d.%03d s, %d ops acknowledged, in flight %s; checked %d MiB (%d snapshot(s), %d clone(s), mirror legs differing %s); %d snapshot(s) terminated by a full save volume, %d write(s) refused; blocks not yet durable: %d kept, %d lost, %d torn; %d violation(s)%s\n' \
    "$g" "$rounds" "$((seed * 1000 + g))" "$feats$legshow" "$(cat "$rdir/writeback.txt" 2>/dev/null || echo '?')" "${round_target[$r]}" \
    "$((${round_delay[$r]} / 1000))" "$((${round_delay[$r]} % 1000))" "$ops" "$kind" \
    "$((bytes >> 20))" "$snaps" "$clones" "$differ" "$invalidated" "$refused" "$kept" "$lost" "$torn" "$vio" "$extra" >&2
  if [ "$vio" -gt 0 ]; then
    python3 -c 'import json,sys; [print("  VIOLATION", v) for v in json.load(open(sys.argv[1])).get("violations", [])]' "$rdir/check.json" >&2
  fi
  [ "$rounds_done" = 1 ] || results_json+=","
  results_json+="{\"round\":$g,\"seed\":$((seed * 1000 + g)),\"cutMillis\":${round_delay[$r]},\"cutTarget\":\"${round_target[$r]}\",\"ops\":$ops,\"inFlight\":\"$kind\",\"bytesChecked\":$bytes,\"notDurableKept\":$kept,\"notDurableLost\":$lost,\"torn\":$torn,\"violations\":$vio,\"fsckAfterCut\":\"$fsck_crash\",\"fsckAfterRecovery\":\"$fsck_open\",\"fsckReconciledMirror\":\"$fsck_rec\",\"features\":\"$feats\",\"clonesChecked\":$clones,\"snapshotsTerminated\":$invalidated,\"writesRefused\":$refused,\"leg\":\"$legkind\"}"
}

if [ "$lanes" = 1 ]; then
  log "power-loss: $rounds round(s), seed $seed, output in $out ($(bl_git_rev))"
else
  log "power-loss: lane $lane of $lanes: $my_rounds of $rounds round(s), seed $seed, output in $out ($(bl_git_rev))"
fi
declare -A round_delay=() round_target=()
first=1 first_prev=-
if [ "$resume" = 1 ]; then
  # Rounds already checked count again (their lines are printed again); the round after them was cut by the
  # interruption if its workload had acknowledged anything (then it is checked next), else it runs again.
  # A verdict is written whole and renamed (bench power-loss --result); one that does not parse is not one.
  verdict_ok() { python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$1" 2>/dev/null; }
  while [ "$first" -le "$my_rounds" ] && verdict_ok "$out/round-$first/check.json"; do
    read -r d t < "$out/round-$first/cut.txt" 2>/dev/null || { d=0; t=interrupted; }
    round_delay[$first]=$d round_target[$first]=$t total_kills=$((total_kills + 1))
    check_round "$first"
    [ "$total_violations" -gt 0 ] && [ "$keep_going" = 0 ] && die "--resume: round $first had violations; the campaign stopped there"
    first=$((first + 1))
  done
  if [ "$first" -gt "$my_rounds" ]; then
    # Every round checked already (a lane that had finished): only the summary.
    log "power-loss: every round of $out was checked already"
    first=$((my_rounds + 2))
  elif grep -q '^ACK ' "$out/round-$first/ops.log" 2>/dev/null; then
    if [ -f "$out/round-$first/cut.txt" ]; then read -r d t < "$out/round-$first/cut.txt"; else d=0 t=interrupted; fi
    round_delay[$first]=$d round_target[$first]=$t total_kills=$((total_kills + 1))
    rm -f "$out/round-$first/check.json" "$out/round-$first"/fsck-*
    first_prev=$out/round-$first first=$((first + 1))
  else
    rm -rf "$out/round-$first"
  fi
  if [ "$first" -le "$((my_rounds + 1))" ]; then
    [ -f "$disk" ] || die "--resume: $disk is missing"
    log "power-loss: resuming at boot $first (rounds before it: $((first - 1)))"
  fi
fi
for ((b = first; b <= my_rounds + 1; b++)); do
  prev=- cur=-
  if [ "$b" = "$first" ]; then prev=$first_prev; elif [ "$b" -gt 1 ]; then prev=$out/round-$((b - 1)); fi
  if [ "$b" -le "$my_rounds" ]; then cur=$out/round-$b; mkdir -p "$cur"; fi
  boot "$b" "$prev" "$cur" "$((seed * 1000 + ${global_round[$b]:-0}))"
  if [ "$cur" != - ]; then
    round_delay[$b]=$cut_delay round_target[$b]=$cut_target total_kills=$((total_kills + 1))
    echo "$cut_delay $cut_target" > "$cur/cut.txt"
  fi
  if [ "$prev" != - ]; then
    check_round $((b - 1))
    if [ "$total_violations" -gt 0 ] && [ "$keep_going" = 0 ] && [ "$b" -le "$my_rounds" ]; then
      log "power-loss: stopping at the first violation (--keep-going runs on); the guest of round $b was cut too"
      break
    fi
  fi
done

kp=""; for k in "${!points[@]}"; do kp+="$k=${points[$k]} "; done
printf '\n| rounds | kills | ops acknowledged | bytes checked | not-durable blocks kept / lost / torn | violations |\n|---|---|---|---|---|---|\n| %d | %d | %d | %d | %d / %d / %d | %d |\n' \
  "$rounds_done" "$total_kills" "$total_ops" "$total_bytes" "$total_kept" "$total_lost" "$total_torn" "$total_violations" >&2
log "in flight at the cut: ${kp% }"
fp=""; for k in clone mirror concurrent full; do fp+="$k=${featured[$k]:-0} "; done
log "rounds with each feature: ${fp% }; clones checked: $total_clones; snapshots terminated by a full save volume: $total_invalidated; writes refused: $total_refused"
log "mirrored rounds per second leg: file=${leg_kinds[file]:-0} nbd=${leg_kinds[nbd]:-0}"
log "command: benchmarks/power-loss.sh --rounds $rounds --seed $seed --max-delay $max_delay --features $features${aim:+ --aim $aim}${self_test:+ --self-test}; output in $out"
if [ "$json" = 1 ]; then
  printf '{"rounds":%d,"kills":%d,"opsAcknowledged":%d,"bytesChecked":%d,"notDurableBlocksKept":%d,"notDurableBlocksLost":%d,"tornBlocks":%d,"violations":%d,"seed":%d,"features":"%s","clonesChecked":%d,"snapshotsTerminated":%d,"writesRefused":%d,"perRound":%s]}\n' \
    "$rounds_done" "$total_kills" "$total_ops" "$total_bytes" "$total_kept" "$total_lost" "$total_torn" "$total_violations" "$seed" "$features" "$total_clones" "$total_invalidated" "$total_refused" "$results_json"
fi
rm -f "$disk"
if [ -n "$self_test" ]; then
  [ "$total_violations" -gt 0 ] || { log "self-test: the check found no violation although FLUSH and FUA were never sent"; exit 3; }
  log "self-test: the check found $total_violations violation(s) where FLUSH and FUA were never sent (expected)"
  exit 0
fi
[ "$total_violations" = 0 ] || exit 3
