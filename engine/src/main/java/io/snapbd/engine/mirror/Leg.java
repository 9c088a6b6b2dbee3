package io.snapbd.engine.mirror;

import java.io.IOException;
import java.util.UUID;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.LongAdder;

/**
 * One leg of a {@link MirrorSet} as the write path sees it: its open handles and tag table, its forcing thread,
 * its figures for {@code mirror status}, and why it failed; {@link #reopen} opens a failed leg anew.
 */
final class Leg {
    final int index;
    /** Replaced only by {@link #reopen}, while no change is in flight. */
    volatile MirrorLeg leg;
    volatile TagTable table;
    /** Runs this leg's forces on its own thread (null for leg 0, whose forces run on the caller's thread). */
    final LegForcer forcer;
    /** Data writes completed on this leg: the value a data force is requested and awaited for. */
    final AtomicLong dataWrites = new AtomicLong();
    final AtomicLong depth = new AtomicLong();
    final LongAdder writes = new LongAdder();
    final LongAdder writeNanos = new LongAdder();
    final AtomicLong maxWriteNanos = new AtomicLong();
    volatile String failure;

    Leg(int index, MirrorLeg leg, TagTable table) {
        this.index = index;
        this.leg = leg;
        this.table = table;
        this.forcer = index == 0 ? null : new LegForcer("snapbd mirror leg " + index + " " + leg.uri(),
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
     * Opens this failed extra leg again (no change is in flight; see {@code MirrorSet.reopenFailed}): closes the
     * old handles, opens its URI anew, checks its size and reads its table again from the leg.
     */
    void reopen(long size, UUID owner) throws IOException {
        String uri = leg.uri();
        try {
            leg.close();
        } catch (IOException ignored) {
            // the leg failed already; its old handles are given up
        }
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
            table = TagTable.open(n.table(), owner, index);
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
