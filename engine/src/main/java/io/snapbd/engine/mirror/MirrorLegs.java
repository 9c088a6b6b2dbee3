package io.snapbd.engine.mirror;

import java.io.IOException;
import java.nio.file.Path;
import java.util.UUID;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * The legs of one mirrored volume and their shared failure state, which the write path ({@link MirrorWritePath}),
 * reconciliation ({@link MirrorReconcile}) and the open ({@link MirrorOpening}) all change: which legs are
 * degraded ({@link DegradedLegs}), whether leg 0 failed (the volume then refuses changes until a reconciliation
 * succeeds), and why each leg failed.
 */
final class MirrorLegs {

    final Path dir;
    final UUID owner;
    final long size;
    /** Replaced (never changed in place) by an online leg change, while the write gate is paused. */
    volatile Leg[] legs;
    /** Degraded legs: while any, changes keep their entries live on the current legs (docs/mirrors.md). */
    final DegradedLegs degraded;
    /** Legs degraded now ({@link DegradedLegs#stale}). */
    final AtomicInteger staleLegs;
    /** A change failed on leg 0 (or a leg could not be left behind): changes are refused until a reconciliation. */
    volatile boolean failed;

    MirrorLegs(Path dir, UUID owner, long size, Leg[] legs) {
        this.dir = dir;
        this.owner = owner;
        this.size = size;
        this.legs = legs;
        this.degraded = new DegradedLegs(dir, owner, size, this);
        this.staleLegs = degraded.stale;
    }

    static String why(Leg l, String what, Exception e) {
        return "mirror leg " + l.index + " (" + l.uri + "): " + what + " failed: " + e.getMessage();
    }

    /**
     * Leaves extra leg {@code l} behind ({@link DegradedLegs#leaveBehind}). Returns null, or, for leg 0 or when
     * the leg's region map cannot be made, the error that fails the change (the volume then refuses changes).
     */
    IOException degrade(Leg l, String why) {
        if (l.joining) {
            // a leg an online add is filling: it is dropped (the add fails), nothing of it is listed or recorded
            if (l.failure == null) {
                l.failure = why;
            }
            l.stale = true;
            return null;
        }
        IOException x = l.index == 0
                ? new IOException(why + "; the change is not complete on every leg (the volume refuses changes until"
                        + " 'snapbd mirror reconcile' succeeds or it is reopened)")
                : degraded.leaveBehind(l, why);
        if (x != null) {
            failed = true;
            if (l.failure == null) {
                l.failure = why;
            }
        }
        return x;
    }

    /** Marks leg {@code l} failed (an I/O error, or any other failure of its implementation) and says why. */
    IOException fail(Leg l, String what, Exception e) {
        String why = why(l, what, e);
        if (l.failure == null) {
            l.failure = why;
        }
        failed = true;
        return new IOException(why + "; the change is not complete on every leg (the volume refuses changes until"
                + " 'snapbd mirror reconcile' succeeds or it is reopened)", e);
    }

    /** The error a change gets while the volume refuses changes. */
    IOException failure() {
        for (Leg l : legs) {
            if (l.failure != null && !l.stale) {
                return new IOException(l.failure + "; the volume refuses changes until 'snapbd mirror reconcile'"
                        + " succeeds or it is reopened");
            }
        }
        return new IOException("a mirror leg failed");
    }

    /** Closes every leg's forcer, handles and region map; throws the first failure after trying them all. */
    void close() throws IOException {
        IOException first = null;
        for (Leg l : legs) {
            if (l.forcer != null) {
                l.forcer.close();
            }
            try {
                if (l.leg != null) {
                    l.leg.close();
                }
                if (l.map != null) {
                    l.map.close();
                }
            } catch (IOException e) {
                first = first == null ? e : first;
            }
        }
        if (first != null) {
            throw first;
        }
    }
}
