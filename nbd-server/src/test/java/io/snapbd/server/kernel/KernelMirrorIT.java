package io.snapbd.server.kernel;

import java.util.concurrent.Callable;
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
@UmlGuest(KernelMirrorIT.Guest.class)
class KernelMirrorIT {

    static final List<String> STEPS = List.of("boot", "create-serve-attach", "mkfs-mount-write", "kill-under-load",
            "restart-reconcile", "reattach-verify", "stop-legs-identical");

    /** The guest this class checks (run in the background by {@link GuestRuns}). */
    static final class Guest implements Callable<KernelIT.Outcome> {
        @Override
        public KernelIT.Outcome call() throws Exception {
            return KernelIT.boot("KernelMirrorIT", "kernel/kernel-mirror-steps.sh", "kernel-mirror-it", Duration.ofMinutes(20));
        }
    }

    // Bounded by the UML run itself; this class may wait for the guests before it (GuestRuns runs them in turn).
    @Timeout(value = 85, unit = TimeUnit.MINUTES)
    @TestFactory
    Stream<DynamicTest> mirroredVolumeSurvivesKill9UnderExt4() throws Exception {
        return KernelIT.steps(GuestRuns.outcome(KernelMirrorIT.class), STEPS);
    }
}
