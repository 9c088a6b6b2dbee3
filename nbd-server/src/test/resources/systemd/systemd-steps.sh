#!/bin/bash
# The SystemdUmlIT scenario, run by systemd (PID 1 inside User-Mode Linux, see uml-systemd.sh) as
# snapbd-uml-test.service:
#
#   systemd-steps.sh PROJECT-ROOT SNAPBD-JAR DEB|none
#
# Installs snapbd from the .deb (or, without one, from the build tree), then drives the real units:
# snapbd.service (Type=notify, reload, watchdog, journal), snapbd-attach@nbd0.service, an ext4 file
# system on /dev/nbd0 mounted from /etc/fstab, the stop of everything (volumes marked clean), socket
# activation, and the package's upgrade, removal and purge.
#
# Every step writes one line to $OUT/results.txt:  STEP <name> PASS|FAIL|SKIP <detail>
# and its whole output to $OUT/step-<name>.log. A failed step does not stop the others (later ones may
# fail for the same reason; the first failure is the one to read). Every wait is bounded.
set -u
ROOT="${1:?project root}"
JAR="${2:?snapbd jar}"
DEB="${3:?deb or none}"
OUT="${OUT:?}"
RESULTS="$OUT/results.txt"
export DEBIAN_FRONTEND=noninteractive
export SNAPBD_DATA_DIR=/var/lib/snapbd
# The JVM starts slowly under UML (tools/uml/guest-java.sh): the server and the CLI calls that do work themselves
# (fsck, volume list) C1 only, with a small serial heap; the CLI calls the server answers interpreted.
. "$ROOT/tools/uml/guest-java.sh"
JAVA_OPTS="$GUEST_JAVA_OPTS -Xmx256m"
export SNAPBD_JAVA_OPTS="$GUEST_CLI_JAVA_OPTS"
MNT=/srv/snapbd
METRICS=127.0.0.1:10810
: > "$RESULTS"

# ---- helpers -------------------------------------------------------------------------------------------

