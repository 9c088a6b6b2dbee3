# PID 1 of User-Mode Linux until it execs systemd (appended to the generated init.sh by uml-systemd.sh,
# which defines OUT, SCRIPT and ARGS above). The root is the host's, read-only.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
fatal() {
  echo "uml-systemd-init: $*"
  echo "init: $*" > "$OUT/init-failed" 2>/dev/null
  busybox poweroff -f
  sleep 10
}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
modules="/usr/lib/uml/modules/$(uname -r)/kernel"
busybox insmod "$modules/fs/overlayfs/overlay.ko" || fatal "cannot load $modules/fs/overlayfs/overlay.ko"
# nbd before systemd starts, so udev sees nbd0..3 at its trigger and DeviceAllow=block-nbd resolves.
busybox insmod "$modules/drivers/block/nbd.ko" nbds_max=4 || fatal "cannot load $modules/drivers/block/nbd.ko"

# The overlay: host root (read-only) below, guest memory above. /media is an empty directory on Debian.
base=/media
mount -t tmpfs -o mode=755,size=80% tmpfs "$base" || fatal "cannot mount a tmpfs on $base"
mkdir -p "$base/upper" "$base/work" "$base/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$base/upper,workdir=$base/work" "$base/root" \
  || fatal "cannot mount the overlay (lowerdir=/ on hostfs)"
root="$base/root"
# The only read-write path to the host: the output directory.
mount -t hostfs none "$root$OUT" -o "$OUT" || fatal "cannot mount $OUT read-write in the guest"

# The test, as a unit of the guest's systemd. The script's arguments are quoted for systemd's
# command line (no spaces expected in paths; quotes keep them as single words anyway).
args=""
for a in "${ARGS[@]}"; do args="$args \"$a\""; done
mkdir -p "$root/etc/systemd/system"
cat > "$root/etc/systemd/system/snapbd-uml-test.target" <<EOT
[Unit]
Description=snapbd systemd integration test
Wants=snapbd-uml-test.service
EOT
cat > "$root/etc/systemd/system/snapbd-uml-test.service" <<EOT
[Unit]
Description=snapbd systemd integration test steps
After=basic.target
SuccessAction=poweroff
FailureAction=poweroff

[Service]
Type=oneshot
Environment=OUT=$OUT PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C
ExecStart=/bin/bash "$SCRIPT"$args
ExecStopPost=/bin/sh -c 'echo "\$SERVICE_RESULT" > "$OUT/unit.result"'
StandardOutput=append:$OUT/guest-script.log
StandardError=append:$OUT/guest-script.log
TimeoutStartSec=40min
EOT
# A real host has no policy-rc.d; this container image's one forbids every service action in
# maintainer scripts (deb-systemd-invoke). Removed in the overlay only (a whiteout), not on the host.
rm -f "$root/usr/sbin/policy-rc.d"
# Keep the machine quiet and fast: no getty, no network configuration, a UTC clock.
ln -sf /dev/null "$root/etc/systemd/system/getty@.service"
ln -sf /dev/null "$root/etc/systemd/system/serial-getty@.service"
ln -sf /dev/null "$root/etc/systemd/system/systemd-timesyncd.service"
ln -sf /dev/null "$root/etc/systemd/system/systemd-networkd.service"
# Debian's tmpfiles.d/tmp.conf empties /tmp at boot: in the overlay that would hide a checkout (and
# this test's files) living under the host's /tmp. Mask it in the guest only.
mkdir -p "$root/etc/tmpfiles.d"
ln -sf /dev/null "$root/etc/tmpfiles.d/tmp.conf"
[ -s "$root/etc/machine-id" ] || echo 5e1f0c0ffee0000000000000000000ab > "$root/etc/machine-id"

umount /sys /proc
exec chroot "$root" /lib/systemd/systemd --system --unit=snapbd-uml-test.target
fatal "cannot exec systemd"
