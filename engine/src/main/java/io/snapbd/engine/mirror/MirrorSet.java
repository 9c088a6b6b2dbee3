package io.snapbd.engine.mirror;

import io.snapbd.engine.BlockDevice;
import io.snapbd.engine.io.FileSpace;
import io.snapbd.engine.io.WriteGate;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
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
 An extra leg whose I/O fails (or that cannot be opened) is <em>degraded</em> (docs/mirrors.md, "Degraded mode"):
 * its region map {@code legN.rmap} is made in the volume's directory (the durable mark that it is stale), the
 * change goes on on the other legs, and from then on changes skip it and their entries stay live on the current
 * legs (not retired) so the missed ranges stay recorded; when the tables would fill up, the completed entries are
 * folded into the region map. A reconciliation that can open the leg again resyncs it: copies only the recorded
 * ranges from a current leg (never from the stale one), then deletes the map. Leg 0 (the one reads come from)
 * is never degraded: its failure fails the change, and changes are refused until a reconciliation succeeds.
 * After an unclean stop, or with a degraded leg, {@link #open} reconciles before the volume is handed out
 * (behaviour 26).
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

    /**
     * One leg's state ({@code in-sync}, {@code resyncing}, {@code degraded}, {@code failed}) and figures for
     * {@code mirror status}, {@code stats} and the metrics endpoint; {@code bytesCopiedIn} … {@code direction} are
     * the last reconciliation's, {@code bytesCopiedInTotal} every reconciliation's and resync's since the open,
     * {@code missedRegionBytes} what a degraded leg's region map records.
     */
    public record LegStatus(int leg, String uri, String state, long tableEntries, long writes, long writeNanos,
                            long maxWriteNanos, long bytesCopiedIn, long bytesCopiedOut, long rangesCopiedIn,
                            String direction, String error, long bytesCopiedInTotal, long missedRegionBytes) {
        public boolean degraded() {
            return "degraded".equals(state);
        }
    }

    /**
     * The last reconciliation: when, why, and what it did; {@code legs} has bit i set for every leg that took part
     * (a degraded leg that could not be reached did not: it received nothing). Copies name legs by number.
     */
    public record Reconciliation(long atMillis, boolean atOpen, Reconciler.Report report, long legs) {
        public Reconciliation(long atMillis, boolean atOpen, Reconciler.Report report) {
            this(atMillis, atOpen, report, -1L);
        }

        public boolean tookPart(int leg) {
            return (legs & (1L << leg)) != 0;
        }

        public long bytesTo(int leg) {
            return !tookPart(leg) ? 0
                    : report.copies().stream().filter(c -> c.from() != leg).mapToLong(Reconciler.Copy::length).sum();
        }

        public long rangesTo(int leg) {
            return !tookPart(leg) ? 0 : report.copies().stream().filter(c -> c.from() != leg).count();
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
    /** Degraded legs: while any, changes keep their entries live on the current legs (docs/mirrors.md). */
    private final DegradedLegs degraded;
    private final java.util.concurrent.atomic.AtomicInteger staleLegs;
    private volatile long copyDone;
    private volatile long copyTotal;
    private volatile LocalCopyListener localCopies = (o, l) -> {
    };
    private volatile boolean closed;

    private MirrorSet(Path dir, UUID owner, long size, TagSource tags, Leg[] legs) {
        this.dir = dir;
        this.owner = owner;
        this.size = size;
        this.tags = tags;
        this.legs = legs;
        this.degraded = new DegradedLegs(dir, owner, size, legs);
        this.staleLegs = degraded.stale;
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
            String[] unreachable = new String[legs.length];
            MirrorLeg local = MirrorLeg.of("local:" + dataFile, new FileLegIo(dataFile),
                    FileTagStore.open(dir.resolve(MirrorConfig.LOCAL_TABLE), true));
            opened.add(local);
            legs[0] = new Leg(0, local.uri(), local, TagTable.open(local.table(), owner, 0));
            for (int i = 1; i < legs.length; i++) {
                String uri = cfg.extraLegs().get(i - 1);
                Path mapFile = DegradedLegs.mapFile(dir, i);
                LegRegionMap map = null;
                if (Files.exists(mapFile)) {
                    FileTagStore ms = FileTagStore.open(mapFile, true);
                    opened.add(ms);
                    map = LegRegionMap.open(ms, owner, i);
                }
                MirrorLeg l = null;
                TagTable t = null;
                try {
                    l = LegOpener.installed().open(uri, size);
                    opened.add(l);
                } catch (IOException e) {
                    // unreachable (its server down, its disk gone): the volume opens with the leg degraded
                    unreachable[i] = "mirror leg " + i + " (" + uri + ") cannot be opened: " + e.getMessage();
                }
                if (l != null) {
                    if (l.data().size() < size) {
                        throw new IOException("mirror leg " + i + " (" + uri + ") holds " + l.data().size()
                                + " bytes, less than the volume's " + size);
                    }
                    t = TagTable.open(l.table(), owner, i);
                }
                legs[i] = new Leg(i, uri, l, t);
                opened.add(legs[i].forcer);
                if (map != null) {
                    legs[i].map = map;
                    legs[i].stale = true;
                }
                legs[i].failure = unreachable[i];
            }
            TagSource tags = TagSource.open(dir, owner);
            MirrorSet m = new MirrorSet(dir, owner, size, tags, legs);
            boolean live = false;
            for (Leg l : legs) {
                if (l.stale) {
                    m.staleLegs.incrementAndGet();
                }
                live |= l.table != null && !l.table.live().isEmpty();
            }
            for (Leg l : legs) {
                if (l.failure != null && !l.stale) {
                    IOException x = m.degrade(l, l.failure);
                    if (x != null) {
                        throw x;
                    }
                }
            }
            if (tags.recoveredFromCrash() || live || m.staleLegs.get() > 0) {
                Reconciliation r;
                try {
                    r = m.runReconcile(true, Reconciler.Progress.NONE);
                } catch (IOException | RuntimeException e) {
                    if (m.staleLegs.get() == 0) {
                        throw e;
                    }
                    // a degraded leg failed during its resync (its records are intact): open without it
                    LOG.log(System.Logger.Level.WARNING, "snapbd: volume " + dir.getFileName() + ": resync of a"
                            + " degraded mirror leg failed (" + e.getMessage() + "); the volume opens with it degraded");
                    r = m.runReconcile(true, Reconciler.Progress.NONE);
                }
                LOG.log(System.Logger.Level.INFO, "snapbd: volume " + dir.getFileName() + ": mirror legs reconciled "
                        + (tags.recoveredFromCrash() || live ? "after an unclean stop" : "at open") + ": " + r.report() + (m.staleLegs.get() > 0 ? "; degraded legs: " + m.degraded.names() : ""));
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
            try {
                runReconcile(false, Reconciler.Progress.NONE);
            } catch (IOException | RuntimeException e) {
                if (staleLegs.get() == 0) {
                    throw e;
                }
                // a degraded leg's resync failed (its records are intact): close with it still degraded
                LOG.log(System.Logger.Level.WARNING, "snapbd: volume " + dir.getFileName() + ": " + e.getMessage());
                runReconcile(false, false, Reconciler.Progress.NONE);
            }
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

    // ---- reconciliation --------------------------------------------------------------------------------------

    /**
     * Reconciles now (behaviour 14: at any time): waits for every change in flight to finish and holds new ones
     * back meanwhile. Opens failed and degraded legs again and resyncs them (only their recorded ranges, from a
     * current leg); a success clears their state. A degraded leg that still cannot be opened stays degraded (its
     * missed ranges kept in its region map) while the other legs are reconciled; then this throws, naming it.
     */
    public Reconciliation reconcile() throws IOException {
        return reconcile(Reconciler.Progress.NONE);
    }

    /** As {@link #reconcile()}, telling {@code progress} how many bytes of the copies are done. */
    public Reconciliation reconcile(Reconciler.Progress progress) throws IOException {
        if (!gate.pause()) {
            throw new IOException("changes in flight on the mirrored volume did not finish in time; nothing reconciled");
        }
        Reconciliation r;
        try {
            r = runReconcile(false, progress);
        } finally {
            gate.resume();
        }
        for (Leg l : legs) {
            if (l.stale) {
                throw new IOException(l.failure + "; the leg stays degraded (its missed writes recorded in "
                        + DegradedLegs.mapFile(dir, l.index).getFileName() + "), the other legs were reconciled: " + r.report());
            }
        }
        return r;
    }

    /**
     * Opens failed legs again (not at open: they were just tried). With a degraded leg that still cannot be reached,
     * when only leg 0 is current, or on demand (and at a clean close) with no other degraded leg back: changes
     * nothing (the live entries stay the exact record of what it missed). Else folds every live entry into the
     * region map of each degraded leg that cannot be reached (so the current legs' tables can be emptied), then reconciles
     * the legs that are open, degraded ones as targets only, with their region maps' ranges; deletes the region
     * map of every degraded leg that took part once its copies are durable and the tables retired.
     */
    private Reconciliation runReconcile(boolean atOpen, Reconciler.Progress progress) throws IOException {
        return runReconcile(atOpen, !atOpen, progress);
    }

    private synchronized Reconciliation runReconcile(boolean atOpen, boolean reopen, Reconciler.Progress progress)
            throws IOException {
        reconciling = true;
        copyDone = 0;
        copyTotal = 0;
        try {
            if (reopen) {
                reopenFailed();
            }
            List<Leg> part = new ArrayList<>();
            List<Leg> away = new ArrayList<>();
            for (Leg l : legs) {
                (l.index == 0 || l.failure == null ? part : away).add(l);
            }
            for (Leg l : away) {
                if (!l.stale) {
                    IOException x = degrade(l, l.failure);
                    if (x != null) {
                        throw x;
                    }
                }
            }
            boolean resyncing = false;
            for (Leg l : part) {
                resyncing |= l.stale;
            }
            if (!away.isEmpty() && !failed && (part.size() < 2 || !atOpen && !resyncing)) {
                // Nothing to reconcile among the current legs (only leg 0, or no crash to recover from): the live
                // entries stay as they are, the exact record of what the unreachable legs missed.
                legs[0].depth.set(legs[0].table.live().size());
                return new Reconciliation(System.currentTimeMillis(), atOpen,
                        new Reconciler.Report(0, 0, 0, 0, List.of()), 1L);
            }
            if (!away.isEmpty()) {
                List<long[]> ranges = new ArrayList<>();
                for (Leg l : part) {
                    for (TagTable.Entry e : l.table.live()) {
                        ranges.add(new long[]{e.offset(), e.length()});
                    }
                }
                for (Leg l : away) {
                    l.map.markMissed(ranges);
                }
            }
            List<TagTable> tables = new ArrayList<>();
            List<LegIo> ios = new ArrayList<>();
            boolean[] stale = new boolean[part.size()];
            List<long[]> missed = new ArrayList<>();
            long mask = 0;
            for (int i = 0; i < part.size(); i++) {
                Leg l = part.get(i);
                tables.add(l.table);
                ios.add(l.leg.data());
                stale[i] = l.stale;
                if (l.stale) {
                    missed.addAll(l.map.missedRanges());
                }
                mask |= 1L << l.index;
            }
            Reconciler.Progress p = (done, total) -> {
                copyDone = done;
                copyTotal = total;
                progress.copied(done, total);
            };
            Reconciler.Report r;
            if (part.size() >= 2) {
                Reconciler.Report pr;
                try {
                    pr = Reconciler.reconcile(tables, ios, stale, missed, p);
                } catch (IOException | RuntimeException e) {
                    // which leg failed is not known: the degraded ones are opened anew next time (their records
                    // are intact: nothing was retired or cleared)
                    String names = "";
                    for (Leg l : part) {
                        if (l.stale) {
                            l.failure = "mirror leg " + l.index + " (" + l.uri + "): resync failed: " + e.getMessage();
                            names += (names.isEmpty() ? "" : ", ") + l.index + " (" + l.uri + ")";
                        }
                    }
                    throw new IOException((names.isEmpty() ? "reconciliation" : "resync of degraded mirror leg "
                            + names) + " failed: " + e.getMessage() + "; nothing was retired, it can run again", e);
                }
                List<Reconciler.Copy> copies = new ArrayList<>();
                for (Reconciler.Copy c : pr.copies()) {
                    copies.add(new Reconciler.Copy(c.tag(), c.offset(), c.length(), part.get(c.from()).index));
                }
                r = new Reconciler.Report(pr.entriesMatched(), pr.entriesUnmatched(), pr.rangesCopied(),
                        pr.bytesCopied(), List.copyOf(copies));
            } else {
                // only leg 0 is open: its entries are in every absent leg's region map now
                List<Long> live = new ArrayList<>();
                for (TagTable.Entry e : legs[0].table.live()) {
                    live.add(e.tag());
                }
                legs[0].table.retireAll(live);
                r = new Reconciler.Report(0, live.size(), 0, 0, List.of());
            }
            Reconciliation rec = new Reconciliation(System.currentTimeMillis(), atOpen, r, mask);
            for (Leg l : part) {
                l.bytesCopiedIn.addAndGet(rec.bytesTo(l.index));
                if (l.stale) {
                    degraded.resynced(l);
                }
                l.depth.set(0);
                l.failure = null;
            }
            for (Leg l : away) {
                l.depth.set(0);
            }
            last = rec;
            reconciliations.incrementAndGet();
            bytesCopiedTotal.addAndGet(r.bytesCopied());
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
     * opened keeps its failure (and is, or becomes, degraded).
     */
    private void reopenFailed() {
        for (Leg l : legs) {
            if (l.index == 0 || l.failure == null) {
                continue;
            }
            try {
                l.reopen(size, owner);
                l.failure = null;
            } catch (IOException | RuntimeException e) {
                l.failure = e.getMessage();
            }
        }
    }

    /**
     * Leaves extra leg {@code l} behind ({@link DegradedLegs#leaveBehind}). Returns null, or, for leg 0 or when
     * the leg's region map cannot be made, the error that fails the change (the volume then refuses changes).
     */
    private IOException degrade(Leg l, String why) {
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

    // ---- the write path --------------------------------------------------------------------------------------

    public MirrorOp newOp() {
        return new MirrorOp(this, gate, legs.length);
    }

    /**
     * Step 1 of a change of [offset, offset+length): tag, ENTRY durable on every current leg (group commit), range
     * lock. With {@code inUseOnly} (TRIM, WRITE_ZEROES, discards) only the blocks of the range {@code local} reports
     * in use now are copied to the other legs at {@link #end} (the rest is zero on every leg already: "clear bit ⇒
     * zero data"); else the whole range is. Every successful begin must be followed by {@link #end} or
     * {@link #abort}. An extra leg that fails here is degraded and the change goes on without it.
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
                throw fail(legs[0], "its tag table", e);
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
        try {
            return l.table.append(tag, offset, length);
        } catch (TagTable.TableFullException e) {
            if (staleLegs.get() == 0) {
                throw e;
            }
            try {
                degraded.fold(true);
            } catch (IOException | RuntimeException f) {
                throw fail(legs[0], "a degraded leg's region map", f);
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
                throw fail(legs[0], "the volume's data", e);
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
                    throw fail(legs[0], "a degraded leg's region map", e);
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
                    IOException f = fail(l, "its tag table", e);
                    first = first == null ? f : first;
                } else {
                    IOException f = degrade(l, why(l, "its tag table", e));
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

    private static String why(Leg l, String what, Exception e) {
        return "mirror leg " + l.index + " (" + l.uri + "): " + what + " failed: " + e.getMessage();
    }

    /** An extra leg failed: degrade it (the change goes on without it), or throw when that is not possible. */
    private void rethrowUnlessDegraded(Leg l, String what, Exception e) throws IOException {
        IOException x = degrade(l, why(l, what, e));
        if (x != null) {
            x.addSuppressed(e);
            throw x;
        }
    }

    /** Marks leg {@code l} failed (an I/O error, or any other failure of its implementation) and says why. */
    private IOException fail(Leg l, String what, Exception e) {
        String why = why(l, what, e);
        if (l.failure == null) {
            l.failure = why;
        }
        failed = true;
        return new IOException(why + "; the change is not complete on every leg (the volume refuses changes until"
                + " 'snapbd mirror reconcile' succeeds or it is reopened)", e);
    }

    private IOException failure() {
        for (Leg l : legs) {
            if (l.failure != null && !l.stale) {
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
            String state = l.stale ? (reconciling && l.failure == null ? "resyncing" : "degraded")
                    : l.failure != null ? "failed" : reconciling ? "resyncing" : "in-sync";
            LegRegionMap m = l.map;
            out.add(new LegStatus(l.index, l.uri, state, Math.max(0, l.depth.get()), l.writes.sum(),
                    l.writeNanos.sum(), l.maxWriteNanos.get(), r == null ? 0 : r.bytesTo(l.index),
                    r == null ? 0 : r.bytesFrom(l.index), r == null ? 0 : r.rangesTo(l.index),
                    r == null ? "none" : r.direction(l.index), l.failure, l.bytesCopiedIn.get(),
                    m == null ? 0 : m.missedBytes()));
        }
        return out;
    }

    /** Legs degraded now. */
    public int degradedLegs() {
        return staleLegs.get();
    }

    /** Times completed entries were folded into degraded legs' region maps (the table-overflow fallback). */
    public long folds() {
        return degraded.folds();
    }

    /** The running (or last) reconciliation's copy progress: bytes done and in all. */
    public long[] copyProgress() {
        return new long[]{copyDone, copyTotal};
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