. "$ROOT/tools/uml/guest-steps.sh"      # step, fail, skip, must, bounded
# expect VALUE CMD...: CMD's output (trimmed) must be VALUE.
expect() {
  local want="$1"; shift
  local got
  if [ "$(type -t "$1")" = function ]; then
    got="$("$@" 2>&1 | tr -d '\r')"
  else
    got="$(timeout 120 "$@" 2>&1 | tr -d '\r')"
  fi
  echo "+ $* -> $got"
  [ "$got" = "$want" ] || fail "'$*' gave '$got', expected '$want'"
}
# wait_for SECONDS DESCRIPTION CMD...: polls CMD every half second until it succeeds.
wait_for() {
  local secs="$1" what="$2"; shift 2
  local i
  for ((i = 0; i < secs * 2; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  fail "$what: not within $secs s"
}
prop() { systemctl show -p "$2" --value "$1"; }
snapbd() { timeout 300 /usr/bin/snapbd "$@"; }
metrics() { timeout 30 curl -sf "http://$METRICS/metrics"; }
# metric NAME{labels}: the sample's value, empty when absent.
metric() { metrics | awk -v m="$1" 'index($0, m " ") == 1 { print $2 }'; }
show_unit() {
  echo "---- systemctl status $*"
  systemctl status --no-pager -l "$@" 2>&1 | tail -40
  echo "---- journal"
  journalctl --no-pager -b -o short-monotonic -n 80 _SYSTEMD_UNIT="$1" UNIT="$1" 2>&1 | tail -80
}
step_failed() { { show_unit snapbd.service; show_unit snapbd-attach@nbd0.service; } >> "$1" 2>&1; }
deb_version() { dpkg-query -W -f='${Version}' snapbd 2>/dev/null; }
deb_status() { dpkg-query -W -f='${Status}' snapbd 2>/dev/null; }
# volumes_clean: offline, every volume's header says it was closed cleanly (the jar of the build tree, so
# it works after the package is gone too).
volumes_clean() {
  local json
  json="$(timeout 300 java $JAVA_OPTS -jar "$JAR" volume list --json --data-dir /var/lib/snapbd)" || fail "volume list failed: $json"
  echo "$json"
  echo "$json" | grep -q '"name"' || fail "no volumes in /var/lib/snapbd"
  ! echo "$json" | grep -q '"open" : true' || fail "a volume is still open"
  ! echo "$json" | grep -q '"cleanlyClosed" : false' || fail "a volume was not closed cleanly"
  echo "$json" | grep -c '"cleanlyClosed" : true'
}

# ---- steps ---------------------------------------------------------------------------------------------

boot() {
  expect systemd cat /proc/1/comm
  systemctl --version | head -1
  local v; v="$(systemctl --version | awk 'NR == 1 { print $2 }')"
  [ "$v" -ge 252 ] 2>/dev/null || fail "systemd $v: the test expects 252 or later"
  [ -e /sys/block/nbd0 ] || fail "nbd.ko is not loaded (no /sys/block/nbd0)"
  # udev makes dev-nbd0.device (what a mount of /dev/nbd0 binds to) active once the device is connected.
  wait_for 60 "systemd-udevd" systemctl is-active --quiet systemd-udevd.service
  echo "systemd $v is PID 1; udevd active; $(ls -d /sys/block/nbd* | wc -l) nbd devices"
}

install_pkg() {
  if [ "$DEB" != none ]; then
    must dpkg -i "$DEB"
    expect "install ok installed" deb_status
    dpkg-query -W -f='${Conffiles}\n' snapbd | grep -q '/etc/snapbd/snapbd.conf' || fail "/etc/snapbd/snapbd.conf is not a conffile"
    for f in /usr/bin/snapbd /usr/share/snapbd/snapbd.jar /lib/systemd/system/snapbd.service \
             /lib/systemd/system/snapbd-attach@.service /lib/systemd/system/snapbd.socket /etc/snapbd/snapbd.conf; do
      [ -f "$f" ] || fail "$f is missing after dpkg -i"
    done
    [ -d /var/lib/snapbd ] || fail "/var/lib/snapbd is missing after dpkg -i"
    expect enabled systemctl is-enabled snapbd.service
    expect inactive systemctl is-active snapbd.service      # enabled for the next boot, not started
    echo "installed snapbd $(deb_version) from $(basename "$DEB")"
  else
    # No .deb (mvn verify without -Pdeb): install what the package would, by hand.
    install -D -m 644 "$JAR" /usr/share/snapbd/snapbd.jar
    install -D -m 755 "$ROOT/bin/snapbd" /usr/bin/snapbd
    install -D -m 644 -t /lib/systemd/system "$ROOT/systemd/snapbd.service" "$ROOT/systemd/snapbd-attach@.service" "$ROOT/systemd/snapbd.socket"
    install -D -m 644 "$ROOT/systemd/snapbd.conf" /etc/snapbd/snapbd.conf
    install -d -m 750 /var/lib/snapbd
    must systemctl daemon-reload
    echo "installed from the build tree (no .deb given)"
  fi
}

configure() {
  # A small volume (guest memory), a faster watchdog to observe, a small JVM for the CLI in attach@.
  sed -i -e 's/^volume.vol0 = .*/volume.vol0 = 256M save=64M/' -e 's/^default-volume-size = .*/default-volume-size = 256M/' \
         -e 's/^default-save-size = .*/default-save-size = 64M/' /etc/snapbd/snapbd.conf
  grep -q '^volume.vol0 = 256M save=64M' /etc/snapbd/snapbd.conf || fail "cannot edit /etc/snapbd/snapbd.conf"
  # The copy-on-write warm-up takes 10-15 s of every start under UML and nothing here depends on it.
  sed -i 's/^warm-up = .*/warm-up = off/' /etc/snapbd/snapbd.conf
  grep -q '^warm-up = off' /etc/snapbd/snapbd.conf || fail "cannot turn the warm-up off"
  grep -q "^metrics = $METRICS" /etc/snapbd/snapbd.conf || fail "the example configuration does not serve metrics on $METRICS"
  echo "SNAPBD_JAVA_OPTS=\"$JAVA_OPTS\"" > /etc/default/snapbd
  mkdir -p /etc/systemd/system/snapbd.service.d /etc/systemd/system/snapbd-attach@.service.d
  printf '[Service]\nWatchdogSec=20s\n' > /etc/systemd/system/snapbd.service.d/test.conf
  printf '[Service]\nEnvironment="SNAPBD_JAVA_OPTS=%s"\n' "$GUEST_CLI_JAVA_OPTS" > /etc/systemd/system/snapbd-attach@.service.d/test.conf
  must systemctl daemon-reload
  echo "volume vol0 256M, warm-up off, WatchdogSec=20s"
}

start() {
  must systemctl start snapbd.service          # returns once READY=1 arrived (Type=notify)
  # READY=1 means bound: the very first connection must work, with no retry.
  must nbdinfo --size nbd://127.0.0.1:10809/vol0
  must nbdinfo --size 'nbd+unix:///vol0?socket=/var/lib/snapbd/nbd.sock'
  expect active systemctl is-active snapbd.service
  local status pid
  status="$(prop snapbd.service StatusText)"
  echo "StatusText: $status"
  case "$status" in serving*) ;; *) fail "StatusText is '$status', expected 'serving ...'" ;; esac
  pid="$(prop snapbd.service MainPID)"
  expect java cat "/proc/$pid/comm"
  expect 0 prop snapbd.service NRestarts
  # LimitNICE=+0: the copy-on-write committer may go back from nice 19 to 0 without CAP_SYS_NICE.
  expect 20 awk '/^Max nice priority/ { print $4 }' "/proc/$pid/limits"
  [ -d /var/lib/snapbd/volumes/vol0 ] || fail "volume vol0 was not created in /var/lib/snapbd"
  must snapbd status
  systemd-analyze security --no-pager snapbd.service 2>&1 | tail -3 || true
  echo "active, READY after bind; StatusText '$status'"
}

watchdog() {
  expect 20s prop snapbd.service WatchdogUSec
  local t0 t1
  t0="$(prop snapbd.service WatchdogTimestampMonotonic)"
  echo "WatchdogTimestampMonotonic: $t0"
  [ "${t0:-0}" -gt 0 ] || fail "no WATCHDOG=1 received yet"
  for _ in $(seq 1 60); do
    sleep 1
    t1="$(prop snapbd.service WatchdogTimestampMonotonic)"
    [ "$t1" != "$t0" ] && break
  done
  [ "$t1" != "$t0" ] || fail "WatchdogTimestamp did not move within 60 s (no WATCHDOG=1 pings)"
  expect active systemctl is-active snapbd.service
  echo "WATCHDOG=1 pings arrive (timestamp $t0 -> $t1)"
}

