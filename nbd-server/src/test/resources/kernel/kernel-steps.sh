#!/bin/bash
# The KernelIT scenario, run inside User-Mode Linux by uml-run.sh (as root, real nbd.ko loaded):
#
#   kernel-steps.sh PROJECT-ROOT SNAPBD-JAR
#
# Every step writes one line to $KT_OUT/results.txt:  STEP <name> PASS|FAIL <detail>
# and its whole output to $KT_OUT/step-<name>.log. Steps run in order; a failed step does not stop the
# others (later ones may fail for the same reason, the first failure is the one to read). Every command
# that could hang is bounded with timeout(1).
set -u
ROOT="${1:?project root}"
export SNAPBD_JAR="${2:?snapbd jar}"
OUT="${KT_OUT:?}"
RESULTS="$OUT/results.txt"
SNAPBD="$ROOT/bin/snapbd"
WORK=/run/kt                                  # guest tmpfs: manifests, mount points, pid files
export SNAPBD_DATA_DIR=/run/snapbd-data       # volumes in guest memory (tmpfs)
SOCK="$SNAPBD_DATA_DIR/nbd.sock"
PORT=10809
CONF="$WORK/snapbd.conf"
SERVER_LOG="$OUT/server.log"
: > "$RESULTS"
mkdir -p "$WORK" /mnt/live /mnt/snap /mnt/c

# ---- helpers -------------------------------------------------------------------------------------------

. "$(dirname "${BASH_SOURCE[0]}")/kernel-lib.sh"      # snapbd, start_server, alive, attached, ...; step, fail, must

