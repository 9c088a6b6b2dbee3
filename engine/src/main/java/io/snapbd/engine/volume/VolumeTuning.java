package io.snapbd.engine.volume;

/**
 * The tunable knobs of a volume's copy-on-write path, read once from {@code -Dsnapbd.*} system properties
 * ({@link #system()}) and passed to {@code Volume.open}; tests and the warm-up build their own.
 *
 * @param overlayBytes            overlay capacity, {@code -Dsnapbd.overlay.mib} (default 128 MiB per volume). The
 *                                arena is allocated in 1 MiB pieces as the number of blocks staged at once grows,
 *                                so an idle or snapshot-less volume costs nothing.
 * @param overlayPreallocateBytes arena allocated when a snapshot is taken, before its first writes stage blocks,
 *                                {@code -Dsnapbd.overlay.preallocate.mib} (default 16 MiB, at most the capacity;
 *                                about what a first batch after a snapshot stages while its force runs). Kept,
 *                                like the rest of the arena, until the volume is closed.
 * @param overlayBatchNanos       how long the committer may let a batch of staged writes build up before forcing
 *                                it, unless somebody waits for staged blocks (FLUSH, FUA, a rewrite, a full
 *                                overlay: then it goes at once) or a quarter of the slots are staged,
 *                                {@code -Dsnapbd.overlay.batch.micros} (default 5 ms; 0 forces at once). Under
 *                                heavy load the batch fills first; at a moderate write rate, forcing as soon as
 *                                work was seen meant two fdatasyncs every few writes and clients saw stalls of a
 *                                force's length (benchmarks/RESULTS.md run 6). Acknowledged writes do not wait
 *                                for it.
 * @param committerNice           nice value of the committer thread while no writer waits for it,
 *                                {@code -Dsnapbd.committer.nice} (default 19; see {@link CommitterPriority})
 * @param committerBusyNice       nice value of the committer while writers wait for it,
 *                                {@code -Dsnapbd.committer.busy.nice} (default 0)
 */
public record VolumeTuning(long overlayBytes, long overlayPreallocateBytes, long overlayBatchNanos,
                           int committerNice, int committerBusyNice) {

    private static final VolumeTuning SYSTEM = fromSystemProperties();

    /** The knobs as the {@code -Dsnapbd.*} properties set them when this class was loaded (read once). */
    public static VolumeTuning system() {
        return SYSTEM;
    }

    /** Reads the {@code -Dsnapbd.*} properties now (defaults where unset). */
    public static VolumeTuning fromSystemProperties() {
        return new VolumeTuning(
                Long.getLong("snapbd.overlay.mib", 128L) << 20,
                Long.getLong("snapbd.overlay.preallocate.mib", 16L) << 20,
                Long.getLong("snapbd.overlay.batch.micros", 5_000L) * 1000L,
                Integer.getInteger("snapbd.committer.nice", 19),
                Integer.getInteger("snapbd.committer.busy.nice", 0));
    }

    /** These knobs with another overlay capacity and snapshot-time preallocation. */
    public VolumeTuning withOverlay(long bytes, long preallocateBytes) {
        return new VolumeTuning(bytes, preallocateBytes, overlayBatchNanos, committerNice, committerBusyNice);
    }

    /** These knobs with another committer batch time. */
    public VolumeTuning withOverlayBatchNanos(long nanos) {
        return new VolumeTuning(overlayBytes, overlayPreallocateBytes, nanos, committerNice, committerBusyNice);
    }
}
