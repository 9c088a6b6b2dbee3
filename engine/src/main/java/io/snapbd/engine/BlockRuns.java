package io.snapbd.engine;

/**
 * Loops over a range of blocks count with an int, a run of at most {@link #MAX_BLOCKS} blocks at a time. C2 guards
 * a loop over a long {@code b <= last} with a loop-limit predicate; that predicate failed at a volume's first
 * copy-on-write after the start-up warm-up had compiled the loop, and the write path was recompiled while
 * clients waited.
 */
public final class BlockRuns {
    /** Blocks per run: a longer range (a TRIM of gigabytes) is visited run by run. */
    public static final int MAX_BLOCKS = 1 << 20;

    private BlockRuns() {
    }
}
