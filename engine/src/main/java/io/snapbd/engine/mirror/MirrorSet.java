package io.snapbd.engine.mirror;

import io.snapbd.engine.BlockDevice;
import io.snapbd.engine.io.FileSpace;
import io.snapbd.engine.io.WriteGate;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.UUID;
import java.util.concurrent.atomic.AtomicLong;

/**
 * The legs of one mirrored volume and the tagged write path over them (docs/mirrors.md, "Write order"). Leg 0 is
 * the volume's own {@code data.img} (the local mapping) with its table {@code leg0.tags}; legs 1 … n−1 come from
 * {@link LegOpener}. Every write, TRIM, WRITE_ZEROES and restore run of the volume is one {@link MirrorOp}:
 * <ol>
 * <li>{@link #begin}: a tag from {@link TagSource}; the ENTRY appended on every leg and made durable by group
 *     commit (one table force covers every entry appended concurrently); then the op's range is locked, so
 *     overlapping changes reach every leg in the same order;</li>
 * <li>the volume changes leg 0 (its usual write path, which consumes the client's payload once);</li>
 * <li>{@link #end}: the changed range is read back from leg 0 and written to every other leg; each leg's data is
 *     forced (group commit per leg), then DONE is appended on that leg; only then does the client get its answer
 *     (behaviour 8); the tag joins the session's next RETIRE batch.</li>
 * </ol>
 * A leg whose I/O fails is marked failed and the op fails with an I/O error (EIO to the client); from then on
 * every change to the volume fails the same way until a reconciliation succeeds (degraded mode is not built).
 * After an unclean stop, {@link #open} reconciles before the volume is handed out (behaviour 26).
 */
public final class MirrorSet implements AutoCloseable {

    private static final System.Logger LOG = System.getLogger(MirrorSet.class.getName());
    /** Tags per RETIRE batch (per session). */
    static final int RETIRE_BATCH = 32;
    static final int COPY_BUFFER = 1 << 20;

    /** Told about ranges reconciliation copied into leg 0 from another leg (the volume marks them in use). */
    @FunctionalInterface
    public interface LocalCopyListener {
        void copied(long offset, long length) throws IOException;
    }

    /** One leg's state and figures for {@code mirror status}, {@code stats} and the metrics endpoint. */
    public record LegStatus(int leg, String uri, String state, long tableEntries, long writes, long writeNanos,
                            long maxWriteNanos, long bytesCopiedIn, long bytesCopiedOut, long rangesCopiedIn,
                            String direction, String error) {
    }

    /** The last reconciliation: when, why, and what it did. */
    public record Reconciliation(long atMillis, boolean atOpen, Reconciler.Report report) {
        public long bytesTo(int leg) {
            return report.copies().stream().filter(c -> c.from() != leg).mapToLong(Reconciler.Copy::length).sum();
        }

        public long rangesTo(int leg) {
            return report.copies().stream().filter(c -> c.from() != leg).count();
        }

        public long bytesFrom(int leg) {
            return report.copies().stream().filter(c -> c.from() == leg).mapToLong(Reconciler.Copy::length).sum();
        }

        /** "none", "from" (this leg was a source), "to" (it received copies) or "both". */
        public String direction(int leg) {
            boolean to = bytesTo(leg) > 0;
            boolean from = bytesFrom(leg) > 0;
            return to && from ? "both" : to ? "to" : from ? "from" : "none";
        }
    }

    private final Path dir;
    private final UUID owner;
    private final long size;
    private final TagSource tags;
    private final Leg[] legs;
    private final RangeLocks locks = new RangeLocks();
    private final WriteGate gate = new WriteGate(30_000);
    private final AtomicLong bytesCopiedTotal = new AtomicLong();
    private final AtomicLong reconciliations = new AtomicLong();
    private volatile Reconciliation last;
    private volatile boolean reconciling;
    private volatile boolean failed;
    private volatile LocalCopyListener localCopies = (o, l) -> {
    };
    private volatile boolean closed;

    private MirrorSet(Path dir, UUID owner, long size, TagSource tags, Leg[] legs) {
        this.dir = dir;
        this.owner = owner;
        this.size = size;
        this.tags = tags;
        this.legs = legs;
    }

    // ---- create, open, close ---------------------------------------------------------------------------------

