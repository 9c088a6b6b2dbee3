package io.snapbd.engine.io;

import java.io.IOException;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Batches durability work: a caller whose changes are already in the page cache calls {@link #sync}; if a
 * force that began after the caller arrived has completed meanwhile, the caller is covered and returns at
 * once, else it runs one force for everybody waiting. N concurrent callers cost one or two forces, not N.
 */
public final class GroupCommit {

    @FunctionalInterface
    public interface Force {
        void run() throws IOException;
    }

    private final AtomicLong starts = new AtomicLong();
    private final Object lock = new Object();
    private volatile long completedThrough;
    private final AtomicLong forces = new AtomicLong();

    public void sync(Force force) throws IOException {
        long arrival = starts.get();
        synchronized (lock) {
            if (completedThrough > arrival) {
                return;
            }
            long mine = starts.incrementAndGet();
            force.run();
            forces.incrementAndGet();
            completedThrough = mine;
        }
    }

    /** Number of forces actually run (for statistics and tests). */
    public long forces() {
        return forces.get();
    }
}