# expect_error 'text' CMD...: CMD must fail and its stderr mention the text.
expect_error() {
  local want="$1"; shift
  echo "+ $* (must fail with '$want')"
  local err rc
  err="$( { bounded "$@" >/dev/null; } 2>&1 )"; rc=$?
  echo "$err"
  [ "$rc" -ne 0 ] || fail "'$*' succeeded but should have failed"
  [ "$(printf '%s\n' "$err" | grep -c .)" -eq 1 ] || fail "'$*' did not fail with one line: $err"
  printf '%s' "$err" | grep -qF -- "$want" || fail "'$*' failed without mentioning '$want': $err"
}
stop_server() {
  local p; p=$(server_pid)
  alive "$p" || fail "no server running"
  echo "+ kill -TERM $p"
  kill -TERM "$p"
  for _ in $(seq 1 600); do
    alive "$p" || return 0
    sleep 0.5
  done
  kill -KILL "$p"
  fail "the server did not stop within 300 s of SIGTERM"
}
# do_it_threads: true when the server has a thread named nbd-do-it (the ioctl path's; /proc shows 15 characters).
do_it_threads() { grep -q '^nbd-do-it' /proc/"$(server_pid)"/task/*/comm 2>/dev/null; }
sectors() { cat "/sys/block/$(basename "$1")/size"; }
# make_tree DIR: a small tree of random files.
make_tree() {
  local d="$1" i
  mkdir -p "$d/a" "$d/b/c" "$d/d"
  for i in $(seq 1 8); do
    head -c $(( (RANDOM % 64 + 1) * 4096 + RANDOM % 4096 )) /dev/urandom > "$d/a/f$i"
    head -c $(( RANDOM % 20000 + 1 )) /dev/urandom > "$d/b/c/g$i"
  done
  head -c $((3 << 20)) /dev/urandom > "$d/d/big"
  echo "hello from snapbd" > "$d/hello.txt"
}
manifest() { (cd "$1" && find . -type f ! -path './lost+found/*' | LC_ALL=C sort | xargs sha256sum); }

# ---- steps ---------------------------------------------------------------------------------------------

boot() {
  grep -q '^nbd ' /proc/modules || fail "nbd.ko is not loaded: $(cat "$OUT/guest.log")"
  [ -b /dev/nbd0 ] || fail "/dev/nbd0 does not exist"
  say "kernel $(uname -r), nbd.ko loaded, $(ls -d /sys/block/nbd* | wc -l) nbd devices, java $(java -version 2>&1 | head -1)"
}

server_start() {
  cat > "$CONF" <<EOF
default-volume = vol0
default-volume-size = 256M
default-save-size = 128M
tcp = 127.0.0.1:$PORT
EOF
  rm -rf "$SNAPBD_DATA_DIR"
  start_server
  say "snapbd serving vol0 (256 MiB) on tcp 127.0.0.1:$PORT and $SOCK"
}

attach_errors() {
  expect_error "modprobe nbd" snapbd attach vol0 /dev/nbd63
  expect_error "no export named nope" snapbd attach nope /dev/nbd0
  expect_error "not an nbd device" snapbd attach vol0 /dev/sda
  expect_error "/dev/nbd5 is not attached" snapbd detach /dev/nbd5
  attached /dev/nbd0 && fail "/dev/nbd0 got attached by a failed request"
  say "bad attach/detach requests fail with one clear line (no such device -> modprobe nbd; unknown export; not attached)"
}

attach_vol0() {
  must snapbd attach vol0 /dev/nbd0
  attached /dev/nbd0 || fail "/sys/block/nbd0/pid missing after attach"
  [ "$(sectors /dev/nbd0)" -eq $((256 << 11)) ] || fail "/dev/nbd0 has $(sectors /dev/nbd0) sectors, want $((256 << 11))"
  [ "$(cat /sys/block/nbd0/ro)" = 0 ] || fail "/dev/nbd0 is read-only"
  [ "$(cat /sys/block/nbd0/queue/discard_max_bytes)" -gt 0 ] || fail "no discard: TRIM flag not passed"
  grep -q 'write back' /sys/block/nbd0/queue/write_cache || fail "no write cache: FLUSH flag not passed"
  expect_error "busy" snapbd attach vol0 /dev/nbd0
  snapbd status --json > "$WORK/status.json" || fail "status failed"
  grep -q '"device" : "/dev/nbd0"' "$WORK/status.json" || fail "status --json does not list /dev/nbd0: $(cat "$WORK/status.json")"
  # This kernel has the nbd generic-netlink family: the device is set up with NBD_CMD_CONNECT, bound to no thread.
  grep -q '"kernelInterface" : "netlink"' "$WORK/status.json" || fail "status does not say netlink: $(cat "$WORK/status.json")"
  snapbd status | grep -q 'attached:       /dev/nbd0 -> vol0 (read-write, since .*, netlink)' || fail "status text: $(snapbd status)"
  [ "$(cat /sys/block/nbd0/backend)" = snapbd:vol0 ] || fail "backend identifier: '$(cat /sys/block/nbd0/backend)'"
  do_it_threads && fail "a DO_IT thread runs for a netlink attachment: $(cat /proc/"$(server_pid)"/task/*/comm | grep nbd-do-it)"
  say "vol0 on /dev/nbd0 through netlink (backend snapbd:vol0, no DO_IT thread): $(sectors /dev/nbd0) sectors, read-write, discard and write-back cache on, listed by status"
}

mkfs_mount_tree() {
  # The file system takes the first 160 MiB; fio gets the rest of the device later.
  must mkfs.ext4 -q -F -b 4096 /dev/nbd0 160M
  must mount /dev/nbd0 /mnt/live
  tree_synced /mnt/live "$WORK/old.manifest"
  say "ext4 on /dev/nbd0, $(wc -l < "$WORK/old.manifest") files written, synced, checksums read back through the driver"
}

