# kernel-lib.sh — the helpers kernel-steps.sh (KernelIT) and kernel-mirror-steps.sh (KernelMirrorIT) share,
# sourced by both after they set ROOT, SNAPBD, WORK, CONF and SERVER_LOG. Brings in tools/uml/guest-steps.sh
# (step, fail, must, bounded).
#   snapbd ARGS...     the CLI, with the JVM options of tools/uml/guest-java.sh, bounded
#   start_server       snapbd serve --config $CONF in the background (pid in $WORK/server.pid), until ready
#   tree_synced DIR MANIFEST   the scenario's make_tree DIR, its manifest in MANIFEST, sync, caches dropped, verified
#   server_pid, alive PID, attached DEV, drop_caches, check_manifest DIR MANIFEST, say TEXT
. "$ROOT/tools/uml/guest-steps.sh"
. "$ROOT/tools/uml/guest-java.sh"       # GUEST_CLI_JAVA_OPTS, GUEST_JAVA_OPTS
SERVER_JAVA_OPTS="$GUEST_JAVA_OPTS -Xmx384m"

say() { echo "$*"; }
# fsck and volume commands do their work in the CLI's JVM (C1); the others ask the server (interpreted).
snapbd() {
  local opts="$GUEST_CLI_JAVA_OPTS"
  case "$1" in fsck|volume) opts="$GUEST_JAVA_OPTS -Xmx256m" ;; esac
  SNAPBD_JAVA_OPTS="$opts" timeout 300 "$SNAPBD" "$@"
}
server_pid() { cat "$WORK/server.pid" 2>/dev/null; }
alive() {
  local P="$1"
  [ -n "$P" ] && [ -d "/proc/$P" ] || return 1
  # A killed JVM's main thread can be a zombie while its other threads still exit, holding its files (and so the
  # data directory's lock): it is gone only when the zombie is its last thread.
  grep -q '^State:.*Z' "/proc/$P/status" 2>/dev/null || return 0
  [ "$(awk '/^Threads:/ { print $2 }' "/proc/$P/status" 2>/dev/null)" -gt 1 ] 2>/dev/null
}
start_server() {
  local before; before=$(grep -c 'snapbd ready' "$SERVER_LOG" 2>/dev/null); before=${before:-0}
  echo "+ snapbd serve --config $CONF"
  # bin/snapbd execs java: $! is the server's pid
  SNAPBD_JAVA_OPTS="$SERVER_JAVA_OPTS" setsid "$SNAPBD" serve --config "$CONF" >> "$SERVER_LOG" 2>&1 < /dev/null &
  echo $! > "$WORK/server.pid"
  for _ in $(seq 1 600); do
    [ "$(grep -c 'snapbd ready' "$SERVER_LOG")" -gt "$before" ] && return 0
    alive "$(server_pid)" || { tail -5 "$SERVER_LOG"; fail "the server exited during start-up"; }
    sleep 0.5
  done
  fail "the server was not ready within 300 s"
}
attached() { [ -e "/sys/block/$(basename "$1")/pid" ]; }
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
check_manifest() { (cd "$1" && sha256sum -c --quiet "$2"); }
tree_synced() {
  make_tree "$1"
  manifest "$1" > "$2"
  must sync
  drop_caches
  check_manifest "$1" "$2" || fail "checksums differ after sync and drop_caches"
}