    /**
     * Makes the legs of a new volume in {@code dir} (whose {@code data.img} of {@code size} bytes exists): leg 0's
     * table, each extra leg through {@link LegOpener#installed()}, then {@code mirror.legs}. On failure whatever
     * was made is removed again.
     */
    public static void create(Path dir, UUID owner, long size, List<String> uris, boolean sparse, FileSpace space)
            throws IOException {
        MirrorConfig cfg = new MirrorConfig(owner, TagTable.DEFAULT_HALF_RECORDS, uris);
        for (int i = 0; i < uris.size(); i++) {
            for (int j = 0; j < i; j++) {
                if (uris.get(i).equals(uris.get(j))) {
                    throw new IllegalArgumentException("mirror leg " + uris.get(i) + " is named twice");
                }
            }
        }
        LegOpener opener = LegOpener.installed();
        long tableBytes = TagTable.areaBytes(cfg.halfRecords());
        List<String> made = new ArrayList<>();
        boolean done = false;
        try {
            try (FileTagStore s = FileTagStore.create(dir.resolve(MirrorConfig.LOCAL_TABLE), tableBytes)) {
                TagTable.create(s, owner, 0, cfg.halfRecords());
            }
            for (int i = 0; i < uris.size(); i++) {
                try (MirrorLeg l = opener.create(uris.get(i), size, tableBytes, sparse, space)) {
                    made.add(uris.get(i));
                    TagTable.create(l.table(), owner, i + 1, cfg.halfRecords());
                }
            }
            cfg.write(dir);
            done = true;
        } finally {
            if (!done) {
                for (String u : made) {
                    try {
                        opener.delete(u);
                    } catch (IOException ignored) {
                        // best effort: the create failed anyway
                    }
                }
            }
        }
    }

    /** Removes the extra legs a volume's {@code mirror.legs} names (volume delete); a missing list is no mirror. */
    public static void deleteLegs(Path dir) throws IOException {
        MirrorConfig cfg;
        try {
            cfg = MirrorConfig.read(dir, null);
        } catch (IOException e) {
            return;         // a damaged list names nothing we can trust to delete
        }
        if (cfg != null) {
            for (String u : cfg.extraLegs()) {
                LegOpener.installed().delete(u);
            }
        }
    }

    /**
     * Opens the mirror of the volume in {@code dir}, or returns null when it is not mirrored. Checks every table
     * (owner, leg number, damage) and, after an unclean stop (the tag counter was not closed cleanly, or a table
     * holds live entries), reconciles the legs before returning (behaviours 25–26): the caller hands the volume
     * to no client before this returns. Runs before the volume's crash recovery reads {@code dataFile}.
     */
    public static MirrorSet open(Path dir, UUID owner, long size, Path dataFile) throws IOException {
        MirrorConfig cfg = MirrorConfig.read(dir, owner);
        if (cfg == null) {
            return null;
        }
        List<AutoCloseable> opened = new ArrayList<>();
        try {
            Leg[] legs = new Leg[cfg.legs()];
            MirrorLeg local = MirrorLeg.of("local:" + dataFile, new FileLegIo(dataFile),
                    FileTagStore.open(dir.resolve(MirrorConfig.LOCAL_TABLE), true));
            opened.add(local);
            legs[0] = new Leg(0, local, TagTable.open(local.table(), owner, 0));
            for (int i = 1; i < legs.length; i++) {
                String uri = cfg.extraLegs().get(i - 1);
                MirrorLeg l;
                try {
                    l = LegOpener.installed().open(uri, size);
                } catch (IOException e) {
                    throw new IOException("mirror leg " + i + " (" + uri + ") cannot be opened: " + e.getMessage(), e);
                }
                opened.add(l);
                if (l.data().size() < size) {
                    throw new IOException("mirror leg " + i + " (" + uri + ") holds " + l.data().size()
                            + " bytes, less than the volume's " + size);
                }
                legs[i] = new Leg(i, l, TagTable.open(l.table(), owner, i));
                opened.add(legs[i].forcer);
            }
            TagSource tags = TagSource.open(dir, owner);
            MirrorSet m = new MirrorSet(dir, owner, size, tags, legs);
            boolean live = false;
            for (Leg l : legs) {
                live |= !l.table.live().isEmpty();
            }
            if (tags.recoveredFromCrash() || live) {
                Reconciliation r = m.runReconcile(true);
                LOG.log(System.Logger.Level.INFO, "snapbd: volume " + dir.getFileName() + ": mirror legs reconciled after an"
                        + " unclean stop: " + r.report());
            }
            return m;
        } catch (IOException | RuntimeException e) {
            for (int i = opened.size() - 1; i >= 0; i--) {
                try {
                    opened.get(i).close();
                } catch (Exception s) {
                    e.addSuppressed(s);
                }
            }
            throw e;
        }
    }

    /** Where copies reconciliation makes into leg 0 from other legs are reported (set by the volume at open). */
    public void onLocalCopies(LocalCopyListener l) throws IOException {
        localCopies = l;
        Reconciliation r = last;
        if (r != null && r.atOpen()) {
            reportLocal(r.report());
        }
    }

    private void reportLocal(Reconciler.Report r) throws IOException {
        for (Reconciler.Copy c : r.copies()) {
            if (c.from() != 0) {
                localCopies.copied(c.offset(), c.length());
            }
        }
    }

