package io.snapbd.server.kernel;

import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;
import org.junit.jupiter.api.Timeout;

import java.time.Duration;
import java.util.List;
import java.util.concurrent.Callable;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;

/**
 * Issue 28 against the real nbd driver inside User-Mode Linux ({@code kernel/restart-steps.sh}, run like
 * {@link KernelIT}): ext4 on a netlink-attached /dev/nbd0 stays mounted while fio --verify writes and the server is
 * killed with SIGKILL, then killed twice in a row under a FLUSH-heavy fio (an fsync after every write) with the
 * snapshot vol0@s1 attached read-only on /dev/nbd1, then stopped with the keep-devices marker; each new server
 * reconnects the devices
 * (NBD_CMD_RECONFIGURE) before it reports ready; fio sees no error, the kernel log no I/O error, e2fsck is clean.
 * A stop for good releases the device and drops its record; a server down past a short dead-connection timeout
 * lets I/O errors reach the file system, and the next start does not resurrect the device.
 * Output in {@code nbd-server/target/kernel-restart-it/}; run alone with
 * {@code mvn -B -pl nbd-server verify -Dit.test=KernelRestartIT}.
 */
@UmlGuest(KernelRestartIT.Guest.class)
class KernelRestartIT {

    static final List<String> STEPS = List.of("setup", "kill9-restart", "kill9-twice", "keep-restart", "e2fsck", "stop-for-good", "given-up");

    /** The guest this class checks (run in the background by {@link GuestRuns}). */
    static final class Guest implements Callable<KernelIT.Outcome> {
        @Override
        public KernelIT.Outcome call() throws Exception {
            return KernelIT.boot("KernelRestartIT", "kernel/restart-steps.sh", "kernel-restart-it", Duration.ofMinutes(40));
        }
    }

    // Bounded by the UML run itself; this class may wait for the guests before it (GuestRuns runs them in turn).
    @Timeout(value = 85, unit = TimeUnit.MINUTES)
    @TestFactory
    Stream<DynamicTest> restartScenario() throws Exception {
        return KernelIT.steps(GuestRuns.outcome(KernelRestartIT.class), STEPS);
    }
}
