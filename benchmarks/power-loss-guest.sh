# benchmarks/power-loss-guest.sh — one boot of benchmarks/power-loss.sh, run inside User-Mode Linux by
# tools/uml/uml-run.sh (so as root, with the host's file system as / through hostfs):
#   power-loss-guest.sh ROOT SNAPBD-JAR BENCH-JAR PREV-DIR|- CUR-DIR|- SEED FEATURES [self-test]
# Mounts the ext4 data disk /dev/ubda (the ext4 journal replays: this is the reboot after the power cut),
# and when PREV-DIR is given checks the round that ran there: `snapbd fsck` on the state the power cut left
# (PREV-DIR/fsck-crash.*), then snapbd serve (recovery), then `bench power-loss --check` (PREV-DIR/check.json).
# When CUR-DIR is given it then runs the logged workload (CUR-DIR/ops.log) until the host kills the guest;
# otherwise (the last boot) it stops snapbd cleanly and runs fsck again (PREV-DIR/fsck-open.*). After checking a
# round whose volume was mirrored it also stops snapbd, runs fsck on the reconciled legs (PREV-DIR/fsck-recovered.*)
# and starts snapbd again. FEATURES: what the workload adds (bench power-loss --features).
# A mirrored round whose seed picks an NBD leg (Workload.legKind: seed + seed/16 odd) has its second leg on an export
# of a second snapbd (the leg server: data directory /mnt/pl/legsrv on the same ext4, socket /run/leg.sock), so the
# power cut hits both servers. A boot that checks or runs such a round fscks the leg server's data directory
# (with the crash fsck), starts the leg server, and only then the volume's server (whose recovery reconciles over NBD).
root=$1 snapbd_jar=$2 bench_jar=$3 prev=$4 cur=$5 seed=$6 features=$7 self_test=${8:-}
export SNAPBD_JAR=$snapbd_jar
out=$KT_OUT
data=/mnt/pl/snapbd
legdata=/mnt/pl/legsrv
java_opts="-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
log() { echo "[$(date +%H:%M:%S.%N | cut -c1-12)] $*"; }

mkdir -p /mnt/pl
mount -t ext4 /dev/ubda /mnt/pl || { log "cannot mount /dev/ubda"; exit 1; }
mkdir -p "$data"
log "mounted /dev/ubda ($(dmesg | grep -c 'EXT4-fs.*recovery') ext4 recovery message(s))"

fsck() {   # NAME [DIR]: fsck of every volume of DIR (default: the volume's server's), appended to $prev/fsck-NAME.txt;
           # $prev/fsck-NAME.rc is the first non-zero exit code of the fscks since fsck_new NAME, else 0
  local dir=${2:-$data} rc
  echo "== fsck --data-dir $dir" >> "$prev/fsck-$1.txt"
  SNAPBD_JAVA_OPTS="$java_opts -Xmx256m" "$root/bin/snapbd" fsck --data-dir "$dir" >> "$prev/fsck-$1.txt" 2>&1
  rc=$?
  if [ ! -s "$prev/fsck-$1.rc" ] || [ "$(cat "$prev/fsck-$1.rc")" = 0 ]; then echo $rc > "$prev/fsck-$1.rc"; fi
  log "fsck ($1, $dir): exit $rc"
}
fsck_new() { rm -f "$prev/fsck-$1.rc"; : > "$prev/fsck-$1.txt"; }

# Does the previous round (its log's header) or this one (the seed's rule, as Workload.legKind) have an NBD leg?
prev_nbd_leg=0 cur_nbd_leg=0
[ "$prev" != - ] && head -n 1 "$prev/ops.log" | grep -q ' leg=nbd' && prev_nbd_leg=1
if [ "$cur" != - ]; then
  case ",$features," in
    *,mirror,*) mirrored=1 ;;
    ,mix,) mirrored=$(( (((seed % 16) * 7 + 3) % 16) >> 1 & 1 )) ;;     # Workload.mixed: bit 1 is mirror
    *) mirrored=0 ;;
  esac
  [ "$mirrored" = 1 ] && [ $(( (seed + seed / 16) % 2 )) = 1 ] && cur_nbd_leg=1
fi
# serve_bg LOG CONF DATA SOCKET HEAP-OPTS: bin/snapbd serve in the background, its output appended to LOG (a
# restart appends to the same log); waits until it logs "snapbd ready", exits the boot if it does not. Sets served_pid.
served_pid=""
serve_bg() {
  local logf=$1 conf=$2 dir=$3 sock=$4 heap=$5 before
  rm -f "$sock"
  before=$(cat "$logf" 2>/dev/null | wc -l)
  SNAPBD_JAVA_OPTS="$java_opts $heap" setsid "$root/bin/snapbd" serve \
    --config "$conf" --data-dir "$dir" --tcp none --unix "$sock" >> "$logf" 2>&1 &
  served_pid=$!
  for _ in $(seq 1 1200); do
    tail -n "+$((before + 1))" "$logf" | grep -q 'snapbd ready' && break
    kill -0 "$served_pid" 2>/dev/null || break
    sleep 0.25
  done
  tail -n "+$((before + 1))" "$logf" | grep -q 'snapbd ready' || { log "snapbd did not start; see $logf"; tail -5 "$logf"; exit 1; }
}

