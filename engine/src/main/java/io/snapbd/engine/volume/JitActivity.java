package io.snapbd.engine.volume;

import java.lang.management.CompilationMXBean;
import java.lang.management.ManagementFactory;

/**
 * How busy the JIT compiler is, from the JVM's accumulated compilation time. The warm-up uses it to know when
 * the copy-on-write path is compiled: on a machine with few CPUs, compiling beside the first clients costs
 * them the CPU their requests need.
 */
final class JitActivity {

    private static final CompilationMXBean COMPILER = ManagementFactory.getCompilationMXBean();
    private static final boolean MEASURED = COMPILER != null && COMPILER.isCompilationTimeMonitoringSupported();
    /** The JIT counts as quiet after this long without compiling. */
    private static final long QUIET_NANOS = 200_000_000L;
    private static final long POLL_MILLIS = 20;

    private JitActivity() {
    }

    /** Milliseconds the JIT has spent compiling since the start; 0 where the JVM does not say. */
    static long compileMillis() {
        return MEASURED ? COMPILER.getTotalCompilationTime() : 0;
    }

    /**
     * Waits until the JIT has compiled nothing for 200 ms, or until {@code deadline} (a {@link System#nanoTime}).
     * Returns at once where the JVM does not measure compilation time.
     */
    static void awaitQuiet(long deadline) {
        if (!MEASURED) {
            return;
        }
        long last = compileMillis();
        long quietSince = System.nanoTime();
        while (System.nanoTime() - quietSince < QUIET_NANOS && System.nanoTime() - deadline < 0) {
            try {
                Thread.sleep(POLL_MILLIS);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                return;
            }
            long now = compileMillis();
            if (now != last) {
                last = now;
                quietSince = System.nanoTime();
            }
        }
    }
}
