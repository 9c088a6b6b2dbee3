package io.snapbd.engine.volume;

import io.snapbd.engine.io.FileSpace;

import java.lang.System.Logger.Level;

/**
 * The committer's scheduling priority. While no writer waits for it, it runs at {@code idleNice} (19 by
 * default): on a machine with few CPUs a batch being filled, forced and applied must not hold a connection
 * thread back, and at nice 10 it still did (benchmarks/RESULTS.md run 8). When writers do wait for it (a
 * FLUSH, a rewrite of a staged block, an overlay a quarter full or with no room), it runs at {@code busyNice}
 * (0 by default), so a busy neighbour process cannot starve the writes that wait. Only the committer thread
 * calls it.
 */
final class CommitterPriority {

    private static final System.Logger LOG = System.getLogger(CommitterPriority.class.getName());

    private final FileSpace space;
    private final int idleNice;
    private final int busyNice;
    private final String volume;
    private int current = Integer.MIN_VALUE;    // the nice value set last; MIN_VALUE: never set
    private boolean canBoost = true;

    CommitterPriority(FileSpace space, int idleNice, int busyNice, String volume) {
        this.space = space;
        this.idleNice = idleNice;
        this.busyNice = busyNice;
        this.volume = volume;
    }

    /** Sets the priority for the next batch: {@code waitedFor} when writers are waiting for it. */
    void adjust(boolean waitedFor) {
        int wanted = waitedFor && canBoost ? busyNice : idleNice;
        if (wanted == current) {
            return;
        }
        if (space.setCurrentThreadNice(wanted)) {
            current = wanted;
        } else if (wanted == busyNice && current != Integer.MIN_VALUE) {
            // Lowering the nice value again needs CAP_SYS_NICE or RLIMIT_NICE (LimitNICE=+0 in snapbd.service).
            canBoost = false;
            LOG.log(Level.WARNING, "snapbd: volume " + volume + ": cannot set the committer back to nice " + busyNice
                    + " when writers wait for it (needs CAP_SYS_NICE or RLIMIT_NICE >= " + (20 - busyNice)
                    + "); it stays at nice " + current + ", so on a busy machine such writers wait longer");
        } else if (current == Integer.MIN_VALUE) {
            current = wanted;       // cannot set priorities at all (pure Java): nothing to change later either
            canBoost = false;
        }
    }

    /** The nice value set last (for tests); Integer.MIN_VALUE before the first {@link #adjust}. */
    int current() {
        return current;
    }
}