legserver=""
start_leg_server() {
  log "starting the leg server"
  mkdir -p "$legdata"
  printf 'default-volume = none\nwarm-up = off\n' > /run/leg.conf
  serve_bg "$out/leg-server.log" /run/leg.conf "$legdata" /run/leg.sock "-Xms32m -Xmx192m -XX:MaxDirectMemorySize=128m"
  legserver=$served_pid
  log "leg server ready"
}

if [ "$prev" != - ]; then
  fsck_new crash
  # The leg server's data directory as the cut left it, before its server recovers it.
  [ "$prev_nbd_leg" = 1 ] && fsck crash "$legdata"
fi
# The leg server first: the volume's fsck reads its NBD leg through it, and its recovery reconciles over NBD.
if [ "$prev_nbd_leg" = 1 ] || [ "$cur_nbd_leg" = 1 ]; then
  start_leg_server
fi
if [ "$prev" != - ]; then
  fsck crash
fi

start_snapbd() {
  log "starting snapbd"
  # On an empty data directory serve creates the default volume: make it the campaign's small one.
  # No copy-on-write warm-up: ~6 s of a scratch volume's writes per start in the guest, which the campaign does not
  # test (the server runs with C1 only anyway).
  printf 'default-volume = pl\ndefault-volume-size = 16M\ndefault-save-size = 64M\nwarm-up = off\n' > /run/pl.conf
  serve_bg "$out/server.log" /run/pl.conf "$data" /run/nbd.sock "-Xms64m -Xmx384m -XX:MaxDirectMemorySize=256m"
  server=$served_pid
  log "snapbd ready"
}
start_snapbd

if [ "$cur" != - ]; then
  # Vary the guest's write-back by round: the kernel's default (dirty pages written after 30 s, so a cut
  # mostly loses everything not forced), or write-back every 0.5 s or 0.1 s of pages dirty for 1 s or 0.1 s
  # (so pages reach the disk in the kernel's own order in between snapbd's forces, as on a busy machine).
  case $((seed % 3)) in
    0) wb="default" ;;
    1) echo 100 > /proc/sys/vm/dirty_expire_centisecs; echo 50 > /proc/sys/vm/dirty_writeback_centisecs; wb="expire 1 s, every 0.5 s" ;;
    2) echo 10 > /proc/sys/vm/dirty_expire_centisecs; echo 10 > /proc/sys/vm/dirty_writeback_centisecs; wb="expire 0.1 s, every 0.1 s" ;;
  esac
  echo "$wb" > "$cur/writeback.txt"
  log "write-back: $wb"
fi

bench() {
  java $java_opts -Xmx256m -jar "$bench_jar" power-loss --socket /run/nbd.sock --admin "$data/admin.sock" --seed "$seed" "$@"
  rc=$?
  log "bench power-loss $1: exit $rc"
}
check=() work=()
[ "$prev" != - ] && check=(--check "$prev/ops.log" --result "$prev/check.json")
[ "$cur" != - ] && work=(--log "$cur/ops.log" --features "$features")
[ "$cur" != - ] && [ -n "$legserver" ] && work+=(--leg-socket /run/leg.sock --leg-admin "$legdata/admin.sock")
[ "$cur" != - ] && [ "$self_test" = self-test ] && work+=(--self-test)
if [ "$prev" != - ] && [ "$cur" != - ] && head -n 1 "$prev/ops.log" | grep -q ' mirror='; then
  # A mirrored round: after the check, fsck of the legs and their tag tables as the recovery's reconciliation
  # left them (snapbd stopped), then snapbd again for the next round.
  bench "${check[@]}"
  kill -TERM "$server"
  wait "$server"
  log "snapbd stopped"
  fsck_new recovered
  fsck recovered
  start_snapbd
  bench "${work[@]}"
else
  bench "${check[@]}" "${work[@]}"      # one JVM for both (a JVM start is slow in the guest)
fi
if [ "$cur" != - ]; then
  exit "$rc"      # the workload only returns on an error; the host cuts the power otherwise
fi

kill -TERM "$server"
wait "$server"
log "snapbd stopped"
[ "$prev" != - ] && { fsck_new open; fsck open; }      # with the leg server still up: fsck reads an NBD leg through it
if [ -n "$legserver" ]; then
  kill -TERM "$legserver"
  wait "$legserver"
  log "leg server stopped"
  [ "$prev" != - ] && fsck open "$legdata"
fi
umount /mnt/pl
exit "$rc"