journal() {
  journalctl -b -u snapbd.service -o cat --no-pager | tail -30
  journalctl -b -u snapbd.service -p info..info -o cat --no-pager | grep -q 'snapbd ready' \
    || fail "'snapbd ready' is not in the journal at priority info"
  if journalctl -b -u snapbd.service -o cat --no-pager | grep -E '^<[0-9]>'; then
    fail "journal messages still carry a '<N>' prefix"
  fi
  if journalctl -b -u snapbd.service -o cat --no-pager | grep -E '^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9:.]+ (INFO|WARN|ERROR|DEBUG) '; then
    fail "journal messages carry a timestamp of their own"
  fi
  echo "priorities from <N> prefixes, no own timestamps"
}

reload() {
  local pid; pid="$(prop snapbd.service MainPID)"
  sed -i 's/^max-connections = .*/max-connections = 7/' /etc/snapbd/snapbd.conf
  must systemctl reload snapbd.service
  wait_for 60 "journal 'reloaded'" sh -c "journalctl -b -u snapbd.service -o cat | grep -q 'max-connections 256 -> 7'"
  expect 7 metric snapbd_max_connections
  # A bad file: logged at priority err, nothing changes, the server keeps running.
  echo "bogus-key = 1" >> /etc/snapbd/snapbd.conf
  must systemctl reload snapbd.service
  wait_for 60 "reload error at priority err" sh -c "journalctl -b -u snapbd.service -p err -o cat | grep -q \"unknown key 'bogus-key'\""
  sed -i '/^bogus-key/d' /etc/snapbd/snapbd.conf
  expect active systemctl is-active snapbd.service
  expect "$pid" prop snapbd.service MainPID
  expect 7 metric snapbd_max_connections
  echo "reload applied max-connections 7; a bad file was refused with file:line at priority err"
}

attach() {
  echo "EXPORT=vol0" > /etc/snapbd/attach-nbd0.conf
  must systemctl start snapbd-attach@nbd0.service
  expect active systemctl is-active snapbd-attach@nbd0.service
  [ -f /sys/block/nbd0/pid ] || fail "/dev/nbd0 is not connected (no /sys/block/nbd0/pid)"
  # The hardened unit lets the server reach the nbd generic-netlink family (RestrictAddressFamilies=AF_NETLINK):
  # the device is set up with NBD_CMD_CONNECT, which names its backend; the driver's pid file then holds the
  # thread that sent the request, which may have ended, so the backend name is what ties the device to snapbd.
  snapbd status --json > /tmp/status.json || fail "snapbd status --json failed"
  grep -q '"kernelInterface" : "netlink"' /tmp/status.json || fail "under systemd nbd0 is not attached through netlink: $(cat /tmp/status.json)"
  expect "snapbd:vol0" cat /sys/block/nbd0/backend
  wait_for 60 "dev-nbd0.device active" systemctl is-active --quiet dev-nbd0.device
  expect 268435456 blockdev --getsize64 /dev/nbd0
  local st; st="$(snapbd status)"
  echo "$st"
  echo "$st" | grep -q '/dev/nbd0' || fail "'snapbd status' does not list /dev/nbd0"
  echo "/dev/nbd0 attached to vol0 by snapbd-attach@nbd0.service"
}

mount_fs() {
  must mkfs.ext4 -q -F /dev/nbd0
  mkdir -p "$MNT"
  echo "/dev/nbd0 $MNT ext4 _netdev,noauto,x-systemd.requires=snapbd-attach@nbd0.service 0 0" >> /etc/fstab
  must systemctl daemon-reload
  must systemctl start srv-snapbd.mount
  expect active systemctl is-active srv-snapbd.mount
  expect "/dev/nbd0 ext4" findmnt -n -o SOURCE,FSTYPE "$MNT"
  prop srv-snapbd.mount Requires | grep -q 'snapbd-attach@nbd0.service' || fail "the mount does not require snapbd-attach@nbd0.service"
  prop srv-snapbd.mount After | grep -q 'snapbd-attach@nbd0.service' || fail "the mount is not ordered after snapbd-attach@nbd0.service"
  must dd if=/dev/urandom of="$MNT/data.bin" bs=1M count=8 status=none
  must sync
  sha256sum "$MNT/data.bin" | awk '{ print $1 }' > /tmp/data.sha256
  echo "ext4 on /dev/nbd0 mounted at $MNT from /etc/fstab; 8 MiB written"
}

