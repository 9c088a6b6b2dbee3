package io.snapbd.engine.volume;

/** What a restore is doing, for {@code status} and {@code snapshot list}. */
public final class RestoreProgress {
    private final String snapshot;
    private final boolean resumed;
    private final long startedMillis = System.currentTimeMillis();
    volatile String phase = "pausing writers";
    volatile long blocksChanged;
    volatile String error;

    RestoreProgress(String snapshot, boolean resumed) {
        this.snapshot = snapshot;
        this.resumed = resumed;
    }

    public String snapshot() {
        return snapshot;
    }

    /** True when this restore finishes one a crash interrupted. */
    public boolean resumed() {
        return resumed;
    }

    public long startedMillis() {
        return startedMillis;
    }

    /** "pausing writers", "discarding", "copying" or "flushing": where it is, or where it failed. */
    public String phase() {
        return phase;
    }

    public long blocksChanged() {
        return blocksChanged;
    }

    /** Why it failed (production is partly restored until a restore completes), or null while it runs. */
    public String error() {
        return error;
    }
}
