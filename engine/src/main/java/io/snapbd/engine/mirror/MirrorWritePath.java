package io.snapbd.engine.mirror;

import io.snapbd.engine.BlockDevice;
import io.snapbd.engine.io.WriteGate;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * The tagged write path of a {@link MirrorSet} (docs/mirrors.md, "Write order"): {@link #begin} (tag, ENTRY durable
 * on every current leg by group commit, range lock), {@link #end} (copy the changed range from leg 0 to the other
 * legs, force each leg's data, DONE on each) and the per-session RETIRE batches; an extra leg that fails on the
 * way is degraded, a failure of leg 0 fails the change. Every change of the volume, and only those, pass the
 * {@link WriteGate} here, which reconciliation and restore pause. Allocates nothing per change and takes no
 * global lock: the op ({@link MirrorOp}) is reused per session and overlapping changes serialise on their
 * range's stripes only.
 */
final class MirrorWritePath {

    /** Tags per RETIRE batch (per session). */
    static final int RETIRE_BATCH = 32;

    private final MirrorLegs set;
    private final AtomicInteger staleLegs;
    private final DegradedLegs degraded;
    private final TagSource tags;
    private final RangeLocks locks = new RangeLocks();
    final WriteGate gate = new WriteGate(30_000);

    MirrorWritePath(MirrorLegs set, TagSource tags) {
        this.set = set;
        this.staleLegs = set.staleLegs;
        this.degraded = set.degraded;
        this.tags = tags;
    }

    /** A reusable op for one session's changes. */
    MirrorOp newOp() {
        return new MirrorOp(this, gate, MirrorConfig.MAX_EXTRA_LEGS + 1);
    }

    /**
     * Step 1 of a change of [offset, offset+length): tag, ENTRY durable on every current leg (group commit), range
     * lock. With {@code inUseOnly} (TRIM, WRITE_ZEROES, discards) only the blocks of the range {@code local} reports
     * in use now are copied to the other legs at {@link #end} (the rest is zero on every leg already: "clear bit ⇒
     * zero data"); else the whole range is. Every successful begin must be followed by {@link #end} or
     * {@link #abort}. An extra leg that fails here is degraded and the change goes on without it.
     */
    void begin(MirrorOp op, long offset, long length, BlockDevice local, boolean inUseOnly)
            throws IOException {
        Leg[] legs = set.legs;      // the same until this change's end: legs change only while the gate is paused
        if (!op.bypass) {
            gate.enter(op.slot);
            op.inGate = true;
        }
        try {
            if (set.failed) {
                throw set.failure();
            }
            long tag = tags.next();
            op.tag = tag;
            op.offset = offset;
            op.length = length;
            for (int i = 0; i < legs.length; i++) {
                Leg l = legs[i];
                op.tickets[i] = 0;
                if (l.stale) {
                    continue;
                }
                long t0 = System.nanoTime();
                try {
                    op.tickets[i] = append(l, tag, offset, length);
                } catch (IOException | RuntimeException e) {
                    rethrowUnlessDegraded(l, "its tag table", e);
                    continue;
                }
                l.depth.incrementAndGet();
                op.legNanos[i] = System.nanoTime() - t0;
            }
            // every leg's table forced at the same time: the extra legs' on their forcers, leg 0's here
            long t0 = System.nanoTime();
            for (int i = 1; i < legs.length; i++) {
                if (op.tickets[i] != 0 && !legs[i].stale) {
                    legs[i].forcer.request(LegForcer.TABLE, op.tickets[i]);
                }
            }
            try {
                legs[0].table.commit(op.tickets[0]);
            } catch (IOException | RuntimeException e) {
                throw set.fail(legs[0], "its tag table", e);
            }
            op.legNanos[0] += System.nanoTime() - t0;
            for (int i = 1; i < legs.length; i++) {
                Leg l = legs[i];
                if (op.tickets[i] == 0 || l.stale) {
                    continue;
                }
                try {
                    l.forcer.await(LegForcer.TABLE, op.tickets[i]);
                } catch (IOException | RuntimeException e) {
                    rethrowUnlessDegraded(l, "its tag table", e);
                    continue;
                }
                op.legNanos[i] += System.nanoTime() - t0;
            }
            locks.lock(op, offset, length);
            op.nruns = 0;
            if (inUseOnly) {
                local.extents(offset, length, op);
            } else {
                op.addRun(offset, length);
            }
        } catch (IOException | RuntimeException e) {
            release(op);
            throw e;
        }
    }

    /** Appends the ENTRY on a current leg; a table full while a leg is degraded folds into the region maps first. */
    private long append(Leg l, long tag, long offset, long length) throws IOException {
        Leg[] legs = set.legs;
        try {
            return l.table.append(tag, offset, length);
        } catch (TagTable.TableFullException e) {
            if (staleLegs.get() == 0) {
                throw e;
            }
            try {
                degraded.fold(true);
            } catch (IOException | RuntimeException f) {
                throw set.fail(legs[0], "a degraded leg's region map", f);
            }
            return l.table.append(tag, offset, length);
        }
    }

    /**
     * Steps 2–4 after the volume changed leg 0: copies the op's ranges from leg 0 (read through {@code local} on
     * session {@code s}) to every other current leg, forces each leg's data, appends DONE on each. Returns when
     * every current leg completed the change; an extra leg that fails is degraded (the change stays recorded for
     * it); a failure of leg 0 throws.
     */
    void end(MirrorOp op, BlockDevice.Session s, BlockDevice local) throws IOException {
        Leg[] legs = set.legs;
        try {
            if (op.buf == null) {
                op.buf = ByteBuffer.allocateDirect(MirrorSet.COPY_BUFFER);
            }
            ByteBuffer buf = op.buf;
            for (int r = 0; r < op.nruns; r++) {
                long pos = op.runs[2 * r];
                long end = pos + op.runs[2 * r + 1];
                while (pos < end) {
                    int n = (int) Math.min(buf.capacity(), end - pos);
                    buf.clear();
                    local.read(s, pos, n, op);
                    buf.flip();
                    for (int i = 1; i < legs.length; i++) {
                        Leg l = legs[i];
                        if (op.tickets[i] == 0 || l.stale) {
                            continue;
                        }
                        long t0 = System.nanoTime();
                        buf.position(0);
                        try {
                            l.leg.data().write(buf, pos);
                        } catch (IOException | RuntimeException e) {
                            rethrowUnlessDegraded(l, "its data", e);
                        }
                        op.legNanos[i] += System.nanoTime() - t0;
                    }
                    pos += n;
                }
            }
            locks.unlock(op);
            op.one[0] = op.tag;
            // every leg's data forced at the same time (group commit per leg), then DONE on each
            long t0 = System.nanoTime();
            for (int i = 1; i < legs.length; i++) {
                Leg l = legs[i];
                if (op.tickets[i] == 0 || l.stale) {
                    continue;
                }
                op.tickets[i] = l.dataWrites.incrementAndGet();    // counted after this op's write completed
                l.forcer.request(LegForcer.DATA, op.tickets[i]);
            }
            try {
                local.forceRange(op.offset, op.length);
                legs[0].table.markDone(op.one, 1);
            } catch (IOException | RuntimeException e) {
                throw set.fail(legs[0], "the volume's data", e);
            }
            legs[0].timed(op.legNanos[0] + System.nanoTime() - t0);
            for (int i = 1; i < legs.length; i++) {
                Leg l = legs[i];
                if (op.tickets[i] == 0 || l.stale) {
                    continue;
                }
                try {
                    l.forcer.await(LegForcer.DATA, op.tickets[i]);
                    l.table.markDone(op.one, 1);
                } catch (IOException | RuntimeException e) {
                    rethrowUnlessDegraded(l, "its data", e);
                    continue;
                }
                l.timed(op.legNanos[i] + System.nanoTime() - t0);
            }
            if (staleLegs.get() > 0) {
                // a degraded leg missed this change: its entry stays live on the current legs (the record of it)
                try {
                    degraded.fold(false);
                } catch (IOException | RuntimeException e) {
                    throw set.fail(legs[0], "a degraded leg's region map", e);
                }
                return;
            }
            op.pending[op.npending++] = op.tag;
            if (op.npending == RETIRE_BATCH) {
                retirePending(op);
            }
        } finally {
            release(op);
        }
    }

    /** Ends a change that never touched leg 0 (its prepare failed): nothing differs, the tag is retired. */
    void abort(MirrorOp op) {
        op.pending[op.npending++] = op.tag;
        try {
            if (op.npending == RETIRE_BATCH) {
                retirePending(op);
            }
        } catch (IOException ignored) {
            // the leg is marked failed; the entry costs a copy at the next reconciliation
        } finally {
            release(op);
        }
    }

    /**
     * Retires the session's batch on every leg; while a leg is degraded, nothing is retired (the entries stay the
     * record of what it missed; at worst an unneeded copy at the resync).
     */
    void retirePending(MirrorOp op) throws IOException {
        int n = op.npending;
        if (n == 0) {
            return;
        }
        op.npending = 0;
        if (staleLegs.get() > 0) {
            return;
        }
        Leg[] legs = set.legs;
        IOException first = null;
        for (Leg l : legs) {
            if (l.stale) {
                continue;
            }
            try {
                l.table.retire(op.pending, n);
                l.depth.addAndGet(-n);
            } catch (IOException | RuntimeException e) {
                if (l.index == 0) {
                    IOException f = set.fail(l, "its tag table", e);
                    first = first == null ? f : first;
                } else {
                    IOException f = set.degrade(l, MirrorLegs.why(l, "its tag table", e));
                    first = first == null ? f : first;
                }
            }
        }
        if (first != null) {
            throw first;
        }
    }

    private void release(MirrorOp op) {
        locks.unlock(op);
        if (op.inGate) {
            op.inGate = false;
            gate.exit(op.slot);
        }
    }

    /** An extra leg failed: degrade it (the change goes on without it), or throw when that is not possible. */
    private void rethrowUnlessDegraded(Leg l, String what, Exception e) throws IOException {
        IOException x = set.degrade(l, MirrorLegs.why(l, what, e));
        if (x != null) {
            x.addSuppressed(e);
            throw x;
        }
    }

    /**
     * Copies [pos, pos+n) from leg 0 (read through {@code local}) to leg {@code to} as one change would: inside the
     * write gate and under the range lock, so a concurrent change of the range reaches {@code to} wholly before or
     * wholly after this copy (an online {@code mirror add}'s full copy).
     */
    void copyRange(MirrorOp op, Leg to, BlockDevice.Session s, BlockDevice local, long pos, int n) throws IOException {
        gate.enter(op.slot);
        op.inGate = true;
        try {
            locks.lock(op, pos, n);
            if (op.buf == null) {
                op.buf = ByteBuffer.allocateDirect(MirrorSet.COPY_BUFFER);
            }
            ByteBuffer buf = op.buf;
            buf.clear().limit(n);
            local.read(s, pos, n, op);
            buf.flip();
            to.leg.data().write(buf, pos);
        } finally {
            release(op);
        }
    }

    /** Holds every new change back and waits for those in flight (a restore); false on timeout. */
    boolean pause() {
        return gate.pause();
    }

    void resume() {
        gate.resume();
    }
}
