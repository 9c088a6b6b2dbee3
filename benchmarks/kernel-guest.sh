# benchmarks/kernel-guest.sh — sourced by the guest scripts of kernel-compare.sh and kernel-latency.sh, which run
# inside User-Mode Linux (tools/uml/uml-run.sh): serves equal backings of SIZE in guest memory and connects them
#   snapbd-attach     snapbd volume vol0, attached with `snapbd attach` (socket pair, ioctls)   /dev/nbd0
#   snapbd-nbdclient  the same volume, connected with nbd-client over snapbd's Unix socket      /dev/nbd1
#   nbdkit-file       nbdkit's file plugin on tmpfs, connected with nbd-client                  /dev/nbd2
# then writes each backing once in full. The caller sets root (the repository), size and targets (words
# NAME:/dev/nbdN, only those are served) and exports SNAPBD_JAR; kg_setup sets status=1 on a failure.
out="$KT_OUT"
export SNAPBD_DATA_DIR=/run/snapbd-data
status=0
log() { echo "[$(date +%H:%M:%S)] $*"; }
fill() { fio --name=fill --filename="$1" --rw=write --bs=1M --ioengine=libaio --iodepth=4 --direct=1 --size="$size" >/dev/null 2>&1 \
           || log "fill $1 failed"; }
cli() { SNAPBD_JAVA_OPTS="-XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Xmx128m" "$root/bin/snapbd" "$@"; }
want() { case " $targets " in *" $1:"*) return 0 ;; *) return 1 ;; esac; }

kg_setup() {
  if want snapbd-attach || want snapbd-nbdclient; then
    cat > /run/snapbd.conf <<CONF
default-volume = vol0
default-volume-size = $size
default-save-size = 16M
tcp = none
CONF
    log "starting snapbd"
    SNAPBD_JAVA_OPTS="-Xmx512m" setsid "$root/bin/snapbd" serve --config /run/snapbd.conf > "$out/server.log" 2>&1 &
    server=$!
    for _ in $(seq 1 600); do grep -q 'snapbd ready' "$out/server.log" && break; sleep 0.5; done
    grep -q 'snapbd ready' "$out/server.log" || { log "snapbd did not start; see server.log"; status=1; }
  fi
  if want snapbd-attach; then cli attach vol0 /dev/nbd0 || { log "attach failed"; status=1; }; fi
  if want snapbd-nbdclient; then
    nbd-client -unix "$SNAPBD_DATA_DIR/nbd.sock" /dev/nbd1 -N vol0 -b 4096 >/dev/null || { log "nbd-client (snapbd) failed"; status=1; }
  fi
  if want nbdkit-file; then
    truncate -s 0 /run/nbdkit.img && fallocate -l "$size" /run/nbdkit.img
    nbdkit --unix /run/nbdkit.sock --pidfile /run/nbdkit.pid file /run/nbdkit.img
    for _ in $(seq 1 100); do [ -S /run/nbdkit.sock ] && break; sleep 0.1; done
    nbd-client -unix /run/nbdkit.sock /dev/nbd2 -b 4096 >/dev/null || { log "nbd-client (nbdkit) failed"; status=1; }
  fi
  log "filling the backings once"
  local s
  for s in $targets; do [ "${s%%:*}" = snapbd-nbdclient ] || fill "${s#*:}"; done   # nbd1 is the same volume as nbd0
}

kg_teardown() {
  sync
  if want snapbd-nbdclient; then nbd-client -d /dev/nbd1 >/dev/null; fi
  if want nbdkit-file; then nbd-client -d /dev/nbd2 >/dev/null; kill "$(cat /run/nbdkit.pid)"; fi
  if want snapbd-attach; then cli detach /dev/nbd0 || log "detach failed"; fi
  if [ -n "${server:-}" ]; then
    kill -TERM "$server"
    for _ in $(seq 1 240); do [ -d /proc/$server ] && ! grep -q "^State:.*Z" /proc/$server/status 2>/dev/null || break; sleep 0.5; done
  fi
  log "done"
}