snapshot_attach_ro() {
  # Freeze so the snapshot holds a clean file system (no journal to replay: it is mounted with noload).
  must fsfreeze -f /mnt/live
  snapbd snapshot create vol0 s1; rc=$?
  fsfreeze -u /mnt/live
  [ "$rc" -eq 0 ] || fail "snapshot create vol0 s1 exited $rc"
  must snapbd attach vol0@s1 /dev/nbd1
  [ "$(cat /sys/block/nbd1/ro)" = 1 ] || fail "/dev/nbd1 (vol0@s1) is not read-only in the kernel"
  must mount -o ro,noload /dev/nbd1 /mnt/snap
  dd if=/dev/zero of=/dev/nbd1 bs=4k count=1 oflag=direct 2>/dev/null && fail "writing to the read-only /dev/nbd1 succeeded"
  # --read-only on a writable volume
  must snapbd attach vol0 /dev/nbd2 --read-only --timeout 60
  [ "$(cat /sys/block/nbd2/ro)" = 1 ] || fail "/dev/nbd2 attached --read-only is writable"
  dd if=/dev/zero of=/dev/nbd2 bs=4k count=1 seek=60000 oflag=direct 2>/dev/null && fail "writing to /dev/nbd2 (--read-only) succeeded"
  must snapbd detach /dev/nbd2
  say "snapshot s1 taken (fs frozen), vol0@s1 on /dev/nbd1 read-only, mounted ro,noload; --read-only attach refuses writes"
}

snapshot_isolation() {
  # Change the live tree: rewrite, append, delete, add.
  head -c 50000 /dev/urandom > /mnt/live/a/f1
  head -c 12345 /dev/urandom >> /mnt/live/a/f2
  rm /mnt/live/b/c/g3
  head -c $((2 << 20)) /dev/urandom > /mnt/live/d/big
  echo "new file" > /mnt/live/new.txt
  manifest /mnt/live > "$WORK/new.manifest"
  must sync
  drop_caches
  check_manifest /mnt/snap "$WORK/old.manifest" || fail "the snapshot lost its old contents"
  check_manifest /mnt/live "$WORK/new.manifest" || fail "the live tree does not have its new contents"
  check_manifest /mnt/live "$WORK/old.manifest" >/dev/null 2>&1 && fail "the live tree still matches the old checksums"
  [ -e /mnt/snap/new.txt ] && fail "the new file shows up in the snapshot"
  [ -e /mnt/snap/b/c/g3 ] || fail "the deleted file is gone from the snapshot"
  say "after changing the live tree: snapshot has the old checksums ($(wc -l < "$WORK/old.manifest") files), live the new ones"
}