metrics_step() {
  must snapbd snapshot create vol0 s1
  must dd if=/dev/urandom of="$MNT/more.bin" bs=1M count=4 status=none
  must sync
  metrics > /tmp/metrics.txt || fail "cannot fetch http://$METRICS/metrics"
  grep -E '^snapbd_(export_requests_total|export_written_bytes_total|volume_copy_on_write_copies_total|save_volume_(used|capacity)_bytes|snapshots|lun_state_counter|connections|attachment_info)[{ ]' /tmp/metrics.txt
  local req writes cow snaps cap conns
  req="$(metric 'snapbd_export_requests_total{export="vol0"}')"
  writes="$(metric 'snapbd_export_written_bytes_total{export="vol0"}')"
  cow="$(metric 'snapbd_volume_copy_on_write_copies_total{volume="vol0"}')"
  snaps="$(metric 'snapbd_snapshots{volume="vol0",state="active"}')"
  cap="$(metric 'snapbd_save_volume_capacity_bytes{volume="vol0"}')"
  conns="$(metric 'snapbd_connections')"
  [ "${req:-0}" -gt 0 ] || fail "snapbd_export_requests_total{export=\"vol0\"} is '${req}'"
  [ "${writes:-0}" -gt 0 ] || fail "snapbd_export_written_bytes_total{export=\"vol0\"} is '${writes}'"
  [ "${cow:-0}" -gt 0 ] || fail "no copy-on-write copies counted after writing past snapshot s1 ('${cow}')"
  [ "${snaps:-}" = 1 ] || fail "snapbd_snapshots{volume=\"vol0\",state=\"active\"} is '${snaps}', expected 1"
  [ "${cap:-}" = 67108864 ] || fail "save volume capacity is '${cap}', expected 67108864"
  [ "${conns:-0}" -ge 1 ] || fail "snapbd_connections is '${conns}' with /dev/nbd0 attached"
  grep -q '^snapbd_attachment_info{device="/dev/nbd0",export="vol0"' /tmp/metrics.txt || fail "no snapbd_attachment_info for /dev/nbd0"
  grep -q '^snapbd_export_request_duration_seconds_count{export="vol0",op="write"}' /tmp/metrics.txt \
    || fail "no write latency histogram for vol0"
  echo "metrics: $req requests, $writes bytes written, $cow copy-on-write copies, 1 active snapshot"
}

stop_all() {
  local pid; pid="$(prop snapbd.service MainPID)"
  must systemctl stop snapbd.service
  expect inactive systemctl is-active srv-snapbd.mount
  expect inactive systemctl is-active snapbd-attach@nbd0.service
  expect inactive systemctl is-active snapbd.service
  expect success prop snapbd.service Result
  expect 0 prop snapbd.service ExecMainStatus
  ! findmnt "$MNT" >/dev/null || fail "$MNT is still mounted"
  [ ! -d "/proc/$pid" ] || fail "the server process $pid is still there"
  # Order: unmount, then detach, then the server closes the volumes.
  journalctl -b -o cat --no-pager | grep -nE 'Unmounted srv-snapbd.mount|Unmounted /srv/snapbd|Stopped snapbd-attach@nbd0|detached /dev/nbd0|volumes closed cleanly' > /tmp/order.txt
  cat /tmp/order.txt
  local u d c
  u="$(grep -m1 -E 'Unmounted' /tmp/order.txt | cut -d: -f1)"
  d="$(grep -m1 -E 'detached /dev/nbd0|Stopped snapbd-attach@nbd0' /tmp/order.txt | cut -d: -f1)"
  c="$(grep -m1 'volumes closed cleanly' /tmp/order.txt | cut -d: -f1)"
  [ -n "$u" ] && [ -n "$d" ] && [ -n "$c" ] || fail "the journal lacks the unmount, the detach or the clean close"
  [ "$u" -lt "$d" ] && [ "$d" -lt "$c" ] || fail "stop order was not unmount ($u) < detach ($d) < close ($c)"
  volumes_clean
  must timeout 300 java $JAVA_OPTS -jar "$JAR" fsck --data-dir /var/lib/snapbd
  echo "stopped with exit status 0: unmounted, detached, volumes marked clean, fsck clean"
}

restart() {
  must systemctl start snapbd-attach@nbd0.service       # starts snapbd.service too (BindsTo)
  expect active systemctl is-active snapbd.service
  must e2fsck -fn /dev/nbd0
  must systemctl start srv-snapbd.mount
  expect "$(cat /tmp/data.sha256)" sh -c "sha256sum '$MNT/data.bin' | awk '{ print \$1 }'"
  must systemctl stop snapbd.service
  expect inactive systemctl is-active srv-snapbd.mount
  volumes_clean
  echo "started again through the attach unit; the file system and its data survived; clean again"
}

socket_activation() {
  expect inactive systemctl is-active snapbd.service
  must systemctl start snapbd.socket
  expect active systemctl is-active snapbd.socket
  expect inactive systemctl is-active snapbd.service
  # The first connection starts the service; it takes the socket from systemd.
  must nbdinfo --size nbd://127.0.0.1:10809/vol0
  # The server serves the socket as soon as it is bound, a moment before it sends READY=1 (the state is
  # "activating" until then): wait for the state instead of reading it once.
  wait_for 120 "snapbd.service active after the first connection" systemctl is-active --quiet snapbd.service
  journalctl -b -u snapbd.service -o cat --no-pager | grep 'listening on systemd socket' \
    || fail "the server did not take the socket from systemd"
  must systemctl stop snapbd.service
  expect active systemctl is-active snapbd.socket        # the socket stays with systemd
  must nbdinfo --size nbd://127.0.0.1:10809/vol0          # and starts the server again
  must systemctl stop snapbd.socket snapbd.service
  volumes_clean
  echo "socket activation: the first connection started the server, which served systemd's socket"
}