    /**
     * Clean stop (no change may be in flight): reconciles once more, which retires every entry (and copies the
     * ranges of a change that failed on some leg), then stores the tag counter clean, so the next open needs no
     * reconciliation. On failure the files are closed anyway and the next open reconciles.
     */
    public void closeClean() throws IOException {
        if (closed) {
            return;
        }
        closed = true;
        try {
            runReconcile(false);
            tags.closeClean();
        } finally {
            closeLegs();
        }
    }

    /** Closes without reconciling or marking anything clean (what a crash leaves; tests). */
    public void abandon() throws IOException {
        closed = true;
        closeLegs();
    }

    @Override
    public void close() throws IOException {
        closeClean();
    }

    private void closeLegs() throws IOException {
        IOException first = null;
        for (Leg l : legs) {
            if (l.forcer != null) {
                l.forcer.close();
            }
            try {
                l.leg.close();
            } catch (IOException e) {
                first = first == null ? e : first;
            }
        }
        if (first != null) {
            throw first;
        }
    }

    // ---- reconciliation --------------------------------------------------------------------------------------

    /**
     * Reconciles now (behaviour 14: at any time): waits for every change in flight to finish and holds new ones
     * back meanwhile. A success clears failed legs (their tables and data agree with the others again).
     */
    public Reconciliation reconcile() throws IOException {
        if (!gate.pause()) {
            throw new IOException("changes in flight on the mirrored volume did not finish in time; nothing reconciled");
        }
        try {
            return runReconcile(false);
        } finally {
            gate.resume();
        }
    }

    private synchronized Reconciliation runReconcile(boolean atOpen) throws IOException {
        List<TagTable> tables = new ArrayList<>();
        List<LegIo> ios = new ArrayList<>();
        reconciling = true;
        try {
            reopenFailed();
            for (Leg l : legs) {
                tables.add(l.table);
                ios.add(l.leg.data());
            }
            Reconciler.Report r = Reconciler.reconcile(tables, ios);
            Reconciliation rec = new Reconciliation(System.currentTimeMillis(), atOpen, r);
            last = rec;
            reconciliations.incrementAndGet();
            bytesCopiedTotal.addAndGet(r.bytesCopied());
            for (Leg l : legs) {
                l.depth.set(0);
                l.failure = null;
            }
            failed = false;
            if (!atOpen) {
                reportLocal(r);
            }
            return rec;
        } finally {
            reconciling = false;
        }
    }

    /**
     * Opens every failed extra leg again (no change is in flight): a leg whose connection was lost (an NBD server
     * that went away and came back) fails every later call until it is opened anew. The table is read again from
     * the leg, so whatever the failed change left there is what reconciliation sees. A leg that still cannot be
     * opened fails the reconciliation and stays failed.
     */
    private void reopenFailed() throws IOException {
        for (Leg l : legs) {
            if (l.index == 0 || l.failure == null) {
                continue;
            }
            l.reopen(size, owner);
        }
    }

    // ---- the write path --------------------------------------------------------------------------------------

    public MirrorOp newOp() {
        return new MirrorOp(this, gate, legs.length);
    }

