package io.snapbd.server.kernel;

import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Timeout;

import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;

import java.time.Duration;
import java.util.List;
import java.util.stream.Stream;

/**
 * A mirrored volume on the real kernel (issue 24, docs/mirrors.md): inside User-Mode Linux, a volume with a file leg
 * in another directory is attached as {@code /dev/nbd0}, gets ext4 and a tree of checksummed files (synced), then
 * snapbd is killed with SIGKILL while fio writes through the file system; the device is released, snapbd restarts
 * and reconciles the legs before serving (the legs are compared with sha256 before any client writes), the volume is
 * attached again, the journal replays at mount, the files verify, {@code e2fsck -fn} is clean, and after a clean
 * stop both legs hash the same over the volume and fsck is clean. The scenario is
 * {@code kernel/kernel-mirror-steps.sh}, run like {@link KernelIT}'s (same prerequisites; output in
 * {@code nbd-server/target/kernel-mirror-it/}). Run it alone with
 * {@code mvn -B -pl nbd-server verify -Dit.test=KernelMirrorIT}.
 */
class KernelMirrorIT {

    static final List<String> STEPS = List.of("boot", "create-serve-attach", "mkfs-mount-write", "kill-under-load",
            "restart-reconcile", "reattach-verify", "stop-legs-identical");

    // Bounded by the UML run itself (scenario); the suite's 10 min default is too short on a loaded machine.
    @Timeout(value = 45, unit = TimeUnit.MINUTES)
    @TestFactory
    Stream<DynamicTest> mirroredVolumeSurvivesKill9UnderExt4() throws Exception {
        return KernelIT.scenario("KernelMirrorIT", "kernel/kernel-mirror-steps.sh", "kernel-mirror-it", STEPS, Duration.ofMinutes(20));
    }
}