# writer: until $W/stop exists, writes 4 KiB records "seq I TIME" to block I mod 16384 of $MNT/loop.bin with
# O_DIRECT|O_DSYNC, and logs "I TIME" for each write acknowledged ($W/writer.log) or "failed" ($W/writer.err).
W=/run/upgrade-test
writer() {
  local i=0
  while [ ! -e "$W/stop" ]; do
    if printf 'seq %08d %s\n' "$i" "$EPOCHREALTIME" | dd of="$MNT/loop.bin" bs=4096 seek=$((i % 16384)) count=1 \
         iflag=fullblock conv=notrunc,sync oflag=direct,dsync status=none 2>> "$W/writer.err"; then
      echo "$i $EPOCHREALTIME" >> "$W/writer.log"
    else
      echo "write $i failed" >> "$W/writer.err"
    fi
    i=$((i + 1))
  done
}
# writer_verify: every block of loop.bin holds the last record written to it (in block order).
writer_verify() {
  local n; n="$(wc -l < "$W/writer.log")"
  dd if="$MNT/loop.bin" bs=4096 iflag=direct status=none | tr -d '\0' | awk -v n="$n" -v blocks=16384 '
    /^seq / { got[++k] = $2 + 0 }
    END {
      for (b = 0; b < blocks && b < n; b++) {
        want = b + int((n - 1 - b) / blocks) * blocks
        if (got[b + 1] != want) { printf "block %d holds seq %s, expected %d\n", b, got[b + 1], want; bad++ }
      }
      if (k != (n < blocks ? n : blocks)) { printf "%d records, expected %d\n", k, (n < blocks ? n : blocks); bad++ }
      exit bad > 0
    }'
}
# writer_gaps: the longest times between two acknowledged writes (the pauses an application saw), longest first.
writer_gaps() { awk 'NR > 1 { printf "%.2f\n", $2 - t } { t = $2 }' "$W/writer.log" | sort -rn | head -"${1:-3}" | tr '\n' ' '; }
# writer_gap_in T0 T1: the longest time between two acknowledged writes, the later after T0, the earlier before T1
# (EPOCHREALTIME): the pause of the restart run between T0 and T1.
writer_gap_in() {
  awk -v a="$1" -v b="$2" 'NR > 1 && $2 > a && t < b && $2 - t > m { m = $2 - t } { t = $2 } END { printf "%.2f", m }' "$W/writer.log"
}
# writer_gap_at T: the longest time between two acknowledged writes that overlaps [T, T + 2 s] (EPOCHREALTIME): the
# writer may be between two writes when the stop begins at T, its stalled write then starts a moment later.
writer_gap_at() {
  awk -v k="$1" 'NR > 1 && t <= k + 2 && $2 > k && $2 - t > g { g = $2 - t } { t = $2 }
    END { if (g == "") print "?"; else printf "%.2f", g }' "$W/writer.log"
}
# stop_time T0 T1: when the server began the stop of a restart between T0 and T1 (the journal's first
# 'keeping /dev/nbd0' in that window, epoch seconds): the writer's gap around it is the pause the restart caused.
stop_time() {
  journalctl -b -u snapbd.service -o short-unix --no-pager | awk -v a="$1" -v b="$2" '/keeping \/dev\/nbd0/ && $1 > a && $1 < b { print $1; exit }'
}
# restart_window OUT CMD...: runs CMD (a restart; stdout to OUT, stderr to OUT.err), lets 35 s pass (a request left
# unanswered by the old server comes back after the driver's 30 s timer: its stall belongs to this restart), waits
# for 5 more acknowledged writes, and prints "T0 T1".
restart_window() {
  local out="$1"; shift
  local t0 n; t0=$EPOCHREALTIME
  "$@" > "$out" 2> "$out.err" || return 1
  sleep 35
  n="$(wc -l < "$W/writer.log")"
  wait_for 120 "writes after '$*'" sh -c "[ \$(wc -l < $W/writer.log) -gt $((n + 5)) ]" >&2 || return 1
  echo "$t0 $EPOCHREALTIME"
}
io_errors() { dmesg | grep -iE 'I/O error|EXT4-fs error|EXT4-fs \(nbd0\).*(error|abort)|Aborting journal|Buffer I/O'; }
count_log() { journalctl -b -u snapbd.service -o cat --no-pager | grep -c "$1"; }

