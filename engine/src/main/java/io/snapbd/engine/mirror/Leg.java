package io.snapbd.engine.mirror;

import java.io.IOException;
import java.util.UUID;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.LongAdder;

/**
 * One leg of a {@link MirrorSet} as the write path sees it: its open handles and tag table, its forcing thread,
 * its figures for {@code mirror status}, why it failed, and whether it is degraded (stale: left behind, its missed
 * writes recorded in {@link #map} and in the current legs' tables); {@link #reopen} opens a failed leg anew.
 */
final class Leg {
    /** Its place in the leg list (0 … n−1); changes when an earlier leg is removed while the volume is open. */
    volatile int index;
    /** Joining the volume by an online {@code mirror add}: takes every change, is never read or copied from, not listed yet. */
    volatile boolean joining;
    /** The leg number its tag table and region map record ({@link MirrorConfig#id}); fixed, unlike {@link #index}. */
    final int id;
    final String uri;
    /** Replaced only by {@link #reopen}, while no change is in flight; null while an unreachable leg is not open. */
    volatile MirrorLeg leg;
    volatile TagTable table;
    /** Degraded: the leg missed changes; the write path skips it and it is never read or copied from. */
    volatile boolean stale;
    /** A degraded leg's region map ({@code legN.rmap} in the volume's directory), else null. */
    volatile LegRegionMap map;
    /** Bytes every reconciliation and resync copied into this leg since the open. */
    final AtomicLong bytesCopiedIn = new AtomicLong();
    /** Runs this leg's forces on its own thread (null for leg 0, whose forces run on the caller's thread). */
    final LegForcer forcer;
    /** Data writes completed on this leg: the value a data force is requested and awaited for. */
    final AtomicLong dataWrites = new AtomicLong();
    final AtomicLong depth = new AtomicLong();
    final LongAdder writes = new LongAdder();
    final LongAdder writeNanos = new LongAdder();
    final AtomicLong maxWriteNanos = new AtomicLong();
    volatile String failure;

    Leg(int index, int id, String uri, MirrorLeg leg, TagTable table) {
        this.index = index;
        this.id = id;
        this.uri = uri;
        this.leg = leg;
        this.table = table;
        this.forcer = index == 0 ? null : new LegForcer("snapbd mirror leg " + index + " " + uri,
                upTo -> this.table.commit(upTo), upTo -> this.leg.data().force());
    }

    void timed(long nanos) {
        writes.increment();
        writeNanos.add(nanos);
        long m = maxWriteNanos.get();
        while (nanos > m && !maxWriteNanos.compareAndSet(m, nanos)) {
            m = maxWriteNanos.get();
        }
    }

    /**
     * Opens this failed extra leg again (no change is in flight; see {@code MirrorReconcile.reopenFailed}): closes the
     * old handles, opens its URI anew, checks its size and reads its table again from the leg.
     */
    void reopen(long size, UUID owner) throws IOException {
        try {
            if (leg != null) {
                leg.close();
            }
        } catch (IOException ignored) {
            // the leg failed already; its old handles are given up
        }
        leg = null;
        MirrorLeg n;
        try {
            n = LegOpener.installed().open(uri, size);
        } catch (IOException e) {
            throw new IOException("mirror leg " + index + " (" + uri + ") cannot be opened again: "
                    + e.getMessage(), e);
        }
        try {
            if (n.data().size() < size) {
                throw new IOException("mirror leg " + index + " (" + uri + ") holds " + n.data().size()
                        + " bytes, less than the volume's " + size);
            }
            table = TagTable.open(n.table(), owner, id);
            leg = n;
            forcer.reset();
        } catch (IOException | RuntimeException e) {
            try {
                n.close();
            } catch (IOException s) {
                e.addSuppressed(s);
            }
            throw e;
        }
    }
}
