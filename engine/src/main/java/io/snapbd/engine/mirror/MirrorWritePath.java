package io.snapbd.engine.mirror;

import io.snapbd.engine.BlockDevice;
import io.snapbd.engine.io.WriteGate;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * The tagged write path of a {@link MirrorSet} (docs/mirrors.md, "Write order"): {@link #begin} (tag, ENTRY durable
 * on every current leg by group commit, range lock), {@link #end} (copy the changed range from leg 0 to the other
 * legs, then hand the tag to the {@link DataForcer}, which forces the legs' data, appends DONE and retires in
 * batches behind the answers, and at a client's FLUSH: {@link #forceAll}); an extra leg that fails on the
 * way is degraded, a failure of leg 0 fails the change; {@link #endThen} is {@code end} for a hot-path change whose
 * NBD legs' writes are sent without waiting and which completes on their replies. Every change of the volume, and only those, pass the
 * {@link WriteGate} here, which reconciliation and restore pause. Allocates nothing per change and takes no
 * global lock: the op ({@link MirrorOp}) is reused per session and only changes that touch a common 4 KiB page
 * serialise ({@link RangeLocks}).
 */
final class MirrorWritePath {

    private final MirrorLegs set;
    private final AtomicInteger staleLegs;
    private final DegradedLegs degraded;
    private final TagSource tags;
    private final RangeLocks locks = new RangeLocks();
    /** An op's ticket on a leg it is written to when it appended no ENTRY there (a hot-path change, hotEntries=none). */
    private static final long NO_ENTRY = -1;
    final HotRegions hot;
    final WriteGate gate = new WriteGate(30_000);
    final DataForcer forcer;

    MirrorWritePath(MirrorLegs set, TagSource tags) {
        this.set = set;
        this.staleLegs = set.staleLegs;
        this.degraded = set.degraded;
        this.tags = tags;
        this.hot = new HotRegions(set.size, (int) Math.min(HotRegions.DEFAULT_CAP, set.legs[0].table.halfRecords() / 4));
        this.forcer = new DataForcer(set, hot);
        forcer.holdCooling = gate::isPaused;
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
        if (!op.bypass) {
            gate.enter(op.slot);
            op.inGate = true;
        }
        // read inside the gate: the legs change only while it is paused (online mirror add/remove), so this is the
        // set end() sees too; read before entering, a change could miss a leg added meanwhile (its data never
        // reaching the new leg behind the copier)
        Leg[] legs = set.legs;
        try {
            if (set.failed) {
                throw set.failure();
            }
            boolean unforced = enterRegions(op, offset, length);
            op.hotPath = unforced;
            // hotEntries=none: a hot-path change appends nothing (its regions' entries are its record); its tickets
            // stay non-zero (NO_ENTRY) for the legs it is written to
            boolean noEntry = unforced && HotRegions.HOT_ENTRIES_NONE;
            op.noEntry = noEntry;
            // region entries first (their tags below this change's and below every later change's in the region)
            for (int h = 0; h < op.nheat; h++) {
                op.heatTags[h] = tags.next();
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
                if (noEntry) {
                    op.tickets[i] = NO_ENTRY;
                    op.legNanos[i] = 0;
                    continue;
                }
                long t0 = System.nanoTime();
                try {
                    for (int h = 0; h < op.nheat; h++) {
                        int r = op.heat[h];
                        append(l, op.heatTags[h], hot.regionStart(r), hot.regionLength(r));
                        l.depth.incrementAndGet();
                    }
                    op.tickets[i] = append(l, tag, offset, length);
                } catch (IOException | RuntimeException e) {
                    op.tickets[i] = 0;
                    rethrowUnlessDegraded(l, "its tag table", e);
                    continue;
                }
                l.depth.incrementAndGet();
                op.legNanos[i] = System.nanoTime() - t0;
            }
            if (!unforced) {
                force(op, legs);
            }
            for (int h = 0; h < op.nheat; h++) {
                hot.published(op.heat[h], op.heatTags[h]);
            }
            op.published = true;
            locks.lock(op, offset, length);
            op.nruns = 0;
            if (inUseOnly) {
                local.extents(offset, length, op);
            } else {
                op.addRun(offset, length);
            }
        } catch (IOException | RuntimeException e) {
            op.seq = 0;     // nothing changed on any leg
            release(op);
            throw e;
        }
    }

    /**
     * Whether a change of [offset, offset+length) would now take the hot path and wait for nothing slow: every region
     * hot, no record to append ({@code hotEntries=none}), no leg degraded or failed, every extra leg's writes quick
     * ({@link LegIo#quickWrites}: files), answered once written. A hint for the protocol (run it on the connection's
     * reader, not as a task): if a region cools meanwhile the change takes the strict path all the same, only slower.
     */
    boolean quick(long offset, long length) {
        return hotOnly(offset, length, false);
    }

    /**
     * Whether a change of [offset, offset+length) would now take the hot path and wait only for asynchronous legs'
     * replies ({@link LegIo#asyncWrites}: NBD legs; the others quick): {@link #endThen} then sends it to them and
     * answers it from their completions. At most {@link #ASYNC_MAX} bytes (one read of leg 0, one request per leg).
     */
    boolean async(long offset, long length) {
        return length <= ASYNC_MAX && hotOnly(offset, length, true);
    }

    /** Largest change {@link #endThen} sends asynchronously (the copy buffer's smallest size). */
    static final int ASYNC_MAX = 64 << 10;

    /** {@link #quick} ({@code async} false) or {@link #async}: hot regions, every extra leg quick or (async) asynchronous. */
    private boolean hotOnly(long offset, long length, boolean async) {
        if (ANSWER_AFTER_DATA_FORCE || !HotRegions.HOT_ENTRIES_NONE || HotRegions.FORCED_ENTRIES || !hot.enabled()
                || staleLegs.get() > 0 || set.failed) {
            return false;
        }
        Leg[] legs = set.legs;
        boolean anyAsync = false;
        for (int i = 1; i < legs.length; i++) {
            LegIo io = legs[i].leg.data();
            if (io.quickWrites()) {
                continue;
            }
            if (!async || !io.asyncWrites()) {
                return false;
            }
            anyAsync = true;
        }
        if (async && !anyAsync) {
            return false;
        }
        int r0 = hot.first(offset);
        int r1 = hot.last(offset, length);
        return r1 - r0 < HotRegions.MAX_REGIONS_PER_CHANGE && hot.allHot(r0, r1);
    }

    /**
     * Enters the change's hot regions: true when every one was hot (its ENTRY may stay unforced: the regions' entries
     * cover it); false for the strict path (its ENTRY forced), which also makes the change's cold regions hot when
     * they fit under the cap ({@code op.nheat} of them, whose region entries go with its ENTRY into the same force).
     * Strict for every change while a leg is degraded (the entries are then the record of what it missed, and must
     * be durable), with {@code -Dsnapbd.mirror.entries=forced}, for changes over more than
     * {@link HotRegions#MAX_REGIONS_PER_CHANGE} regions, and when a region is being made hot by another change (its
     * force is then shared by group commit, not skipped).
     */
    private boolean enterRegions(MirrorOp op, long offset, long length) {
        op.inRegions = false;
        op.published = false;
        op.nheat = 0;
        op.seq = 0;
        if (HotRegions.skipRegionEntriesForTest) {
            return true;
        }
        if (!hot.enabled() || HotRegions.FORCED_ENTRIES || staleLegs.get() > 0) {
            return false;
        }
        int r0 = hot.first(offset);
        int r1 = hot.last(offset, length);
        if (r1 - r0 >= HotRegions.MAX_REGIONS_PER_CHANGE) {
            return false;
        }
        op.r0 = r0;
        op.r1 = r1;
        if (hot.enterHot(r0, r1)) {
            op.inRegions = true;
            return true;
        }
        int n = hot.claim(r0, r1, op.heat);
        if (n >= 0) {
            op.inRegions = true;
            op.nheat = n;
        }
        return false;
    }

    /** Every current leg's table forced up to the op's tickets, at the same time (extra legs' on their forcers). */
    private void force(MirrorOp op, Leg[] legs) throws IOException {
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
    }

    /**
     * Leaves the op's regions: a region it was making hot and did not publish is cold again; the others get the
     * op's data-force sequence number ({@code op.seq}: 0 when it changed nothing, {@link HotRegions#SEQ_NEVER} when
     * its data force is unknown, so the region never cools before a reconciliation).
     */
    private void leaveRegions(MirrorOp op) {
        if (!op.inRegions) {
            return;
        }
        op.inRegions = false;
        for (int r = op.r0; r <= op.r1; r++) {
            boolean heated = false;
            for (int h = 0; h < op.nheat; h++) {
                heated |= op.heat[h] == r;
            }
            if (heated && !op.published) {
                hot.unclaim(r);
            } else {
                hot.exit(r, op.seq);
            }
        }
        op.nheat = 0;
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
     * Steps 3–5 after the volume changed leg 0: copies the op's ranges from leg 0 (read through {@code local} on
     * session {@code s}) to every other current leg and hands the tag to the {@link DataForcer} (data force, DONE,
     * RETIRE in a later batch). Returns when every current leg has the change written (the answer); an extra leg
     * that fails is degraded (the change stays recorded for it); a failure of leg 0 throws.
     */
    void end(MirrorOp op, BlockDevice.Session s, BlockDevice local) throws IOException {
        Leg[] legs = set.legs;
        op.seq = HotRegions.SEQ_NEVER;      // until its data force is known: its regions must not cool
        try {
            long want = Math.min(MirrorSet.COPY_BUFFER, Math.max(64 << 10, op.length));
            if (op.buf == null || op.buf.capacity() < want) {
                // grows to the session's largest change (64 KiB … 1 MiB), then reused: many sessions of small writes stay small
                op.buf = ByteBuffer.allocateDirect((int) Math.min(MirrorSet.COPY_BUFFER, Integer.highestOneBit((int) want - 1) << 1));
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
            for (int i = 0; i < legs.length; i++) {
                if (op.tickets[i] != 0 && !legs[i].stale) {
                    legs[i].timed(op.legNanos[i]);
                }
            }
            // the data force, DONE and RETIRE follow in a batch (DataForcer); by default the answer waits for it
            op.seq = op.noEntry ? forcer.addWithoutEntry(op.offset, op.length) : forcer.add(op.tag, op.offset, op.length, op.hotPath);
        } finally {
            release(op);
        }
        if (ANSWER_AFTER_DATA_FORCE) {
            forcer.forceAll();      // group commit: changes added while a batch runs share the next one
        }
    }

    /**
     * {@link #end} for a hot-path change whose asynchronous legs ({@link LegIo#asyncWrites}: NBD) are sent the change
     * without waiting: leg 0's data is read once into the op's buffer, written to the quick legs (files) here and
     * submitted to the asynchronous ones, whose requests take the bytes before returning (so the buffer is free again
     * at once, and the client's buffer is never read by a leg). The op stays in flight (range lock, regions, write
     * gate) until every leg completed it; then, on the thread that sees the last completion (an NBD leg's reply
     * reader), the change is handed to the {@link DataForcer} (it has no entry: nothing that waits) and {@code done}
     * hears of it: null, or the failure that the synchronous path would have thrown (a leg that fails is degraded as
     * there). A change that is not a single hot-path run without an entry, or too large, ends synchronously, then
     * tells {@code done}. Throws only when nothing is in flight (then {@code done} is not called).
     */
    void endThen(MirrorOp op, BlockDevice.Session s, BlockDevice local, BlockDevice.ChangeDone done) throws IOException {
        if (!op.noEntry || op.nruns != 1 || op.length > ASYNC_MAX) {
            end(op, s, local);
            done.changeDone(null);
            return;
        }
        Leg[] legs = set.legs;
        op.seq = HotRegions.SEQ_NEVER;
        op.done = done;
        op.failure = null;
        op.pending.set(1);          // the caller's own count: nothing completes the op before every leg is started
        try {
            if (op.buf == null || op.buf.capacity() < ASYNC_MAX) {
                op.buf = ByteBuffer.allocateDirect(ASYNC_MAX);
            }
            ByteBuffer buf = op.buf;
            long pos = op.runs[0];
            int n = (int) op.runs[1];
            buf.clear().limit(n);
            local.read(s, pos, n, op);
            buf.flip();
            for (int i = 1; i < legs.length; i++) {
                Leg l = legs[i];
                if (op.tickets[i] == 0 || l.stale) {
                    continue;
                }
                LegIo io = l.leg.data();
                buf.position(0);
                long t0 = System.nanoTime();
                if (!io.asyncWrites()) {
                    try {
                        io.write(buf, pos);
                    } catch (IOException | RuntimeException e) {
                        rethrowUnlessDegraded(l, "its data", e);
                    }
                    op.legNanos[i] += System.nanoTime() - t0;
                    continue;
                }
                if (op.slotOf[i] != io) {
                    op.slots[i] = io.writeSlot(op, i);      // once per op and leg: a write allocates nothing
                    op.slotOf[i] = io;
                }
                op.legStart[i] = t0;
                op.pending.incrementAndGet();
                try {
                    io.submitWrite(op.slots[i], buf, pos);
                } catch (IOException | RuntimeException e) {
                    op.pending.decrementAndGet();       // never sent: its completion will not come
                    rethrowUnlessDegraded(l, "its data", e);
                }
            }
        } catch (IOException | RuntimeException e) {
            // the writes already sent still complete the op: it ends (and answers) with this failure then
            op.failure = e instanceof IOException x ? x : new IOException(e.toString(), e);
        }
        if (op.pending.decrementAndGet() == 0) {
            finishThen(op);
        }
    }

    /** An asynchronous leg's write of the op ended ({@link LegIo.WriteDone}, on its reply reader): the last one finishes it. */
    void legWritten(MirrorOp op, int leg, IOException failure) {
        op.legNanos[leg] += System.nanoTime() - op.legStart[leg];
        if (failure != null) {
            op.legFailure[leg] = failure;
        }
        if (op.pending.decrementAndGet() == 0) {
            finishThen(op);
        }
    }

    /**
     * Every leg completed the op: a leg that failed is degraded (or fails the change, as {@link #end} would throw),
     * then the change is handed to the {@link DataForcer} without waiting (it has no entry), its range lock, regions
     * and gate released, and its {@code done} told. Runs on whichever thread saw the last completion.
     */
    private void finishThen(MirrorOp op) {
        Leg[] legs = set.legs;
        IOException failure = op.failure;
        for (int i = 1; i < legs.length; i++) {
            IOException e = op.legFailure[i];
            if (e == null) {
                continue;
            }
            op.legFailure[i] = null;
            if (failure == null) {
                try {
                    rethrowUnlessDegraded(legs[i], "its data", e);
                } catch (IOException x) {
                    failure = x;
                }
            }
        }
        BlockDevice.ChangeDone done = op.done;
        op.done = null;
        op.failure = null;
        try {
            locks.unlock(op);
            if (failure == null) {
                for (int i = 0; i < legs.length; i++) {
                    if (op.tickets[i] != 0 && !legs[i].stale) {
                        legs[i].timed(op.legNanos[i]);
                    }
                }
                op.seq = forcer.addWithoutEntry(op.offset, op.length);
            }
        } catch (RuntimeException e) {
            failure = new IOException(e.toString(), e);
        } finally {
            release(op);
        }
        done.changeDone(failure);
    }

    /**
     * Whether a change is answered only once its data is forced on every leg ({@code -Dsnapbd.mirror.answer=forced}).
     * By default ({@code written}) it is answered once its entry is durable and its data written to every leg, and
     * the data is forced in batches behind the answers: a crash then leaves unmatched also the changes answered
     * since the last batch, which reconciliation compares and (after a process crash, the page cache holding them on
     * every leg) does not copy (docs/mirrors.md, "Write order").
     */
    static volatile boolean ANSWER_AFTER_DATA_FORCE = "forced".equals(System.getProperty("snapbd.mirror.answer", "written"));

    /** Ends a change that never touched leg 0 (its prepare failed): nothing differs; the tag is retired with the next batch. */
    void abort(MirrorOp op) {
        op.seq = 0;
        if (op.noEntry) {
            release(op);        // nothing appended: nothing to retire
            return;
        }
        try {
            forcer.add(op.tag, 0, 0);
        } catch (IOException ignored) {
            // interrupted: the entry stays live and costs a copy at the next reconciliation
        } finally {
            release(op);
        }
    }

    /** Forces every answered change on every leg (a client's FLUSH or FUA; before a reconciliation and a clean close). */
    void forceAll() throws IOException {
        forcer.forceAll();
    }

    private void release(MirrorOp op) {
        locks.unlock(op);
        leaveRegions(op);       // before the gate: a reconciliation (gate paused) resets the regions
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