# upgrade: issue 28's package upgrade. Devices from attach = lines in snapbd.conf (/dev/nbd0 = vol0 with ext4
# mounted from fstab with only an ordering on the server, /dev/nbd2 = snapshot vol0@s1 read-only) and one attached
# with `snapbd attach` (/dev/nbd1), a writer doing synchronous direct writes on the file system; `dpkg -i` of a newer
# build restarts the server in place (postinst: `snapbd restart`), then `snapbd restart` again and a `systemctl
# restart`: every restart hands the three devices' kernel connections over to the next server (the in-place handover;
# for systemctl restart, to the successor ExecStop= prepared, which the next ExecStart adopts as the main process),
# systemd follows the successor as the main PID, the mount stays, no write fails, no I/O error in the kernel log, data
# verified. The writer's gap around each restart's stop is its pause. Then `systemctl stop` releases the devices,
# deletes their records and leaves no snapbd process.
upgrade() {
  [ "$DEB" != none ] || skip "no .deb (build with mvn -Pdeb)"
  local v new dir
  v="$(deb_version)"
  new="$v+upgrade1"
  dir="$(mktemp -d)"
  must dpkg-deb -R "$DEB" "$dir/pkg"
  sed -i "s/^Version: .*/Version: $new/" "$dir/pkg/DEBIAN/control"
  must dpkg-deb -b "$dir/pkg" "$dir/snapbd-upgrade.deb"
  # snapbd-attach@ units are restarted (detached) with the server: declare the devices in snapbd.conf instead, and
  # mount without a dependency that stops the mount with the server (docs/kernel-attach.md).
  sed -i '\#^/dev/nbd0 #d' /etc/fstab
  echo "/dev/nbd0 $MNT ext4 _netdev,x-systemd.after=snapbd.service,nofail 0 0" >> /etc/fstab
  printf 'attach = vol0 /dev/nbd0\nattach = vol0@s1 /dev/nbd2 read-only\n' >> /etc/snapbd/snapbd.conf
  must systemctl daemon-reload
  must systemctl start snapbd.service
  must systemctl start srv-snapbd.mount
  must snapbd attach vol0 /dev/nbd1
  [ -f /var/lib/snapbd/attachments/nbd1.attach ] || fail "no attachment record for /dev/nbd1"
  expect "$(cat /tmp/data.sha256)" sh -c "sha256sum '$MNT/data.bin' | awk '{ print \$1 }'"
  local snap; snap="$(dd if=/dev/nbd2 bs=1M count=16 iflag=direct status=none | sha256sum)"
  local mounted; mounted="$(prop srv-snapbd.mount ActiveEnterTimestampMonotonic)"
  local kept0 rec0 hand0 pid0 pid1 pid2 pid3 w1 w2 w3
  kept0="$(count_log 'keeping /dev/nbd0 (vol0) connected')"
  rec0="$(count_log 'reconnected vol0 to /dev/nbd0')"
  served0="$(count_log 'serving vol0 on /dev/nbd0 on the connection the predecessor handed over')"
  hand0="$(count_log 'handed over to pid')"
  rm -rf "$W"; mkdir -p "$W"
  must dd if=/dev/zero of="$MNT/loop.bin" bs=1M count=64 conv=fsync status=none
  dmesg -C
  writer & local wpid=$!
  wait_for 60 "the writer's first writes" sh -c "[ \$(wc -l < $W/writer.log) -ge 20 ]"
  pid0="$(prop snapbd.service MainPID)"
  # postinst: snapbd restart (in place), the running version has it
  w1="$(restart_window "$W/dpkg.log" dpkg -i --force-confold "$dir/snapbd-upgrade.deb")" \
    || fail "dpkg -i (in-place restart): $(tail -5 "$W/dpkg.log" "$W/dpkg.log.err")"
  cat "$W/dpkg.log" "$W/dpkg.log.err"
  grep -q "^restart: pid [0-9]* serves" "$W/dpkg.log" || fail "postinst did not restart the server in place"
  expect "$new" deb_version
  expect "install ok installed" deb_status
  expect active systemctl is-active snapbd.service
  pid1="$(prop snapbd.service MainPID)"
  [ "$pid1" != "$pid0" ] || fail "the upgrade did not restart the server"
  grep -q '^max-connections = 7' /etc/snapbd/snapbd.conf || fail "the upgrade lost the edited configuration"
  expect enabled systemctl is-enabled snapbd.service
  w2="$(restart_window "$W/restart.json" snapbd restart --json)" \
    || fail "snapbd restart: $(cat "$W/restart.json" "$W/restart.json.err")"
  cat "$W/restart.json"
  pid2="$(prop snapbd.service MainPID)"
  expect "$pid2" sh -c "sed -n 's/.*\"successorPid\" : \\([0-9]*\\).*/\\1/p' $W/restart.json"
  expect active systemctl is-active snapbd.service
  expect success prop snapbd.service Result
  [ ! -d "/proc/$pid1" ] || fail "the predecessor $pid1 is still there after the in-place restart"
  w3="$(restart_window "$W/systemctl.log" systemctl restart snapbd.service)" || fail "systemctl restart: $(cat "$W/systemctl.log.err")"
  pid3="$(prop snapbd.service MainPID)"
  # systemctl restart: ExecStop= prepared the successor, the old server handed over to it at SIGTERM, ExecStart= adopted
  # it (no second JVM started): MainPID is the prepared successor, which speaks to systemd as the main process.
  local prepared; prepared="$(journalctl -b -u snapbd.service -o cat --no-pager | sed -n 's/^.*restart prepared: the successor (pid \([0-9]*\)).*/\1/p' | tail -1)"
  [ -n "$prepared" ] || fail "ExecStop= did not prepare a successor for systemctl restart"
  [ "$pid3" = "$prepared" ] || fail "MainPID $pid3 after systemctl restart is not the prepared successor $prepared"
  journalctl -b -u snapbd.service -o cat --no-pager | grep -q "adopted pid $pid3 as the main process" \
    || fail "ExecStart= did not adopt the successor $pid3"
  journalctl -b -u snapbd.service -o cat --no-pager | grep -q "adopted by the service manager as the main process" \
    || fail "the successor $pid3 did not see its adoption"
  [ "$(count_log 'no successor prepared for the restart')" -eq 0 ] || fail "ExecStop= fell back to the keep-devices marker"
  # the watchdog is fed by the adopted successor: a ping accepted well after the unit became active again
  local wd act; wd="$(prop snapbd.service WatchdogTimestampMonotonic)"; act="$(prop snapbd.service ActiveEnterTimestampMonotonic)"
  echo "watchdog: last ping at $wd us, active since $act us"
  [ $((wd - act)) -ge 20000000 ] || fail "no watchdog ping accepted from the adopted successor ($wd - $act us)"
  expect success prop snapbd.service Result
  [ "$pid2" != "$pid1" ] && [ "$pid3" != "$pid2" ] || fail "a restart did not restart the server ($pid1 $pid2 $pid3)"
  expect active systemctl is-active snapbd.service
  [ "$(count_log 'handed over to pid')" -eq $((hand0 + 3)) ] || fail "not 3 handovers (2 in place, systemctl restart) in the journal"
  if journalctl -b -u snapbd.service -o cat --no-pager | grep 'reception only permitted for main PID'; then
    fail "systemd refused notifications of a server that was not the main PID"
  fi
  touch "$W/stop"
  wait "$wpid"
  # The parts of each pause: SIGTERM (stopping) .. stopped .. Starting .. first line of the new JVM (access rules) ..
  # reconnected .. ready.
  journalctl -b -u snapbd.service -o short-monotonic --no-pager \
    | grep -E 'Stopping|Stopped|Starting|Started|stopping|stopped|keeping|request boundary|handed|access rules|reconnected|snapbd ready|prepared|adopted|takeover:|remains running|left-over' | tail -70
  # The class data sharing archive (CacheDirectory=, bin/snapbd): made at an earlier stop, mapped by this server.
  ls -l /var/cache/snapbd
  grep -q '/var/cache/snapbd/snapbd-[0-9]*\.jsa$' "/proc/$pid3/maps" || fail "the server does not map a class data sharing archive"
  [ "$(count_log 'keeping /dev/nbd0 (vol0) connected')" -eq $((kept0 + 3)) ] || fail "not all 3 restarts kept /dev/nbd0: $(count_log 'keeping /dev/nbd0')"
  # All 3 restarts hand each device's connection over (no NBD_CMD_RECONFIGURE, no reconnect): systemctl restart too.
  [ "$(count_log 'serving vol0 on /dev/nbd0 on the connection the predecessor handed over')" -eq $((served0 + 3)) ] \
    || fail "not all 3 restarts handed /dev/nbd0's connection over: $(count_log 'not handed over')"
  [ "$(count_log 'reconnected vol0 to /dev/nbd0')" -eq "$rec0" ] \
    || fail "/dev/nbd0 was reconnected (NBD_CMD_RECONFIGURE) at a restart instead of handed over"
  [ "$(count_log 'serving vol0@s1 on /dev/nbd2 on the connection the predecessor handed over')" -ge 3 ] \
    && [ "$(count_log 'reconnected vol0@s1 to /dev/nbd2')" -eq 0 ] || fail "the snapshot device /dev/nbd2 was not handed over 3 times"
  [ "$(count_log 'keeping /dev/nbd1 (vol0) connected')" -eq 3 ] && [ "$(count_log 'reconnected vol0 to /dev/nbd1')" -eq 0 ] \
    && [ "$(count_log 'serving vol0 on /dev/nbd1 on the connection the predecessor handed over')" -eq 3 ] \
    || fail "not all 3 restarts kept /dev/nbd1 (snapbd attach) and handed it over"
  [ -e /sys/block/nbd1/pid ] || fail "/dev/nbd1 was released by a restart"
  [ ! -e /var/lib/snapbd/keep-devices ] || fail "the keep-devices marker was left behind"
  must timeout 60 dd if=/dev/nbd1 of=/dev/null bs=4k count=1 iflag=direct
  [ ! -s "$W/writer.err" ] || fail "writes failed: $(head -3 "$W/writer.err")"
  expect active systemctl is-active srv-snapbd.mount
  expect "$mounted" prop srv-snapbd.mount ActiveEnterTimestampMonotonic     # never unmounted in between
  expect "/dev/nbd0 ext4" findmnt -n -o SOURCE,FSTYPE "$MNT"
  ! io_errors || fail "I/O errors in the kernel log"
  writer_verify || fail "loop.bin does not hold the acknowledged writes"
  expect "$(cat /tmp/data.sha256)" sh -c "sha256sum '$MNT/data.bin' | awk '{ print \$1 }'"
  expect "$snap" sh -c "dd if=/dev/nbd2 bs=1M count=16 iflag=direct status=none | sha256sum"
  local writes gaps p1 p2 p3; writes="$(wc -l < "$W/writer.log")"; gaps="$(writer_gaps 3)"
  # The pause of each restart: the gap around its stop; the longest gap of its whole window is printed below (on the
  # 1 CPU of the guest, dpkg and the CLI's JVM start slow the writer down too).
  p1="$(writer_gap_at "$(stop_time $w1)")"; p2="$(writer_gap_at "$(stop_time $w2)")"; p3="$(writer_gap_at "$(stop_time $w3)")"
  # Where each pause lies (its last write before and first after, epoch seconds), beside the journal's epoch times.
  local w; for w in "$w1" "$w2" "$w3"; do
    # shellcheck disable=SC2086
    awk -v a="${w% *}" -v b="${w#* }" 'NR > 1 && $2 > a && t < b && $2 - t > m { m = $2 - t; x = t; y = $2 } { t = $2 }
      END { printf "window %s .. %s: longest gap %.3f s, from %s to %s\n", a, b, m, x, y }' "$W/writer.log"
  done
  journalctl -b -u snapbd.service -o short-unix --no-pager \
    | grep -E 'in-place restart|restart job|restart prepared|keeping /dev/nbd0|request boundary|handover: go sent|handed|snapbd stopped|taking over|takeover:|access rules|reconnected vol0 to /dev/nbd0|snapbd ready|adopted|stopping|Stopping|Starting' | tail -50
  echo "pause (gap between acknowledged writes around the stop): dpkg -i (in place) $p1 s, snapbd restart $p2 s, systemctl restart $p3 s"
  echo "longest gap in each restart's window: $(writer_gap_in $w1) s, $(writer_gap_in $w2) s, $(writer_gap_in $w3) s"
  echo "requests resent by the driver's request timer (kernel log):"; dmesg | grep -E 'Possible stuck request|Request send failed' || echo none
  must systemctl stop srv-snapbd.mount
  must e2fsck -fn /dev/nbd0
  sed -i '\#^/dev/nbd0 #d' /etc/fstab
  sed -i '/^attach = /d' /etc/snapbd/snapbd.conf
  must systemctl daemon-reload
  must systemctl stop snapbd.service
  local d
  for d in nbd0 nbd1 nbd2; do
    [ ! -e /sys/block/$d/pid ] || fail "systemctl stop left /dev/$d connected"
    [ ! -f /var/lib/snapbd/attachments/$d.attach ] || fail "systemctl stop left the record of /dev/$d"
  done
  # KillMode=process signals the main process only: a plain stop prepares no successor, so nothing is left over.
  local left; left="$(ps -eo pid=,args= | grep -F /usr/share/snapbd/snapbd.jar | grep -v grep)"
  [ -z "$left" ] || fail "systemctl stop left snapbd processes: $left"
  [ ! -e /var/lib/snapbd/successor.pid ] || fail "systemctl stop left successor.pid"
  echo "upgraded $v -> $new: dpkg -i (in place), snapbd restart and systemctl restart (successor prepared by ExecStop, adopted by ExecStart) handed over ext4 on /dev/nbd0 mounted (fstab), /dev/nbd1 (snapbd attach) and /dev/nbd2 (vol0@s1), systemctl stop released them; $writes O_DSYNC writes, none failed, all verified; no I/O error; e2fsck clean; pauses: dpkg -i (in place) $p1 s, snapbd restart $p2 s, systemctl restart $p3 s (longest gaps within 35 s: $(writer_gap_in $w1) s, $(writer_gap_in $w2) s, $(writer_gap_in $w3) s)"
}