    /**
     * Step 1 of a change of [offset, offset+length): tag, ENTRY durable on every leg (group commit), range lock.
     * With {@code inUseOnly} (TRIM, WRITE_ZEROES, discards) only the blocks of the range {@code local} reports in
     * use now are copied to the other legs at {@link #end} (the rest is zero on every leg already: "clear bit ⇒
     * zero data"); else the whole range is. Every successful begin must be followed by {@link #end} or
     * {@link #abort}.
     */
    public void begin(MirrorOp op, long offset, long length, BlockDevice local, boolean inUseOnly)
            throws IOException {
        if (!op.bypass) {
            gate.enter(op.slot);
            op.inGate = true;
        }
        try {
            if (failed) {
                throw failure();
            }
            long tag = tags.next();
            op.tag = tag;
            op.offset = offset;
            op.length = length;
            for (int i = 0; i < legs.length; i++) {
                Leg l = legs[i];
                long t0 = System.nanoTime();
                try {
                    op.tickets[i] = l.table.append(tag, offset, length);
                } catch (IOException | RuntimeException e) {
                    throw fail(l, "its tag table", e);
                }
                l.depth.incrementAndGet();
                op.legNanos[i] = System.nanoTime() - t0;
            }
            // every leg's table forced at the same time: the extra legs' on their forcers, leg 0's here
            long t0 = System.nanoTime();
            for (int i = 1; i < legs.length; i++) {
                legs[i].forcer.request(LegForcer.TABLE, op.tickets[i]);
            }
            try {
                legs[0].table.commit(op.tickets[0]);
            } catch (IOException | RuntimeException e) {
                throw fail(legs[0], "its tag table", e);
            }
            op.legNanos[0] += System.nanoTime() - t0;
            for (int i = 1; i < legs.length; i++) {
                Leg l = legs[i];
                try {
                    l.forcer.await(LegForcer.TABLE, op.tickets[i]);
                } catch (IOException | RuntimeException e) {
                    throw fail(l, "its tag table", e);
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

    /**
     * Steps 2–4 after the volume changed leg 0: copies the op's ranges from leg 0 (read through {@code local} on
     * session {@code s}) to every other leg, forces each leg's data, appends DONE on each. Returns when every
     * leg completed the change; throws (the leg is then marked failed) when one did not.
     */
    public void end(MirrorOp op, BlockDevice.Session s, BlockDevice local) throws IOException {
        try {
            if (op.buf == null) {
                op.buf = ByteBuffer.allocateDirect(COPY_BUFFER);
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
                        long t0 = System.nanoTime();
                        buf.position(0);
                        try {
                            l.leg.data().write(buf, pos);
                        } catch (IOException | RuntimeException e) {
                            throw fail(l, "its data", e);
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
                op.tickets[i] = l.dataWrites.incrementAndGet();    // counted after this op's write completed
                l.forcer.request(LegForcer.DATA, op.tickets[i]);
            }
            try {
                local.forceRange(op.offset, op.length);
                legs[0].table.markDone(op.one, 1);
            } catch (IOException | RuntimeException e) {
                throw fail(legs[0], "the volume's data", e);
            }
            legs[0].timed(op.legNanos[0] + System.nanoTime() - t0);
            for (int i = 1; i < legs.length; i++) {
                Leg l = legs[i];
                try {
                    l.forcer.await(LegForcer.DATA, op.tickets[i]);
                    l.table.markDone(op.one, 1);
                } catch (IOException | RuntimeException e) {
                    throw fail(l, "its data", e);
                }
                l.timed(op.legNanos[i] + System.nanoTime() - t0);
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
    public void abort(MirrorOp op) {
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

    void retirePending(MirrorOp op) throws IOException {
        int n = op.npending;
        if (n == 0) {
            return;
        }
        op.npending = 0;
        IOException first = null;
        for (Leg l : legs) {
            try {
                l.table.retire(op.pending, n);
                l.depth.addAndGet(-n);
            } catch (IOException | RuntimeException e) {
                IOException f = fail(l, "its tag table", e);
                first = first == null ? f : first;
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

    /** Marks leg {@code l} failed (an I/O error, or any other failure of its implementation) and says why. */
    private IOException fail(Leg l, String what, Exception e) {
        String why = "mirror leg " + l.index + " (" + l.leg.uri() + "): " + what + " failed: " + e.getMessage();
        if (l.failure == null) {
            l.failure = why;
        }
        failed = true;
        return new IOException(why + "; the change is not complete on every leg (the volume refuses changes until"
                + " 'snapbd mirror reconcile' succeeds or it is reopened)", e);
    }

    private IOException failure() {
        for (Leg l : legs) {
            if (l.failure != null) {
                return new IOException(l.failure + "; the volume refuses changes until 'snapbd mirror reconcile'"
                        + " succeeds or it is reopened");
            }
        }
        return new IOException("a mirror leg failed");
    }

    /** Holds every new change back and waits for those in flight (a restore); false on timeout. */
    public boolean pause() {
        return gate.pause();
    }

    public void resume() {
        gate.resume();
    }

    // ---- status ----------------------------------------------------------------------------------------------

    public int legCount() {
        return legs.length;
    }

    public Reconciliation lastReconciliation() {
        return last;
    }

    public long reconciliations() {
        return reconciliations.get();
    }

    public long bytesCopiedTotal() {
        return bytesCopiedTotal.get();
    }

    public List<LegStatus> status() {
        Reconciliation r = last;
        List<LegStatus> out = new ArrayList<>();
        for (Leg l : legs) {
            String state = l.failure != null ? "failed" : reconciling ? "resyncing" : "in-sync";
            out.add(new LegStatus(l.index, l.leg.uri(), state, Math.max(0, l.depth.get()), l.writes.sum(),
                    l.writeNanos.sum(), l.maxWriteNanos.get(), r == null ? 0 : r.bytesTo(l.index),
                    r == null ? 0 : r.bytesFrom(l.index), r == null ? 0 : r.rangesTo(l.index),
                    r == null ? "none" : r.direction(l.index), l.failure));
        }
        return out;
    }

    /** Table forces run by group commit on leg {@code leg} (tests, stats). */
    public long tableForces(int leg) {
        return legs[leg].table.commitForces();
    }

    public Path directory() {
        return dir;
    }

    public UUID owner() {
        return owner;
    }

    public long size() {
        return size;
    }
}