fstrim_holes() {
  local uri="nbd+unix:///vol0?socket=$SOCK"
  must dd if=/dev/urandom of=/mnt/live/trimme bs=1M count=24 conv=fsync status=none
  must sync
  # The file's physical extents, in bytes on the device (fs block 4096).
  filefrag -v /mnt/live/trimme | awk '{ gsub(/\.\.[ ]+/, "..") } $1 ~ /^[0-9]+:$/ { split($3, p, "\\.\\."); sub(":", "", p[2]); print p[1] * 4096, (p[2] + 1) * 4096 }' > "$WORK/ranges"
  [ -s "$WORK/ranges" ] || fail "no extents from filefrag: $(filefrag -v /mnt/live/trimme)"
  echo "extents: $(tr '\n' ' ' < "$WORK/ranges")"
  must timeout 120 nbdinfo --map "$uri" > "$WORK/map.before"
  # kind_over FILE: the extent kinds (nbdinfo type numbers) that overlap the file's ranges
  kinds() { awk 'NR == FNR { s[NR] = $1; e[NR] = $2; n = NR; next }
                 { off = $1; len = $2; for (i = 1; i <= n; i++) if (off < e[i] && off + len > s[i]) print $3 }' "$WORK/ranges" "$1" | sort -u | tr '\n' ' '; }
  before="$(kinds "$WORK/map.before")"
  echo "kinds before: $before"
  [ "$before" = "0 " ] || fail "the file's blocks are not all data before the trim: $before"
  must rm /mnt/live/trimme
  must sync
  must fstrim -v /mnt/live
  must timeout 120 nbdinfo --map "$uri" > "$WORK/map.after"
  after="$(kinds "$WORK/map.after")"
  echo "kinds after: $after"
  [ "$after" = "3 " ] || fail "trimmed ranges are not holes in nbdinfo --map: kinds $after; map: $(head -20 "$WORK/map.after" | tr '\n' ';')"
  say "24 MiB file deleted + fstrim: its $(wc -l < "$WORK/ranges") extent(s) show as hole,zero in nbdinfo --map (data before)"
}

fio_verify() {
  # Random 4k writes with verification through the driver, past the end of the 160 MiB file system.
  must timeout 600 fio --name=kernel-verify --filename=/dev/nbd0 --offset=176M --size=80M --rw=randwrite --bs=4k \
    --ioengine=libaio --iodepth=16 --direct=1 --verify=crc32c --do_verify=1 --verify_fatal=1 --randrepeat=0 \
    --allow_mounted_write=1 --output="$WORK/fio.txt"
  cat "$WORK/fio.txt"
  grep -q 'err= 0' "$WORK/fio.txt" || fail "fio reported errors"
  say "fio randwrite 4k qd16 over 80 MiB of /dev/nbd0 with crc32c verify: no errors ($(grep -o 'IOPS=[^,]*' "$WORK/fio.txt" | head -2 | tr '\n' ' '))"
}

detach_all() {
  expect_error "mounted" snapbd detach /dev/nbd0
  attached /dev/nbd0 || fail "a refused detach detached /dev/nbd0"
  must umount /mnt/snap
  must umount /mnt/live
  must snapbd detach /dev/nbd1
  must snapbd detach /dev/nbd0
  attached /dev/nbd0 && fail "/dev/nbd0 still connected after detach"
  attached /dev/nbd1 && fail "/dev/nbd1 still connected after detach"
  [ "$(sectors /dev/nbd0)" -eq 0 ] || fail "/dev/nbd0 still has a size after detach"
  expect_error "/dev/nbd0 is not attached" snapbd detach /dev/nbd0
  snapbd status --json > "$WORK/status.json"
  grep -q '"attachments" : \[ \]' "$WORK/status.json" || fail "status still lists attachments"
  say "mounted detach refused; after umount both detached (flush, disconnect), devices released, status lists none"
}

e2fsck_both() {
  must snapbd attach vol0 /dev/nbd0
  must snapbd attach vol0@s1 /dev/nbd1
  must e2fsck -fn /dev/nbd0
  must e2fsck -fn /dev/nbd1
  say "e2fsck -fn clean on vol0 (/dev/nbd0) and vol0@s1 (/dev/nbd1)"
}

shutdown_detaches() {
  attached /dev/nbd0 && attached /dev/nbd1 || fail "the devices are not attached before the stop"
  stop_server
  attached /dev/nbd0 && fail "/dev/nbd0 still connected after the server stopped"
  attached /dev/nbd1 && fail "/dev/nbd1 still connected after the server stopped"
  grep -q 'detached vol0 from /dev/nbd0 (server stopping; flushed)' "$SERVER_LOG" || fail "no clean detach of /dev/nbd0 in the log"
  grep -q 'detached vol0@s1 from /dev/nbd1 (server stopping' "$SERVER_LOG" || fail "no clean detach of /dev/nbd1 in the log"
  tail -1 "$SERVER_LOG" | grep -q 'volumes closed cleanly' || fail "the server did not close its volumes cleanly: $(tail -3 "$SERVER_LOG")"
  say "SIGTERM: server flushed and disconnected /dev/nbd0 and /dev/nbd1, then closed its volumes cleanly"
}

restart_persist() {
  cat >> "$CONF" <<EOF
attach = vol0 /dev/nbd0
attach = vol0@s1 /dev/nbd1 timeout=60
EOF
  # This start takes the ioctl fallback, so that both ways to set a device up run against the real driver.
  SNAPBD_NBD_INTERFACE=ioctl start_server
  attached /dev/nbd0 || fail "/dev/nbd0 not attached from the config file"
  attached /dev/nbd1 || fail "/dev/nbd1 not attached from the config file"
  snapbd status --json > "$WORK/status.json"
  grep -q "\"origin\" : \"$CONF:5\"" "$WORK/status.json" || fail "status does not show the config origin: $(cat "$WORK/status.json")"
  grep -q '"kernelInterface" : "ioctl"' "$WORK/status.json" || fail "SNAPBD_NBD_INTERFACE=ioctl: status does not say ioctl: $(cat "$WORK/status.json")"
  do_it_threads || fail "no DO_IT thread for the ioctl attachments"
  must mount /dev/nbd0 /mnt/live
  must mount -o ro,noload /dev/nbd1 /mnt/snap
  check_manifest /mnt/live "$WORK/new.manifest" || fail "live data lost across the restart"
  check_manifest /mnt/snap "$WORK/old.manifest" || fail "snapshot data lost across the restart"
  must umount /mnt/snap
  must umount /mnt/live
  must snapbd detach /dev/nbd1
  must snapbd detach /dev/nbd0
  say "restarted (ioctl fallback) with 'attach =' lines: both devices attached at start, live and snapshot checksums intact"
}

nbd_client_unix() {
  must snapbd volume create vol1 --size 128M --save-size 64M
  must timeout 120 nbd-client -unix "$SOCK" /dev/nbd2 -N vol1
  [ "$(sectors /dev/nbd2)" -eq $((128 << 11)) ] || fail "/dev/nbd2 has $(sectors /dev/nbd2) sectors"
  must mkfs.ext4 -q -F /dev/nbd2
  must mount /dev/nbd2 /mnt/c
  make_tree /mnt/c
  manifest /mnt/c > "$WORK/c.manifest"
  must sync
  must umount /mnt/c
  must timeout 120 nbd-client -d /dev/nbd2
  for _ in $(seq 1 100); do attached /dev/nbd2 || break; sleep 0.1; done
  must timeout 120 nbd-client -unix "$SOCK" /dev/nbd2 -N vol1
  must mount /dev/nbd2 /mnt/c
  check_manifest /mnt/c "$WORK/c.manifest" || fail "checksums differ after reconnecting"
  must umount /mnt/c
  must timeout 120 nbd-client -d /dev/nbd2
  say "nbd-client -unix $SOCK -N vol1: mkfs, mount, tree, sync, disconnect, reconnect: checksums intact"
}

nbd_client_tcp_multiconn() {
  must timeout 120 nbd-client 127.0.0.1 $PORT /dev/nbd3 -N vol1 -C 4
  # (blk-mq caps the hardware queues at the CPU count, 1 here: count the connections on the server instead)
  conns=$(snapbd status --json | awk -F': ' '/"name" : "vol1"/ { f = 1 } f && /"connections"/ { gsub(/[ ,]/, "", $2); print $2; exit }')
  [ "$conns" = 4 ] || fail "the server sees $conns connections to vol1, want 4"
  must mount /dev/nbd3 /mnt/c
  check_manifest /mnt/c "$WORK/c.manifest" || fail "checksums differ over TCP"
  must timeout 300 fio --name=multiconn --directory=/mnt/c --size=16M --rw=randwrite --bs=4k --ioengine=libaio \
    --iodepth=16 --direct=1 --verify=crc32c --verify_fatal=1 --numjobs=2 --output="$WORK/fio-mc.txt"
  must umount /mnt/c
  must e2fsck -fn /dev/nbd3
  must timeout 120 nbd-client -d /dev/nbd3
  say "nbd-client 127.0.0.1 $PORT -N vol1 -C 4: 4 connections, checksums intact, fio verify on ext4 ok, e2fsck clean"
}

server_stop() {
  stop_server
  tail -1 "$SERVER_LOG" | grep -q 'volumes closed cleanly' || fail "the server did not stop cleanly: $(tail -3 "$SERVER_LOG")"
  say "server stopped cleanly"
}

# soak-churn: the kernel part of the soak (benchmarks/soak-guest.sh, what `benchmarks/soak.sh --kernel` runs in a
# boot of its own) in a short form inside this boot, once the devices are free: its own server, fio --verify on
# a volume attached to /dev/nbdN while snapshots are attached read-only, read whole, detached and deleted.
# Self-contained: needs only ROOT, SNAPBD_JAR, OUT, WORK and the step runner.
soak_churn() {
  local out="$OUT/soak" rc=0
  echo "+ benchmarks/soak-guest.sh --out $out --duration 40 --size 48M --pause 0 --json"
  timeout 900 bash "$ROOT/benchmarks/soak-guest.sh" --out "$out" --jar "$SNAPBD_JAR" --duration 40 --size 48M --pause 0 \
    --json >"$WORK/soak.json" || rc=$?
  cat "$out/report.txt" 2>/dev/null
  [ -s "$WORK/soak.json" ] || fail "soak-guest.sh wrote no summary (exit $rc); see $out/"
  # The report checks more (leaks, fsck, server log); these are the soak's point, named one by one.
  python3 - "$WORK/soak.json" "$rc" <<'PY' || fail "$(tail -1 "$WORK/soak-check.txt")"
import json, sys
s = json.load(open(sys.argv[1])); rc = int(sys.argv[2])
out = open(sys.argv[1].replace("soak.json", "soak-check.txt"), "w")
f, c = s["fio"], s["churn"]
bad = []
if f.get("verifyErrors") != 0: bad.append(f"fio verify errors: {f.get('verifyErrors')}")
if not f.get("writes") or not f.get("reads"): bad.append(f"fio did no I/O: {f}")
if c.get("attachDetachCycles", 0) < 1: bad.append(f"no attach/detach cycle completed: {c.get('steps')}")
if s.get("kernelIoErrors") != 0: bad.append(f"kernel I/O errors in dmesg: {s.get('kernelIoErrors')}")
if s["server"]["errors"] != 0: bad.append(f"server errors: {s['server']['errors']}")
if not s["ok"] or rc != 0: bad.append(f"soak-guest.sh exit {rc}: " + "; ".join(s["violations"][:5]))
msg = "; ".join(bad) if bad else (
    f"{c['attachDetachCycles']} attach/detach cycles in {c['cycles']} churn cycles, fio {f['reads']} reads / {f['writes']} writes"
    f" / {f['trims']} trims / {f['flushes']} flushes, 0 verify errors, 0 kernel I/O errors, 0 server errors, fsck clean")
print(msg); print(msg, file=out)
sys.exit(1 if bad else 0)
PY
}

step boot boot
step server-start server_start
step attach-errors attach_errors
step attach attach_vol0
step mkfs-mount-tree mkfs_mount_tree
step snapshot-attach-ro snapshot_attach_ro
step snapshot-isolation snapshot_isolation
step fstrim-holes fstrim_holes
step fio-verify fio_verify
step detach detach_all
step e2fsck e2fsck_both
step shutdown-detaches shutdown_detaches
step restart-persist restart_persist
step nbd-client-unix nbd_client_unix
step nbd-client-tcp-multiconn nbd_client_tcp_multiconn
step server-stop server_stop
step soak-churn soak_churn
# Leave nothing behind if a step failed half-way.
umount /mnt/c /mnt/snap /mnt/live 2>/dev/null
alive "$(server_pid)" && kill -TERM "$(server_pid)"
for _ in $(seq 1 120); do alive "$(server_pid)" || break; sleep 0.5; done
echo "END" >> "$RESULTS"
exit 0