remove() {
  [ "$DEB" != none ] || skip "no .deb (build with mvn -Pdeb)"
  must dpkg -r snapbd
  expect "deinstall ok config-files" deb_status
  expect inactive systemctl is-active snapbd.service
  [ ! -e /usr/share/snapbd/snapbd.jar ] || fail "the jar is still installed"
  [ ! -e /lib/systemd/system/snapbd.service ] || fail "snapbd.service is still installed"
  [ -f /etc/snapbd/snapbd.conf ] || fail "dpkg -r removed the conffile"
  volumes_clean
  echo "removed: server stopped first, volumes clean and kept, configuration kept"
}

purge() {
  [ "$DEB" != none ] || skip "no .deb (build with mvn -Pdeb)"
  must dpkg -P snapbd
  [ -z "$(deb_status)" ] || [ "$(deb_status)" = "unknown ok not-installed" ] || fail "status after purge: $(deb_status)"
  [ ! -e /etc/snapbd/snapbd.conf ] || fail "the conffile survived the purge"
  [ -d /var/lib/snapbd/volumes/vol0 ] || fail "the purge deleted the volumes"
  [ ! -e /etc/systemd/system/multi-user.target.wants/snapbd.service ] || fail "the enable symlink survived the purge"
  echo "purged: configuration and symlinks gone, volumes kept"
}

step boot boot
step install install_pkg
step configure configure
step start start
step watchdog watchdog
step journal journal
step reload reload
step attach attach
step mount mount_fs
step metrics metrics_step
step stop stop_all
step restart restart
step socket socket_activation
step upgrade upgrade
step remove remove
step purge purge

journalctl -b --no-pager -o short-monotonic > "$OUT/journal.txt" 2>&1
cat "$RESULTS"
! grep -q '^STEP [^ ]* FAIL' "$RESULTS"   # the status field, not a FAIL quoted in a detail
