package io.snapbd.engine.mirror;

import io.snapbd.engine.BlockDevice;
import io.snapbd.engine.io.FileSpace;

import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.UUID;

/**
 * The legs of one mirrored volume and the tagged write path over them (docs/mirrors.md, "Write order"). Leg 0 is
 * the volume's own {@code data.img} (the local mapping) with its table {@code leg0.tags}; legs 1 … n−1 come from
 * {@link LegOpener}. Every write, TRIM, WRITE_ZEROES and restore run of the volume is one {@link MirrorOp}:
 * <ol>
 * <li>{@link #begin}: a tag from {@link TagSource}; the ENTRY appended on every leg and made durable by group
 *     commit (one table force covers every entry appended concurrently); then the op's range is locked, so
 *     overlapping changes reach every leg in the same order;</li>
 * <li>the volume changes leg 0 (its usual write path, which consumes the client's payload once);</li>
 * <li>{@link #end}: the changed range is read back from leg 0 and written to every other leg; the client gets its
 *     answer now (behaviour 8: "completed" as a disk completes a write without FUA); a {@link DataForcer} batch
 *     then forces every leg's data, appends DONE and retires the tags, within a second (768 changes) or at the client's
 *     FLUSH/FUA ({@link #forceAll}).</li>
 * </ol>
 * An extra leg whose I/O fails (or that cannot be opened) is <em>degraded</em> (docs/mirrors.md, "Degraded mode"):
 * its region map {@code legN.rmap} is made in the volume's directory (the durable mark that it is stale), the
 * change goes on on the other legs, and from then on changes skip it and their entries stay live on the current
 * legs (not retired) so the missed ranges stay recorded; when the tables would fill up, the completed entries are
 * folded into the region map. A reconciliation that can open the leg again resyncs it: copies only the recorded
 * ranges from a current leg (never from the stale one; compared first, only differing blocks written), then deletes the map. Leg 0 (the one reads come from)
 * is never degraded: its failure fails the change, and changes are refused until a reconciliation succeeds.
 * After an unclean stop, or with a degraded leg, {@link #open} reconciles before the volume is handed out
 * (behaviour 26).
 *
 * <p>This class is the facade the volume, the admin socket and the metrics use; the jobs live in
 * {@link MirrorOpening} (create, open, delete), {@link MirrorWritePath} (begin/end/abort, RETIRE batches),
 * {@link MirrorReconcile} (reconciliation and resync) and {@link MirrorLegs} (the legs and their failure state).
 */
public final class MirrorSet implements AutoCloseable {

    private static final System.Logger LOG = System.getLogger(MirrorSet.class.getName());
    /** Bytes of a copy buffer (a session's op, a resync). */
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
     * {@code missedRegionBytes} what a degraded leg's region map records, {@code bytesCompared} the bytes of this leg
     * the last reconciliation compared (every unmatched range, when the leg took part), {@code tableForces} the forces
     * of its tag table since the open (ENTRY group commits and RETIRE batches: {@code writes / tableForces} is the
     * group commit's batch size).
     */
    public record LegStatus(int leg, String uri, String state, long tableEntries, long writes, long writeNanos,
                            long maxWriteNanos, long bytesCopiedIn, long bytesCopiedOut, long rangesCopiedIn,
                            String direction, String error, long bytesCopiedInTotal, long missedRegionBytes,
                            long bytesCompared, long tableForces) {
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
                    : report.copies().stream().filter(c -> c.into(leg)).mapToLong(Reconciler.Copy::length).sum();
        }

        public long rangesTo(int leg) {
            return !tookPart(leg) ? 0 : report.copies().stream().filter(c -> c.into(leg)).count();
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

    final MirrorLegs legs;
    final MirrorWritePath writes;
    final MirrorReconcile reconciler;
    final OnlineLegChanges changes;
    private final TagSource tags;
    private volatile boolean closed;

    MirrorSet(MirrorLegs legs, TagSource tags) {
        this.legs = legs;
        this.tags = tags;
        this.writes = new MirrorWritePath(legs, tags);
        this.reconciler = new MirrorReconcile(legs, writes.gate, writes.forcer, writes.hot);
        this.changes = new OnlineLegChanges(legs, writes);
    }

    /**
     * When mirrored changes are answered, process-wide: {@code true} (the default, or
     * {@code -Dsnapbd.mirror.answer=written}) once it is written to every leg (its entry durable), forced in batches
     * behind the answers; {@code false} ({@code -Dsnapbd.mirror.answer=forced}) once their data is forced on every leg.
     * Returns the previous setting (tests switch it around a run).
     */
    public static boolean answerWhenWritten(boolean written) {
        boolean was = !MirrorWritePath.ANSWER_AFTER_DATA_FORCE;
        MirrorWritePath.ANSWER_AFTER_DATA_FORCE = !written;
        return was;
    }

    /**
     * Whether every change forces its own ENTRY, process-wide: {@code true} with {@code -Dsnapbd.mirror.entries=forced}
     * (the order before hot regions); {@code false}, the default, for hot regions (docs/mirrors.md, "Hot regions").
     * Returns the previous setting (tests switch it around a run).
     */
    public static boolean forcedEntries(boolean forced) {
        boolean was = HotRegions.FORCED_ENTRIES;
        HotRegions.FORCED_ENTRIES = forced;
        return was;
    }

    /**
     * What a hot-path change appends, process-wide: {@code true} nothing ({@code -Dsnapbd.mirror.hotEntries=none}, the
     * default), {@code false} its own ENTRY unforced ({@code unforced}). Returns the previous setting (tests).
     */
    public static boolean hotEntriesNone(boolean none) {
        boolean was = HotRegions.HOT_ENTRIES_NONE;
        HotRegions.HOT_ENTRIES_NONE = none;
        return was;
    }

    /** Whether hot-path changes append no ENTRY ({@code -Dsnapbd.mirror.hotEntries=none}) now. */
    public static boolean hotEntriesNone() {
        return HotRegions.HOT_ENTRIES_NONE;
    }

    /** Tests only: changes skip region entries and leave their ENTRY unforced (a broken write path to be caught). */
    public static void skipRegionEntriesForTest(boolean skip) {
        HotRegions.skipRegionEntriesForTest = skip;
    }

    // ---- legs added and removed while the volume is served (OnlineLegChanges) --------------------------------

    /**
     * {@code mirror add} on the open volume: makes leg {@code uri}, lets it join the write path ({@code resyncing}),
     * copies the volume's blocks into it (read through {@code local}) under the range locks while changes go on,
     * forces it, then lists it. Returns its place among the legs. See docs/mirrors.md, "Adding and removing legs".
     */
    public int addLeg(String uri, boolean sparse, boolean force, FileSpace space, BlockDevice local,
                      Reconciler.Progress progress) throws IOException {
        if (closed) {
            throw new IOException("the volume is closing");
        }
        return changes.add(uri, sparse, force, space, local, progress);
    }

    /** {@code mirror remove} on the open volume: the leg leaves the list and the write path together (gate paused). */
    public void removeLeg(String uri) throws IOException {
        if (closed) {
            throw new IOException("the volume is closing");
        }
        changes.remove(uri);
    }

    // ---- create, open, close ---------------------------------------------------------------------------------

    /**
     * Makes the legs of a new volume in {@code dir} (whose {@code data.img} of {@code size} bytes exists): leg 0's
     * table, each extra leg through {@link LegOpener#installed()}, then {@code mirror.legs}. On failure whatever
     * was made is removed again. A leg holding another volume's tag table is refused unless {@code force}
     * ({@link LegInUse}).
     */
    public static void create(Path dir, UUID owner, long size, List<String> uris, boolean sparse, FileSpace space,
                              boolean force) throws IOException {
        MirrorOpening.create(dir, owner, size, uris, sparse, space, force);
    }

    /** Removes the extra legs a volume's {@code mirror.legs} names (volume delete); a missing list is no mirror. */
    public static void deleteLegs(Path dir) throws IOException {
        MirrorOpening.deleteLegs(dir);
    }

    /**
     * Opens the mirror of the volume in {@code dir}, or returns null when it is not mirrored. Checks every table
     * (owner, leg number, damage) and, after an unclean stop (the tag counter was not closed cleanly, or a table
     * holds live entries), reconciles the legs before returning (behaviours 25–26): the caller hands the volume
     * to no client before this returns. Runs before the volume's crash recovery reads {@code dataFile}.
     */
    public static MirrorSet open(Path dir, UUID owner, long size, Path dataFile) throws IOException {
        return MirrorOpening.open(dir, owner, size, dataFile);
    }

    /** Forces a range of leg 0 as the volume writes it (its mapping), for the data-force batches. */
    @FunctionalInterface
    public interface LocalForce {
        void force(long offset, long length) throws IOException;
    }

    /** How the data-force batches force leg 0 (set by the volume at open; until then the file is forced whole). */
    public void onLocalForce(LocalForce f) {
        writes.forcer.localForce = f;
    }

    /** Where copies reconciliation makes into leg 0 from other legs are reported (set by the volume at open). */
    public void onLocalCopies(LocalCopyListener l) throws IOException {
        reconciler.onLocalCopies(l);
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
                reconciler.runReconcile(false, Reconciler.Progress.NONE);
            } catch (IOException | RuntimeException e) {
                if (legs.staleLegs.get() == 0) {
                    throw e;
                }
                // a degraded leg's resync failed (its records are intact): close with it still degraded
                LOG.log(System.Logger.Level.WARNING, "snapbd: volume " + legs.dir.getFileName() + ": " + e.getMessage());
                reconciler.runReconcile(false, false, Reconciler.Progress.NONE);
            }
            tags.closeClean();
        } finally {
            writes.forcer.close();
            legs.close();
        }
    }

    /** Closes without reconciling or marking anything clean (what a crash leaves; tests). */
    public void abandon() throws IOException {
        closed = true;
        writes.forcer.close(false);     // a crash: answered changes not yet forced stay live (reconciled at the next open)
        legs.close();
    }

    @Override
    public void close() throws IOException {
        closeClean();
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
        return reconciler.reconcile(progress);
    }

    // ---- the write path (MirrorWritePath) --------------------------------------------------------------------

    public MirrorOp newOp() {
        return writes.newOp();
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
        writes.begin(op, offset, length, local, inUseOnly);
    }

    /**
     * Steps 3–5 after the volume changed leg 0: copies the op's ranges from leg 0 (read through {@code local} on
     * session {@code s}) to every other current leg; the data forces, DONE and RETIRE follow in batches
     * ({@link #forceAll}). Returns when every current leg has the change written; an extra leg that fails is
     * degraded (the change stays recorded for it); a failure of leg 0 throws.
     */
    public void end(MirrorOp op, BlockDevice.Session s, BlockDevice local) throws IOException {
        writes.end(op, s, local);
    }

    /**
     * {@link #end} whose other legs' writes may still be in flight when it returns: asynchronous legs
     * ({@link LegIo#asyncWrites}, NBD) are sent the change and {@code done} hears of it once every current leg
     * completed it, from the thread that sees the last completion. Throws only when nothing is left in flight (then
     * {@code done} is not called).
     */
    public void endThen(MirrorOp op, BlockDevice.Session s, BlockDevice local, BlockDevice.ChangeDone done) throws IOException {
        writes.endThen(op, s, local, done);
    }

    /** Ends a change that never touched leg 0 (its prepare failed): nothing differs, the tag is retired. */
    public void abort(MirrorOp op) {
        writes.abort(op);
    }

    /**
     * Makes every change answered so far durable on every current leg (a client's FLUSH or FUA): waits for the
     * {@link DataForcer} batch that forces their data, appends DONE and retires them. Throws when leg 0's force
     * failed; an extra leg that fails is degraded (the volume goes on without it).
     */
    public void forceAll() throws IOException {
        writes.forceAll();
    }

    /** Data-force batches completed since the open (tests, statistics). */
    public long dataForceBatches() {
        return writes.forcer.batches();
    }

    /**
     * Whether a change of [offset, offset+length) would now wait for nothing slow: its regions all hot and every
     * leg a file (docs/mirrors.md, "Hot regions"); a hint, see {@link MirrorWritePath#quick}.
     */
    public boolean quickChange(long offset, long length) {
        return writes.quick(offset, length);
    }

    /**
     * Whether a change of [offset, offset+length) would now wait only for NBD legs' replies (its regions all hot, every
     * extra leg a file or an asynchronous leg, one of them asynchronous): {@link #endThen} answers it from their replies.
     */
    public boolean asyncChange(long offset, long length) {
        return writes.async(offset, length);
    }

    /** Holds every new change back and waits for those in flight (a restore); false on timeout. */
    public boolean pause() {
        return writes.pause();
    }

    public void resume() {
        writes.resume();
    }

    // ---- status ----------------------------------------------------------------------------------------------

    public int legCount() {
        return legs.legs.length;
    }

    public Reconciliation lastReconciliation() {
        return reconciler.last();
    }

    public long reconciliations() {
        return reconciler.reconciliations();
    }

    public long bytesCopiedTotal() {
        return reconciler.bytesCopiedTotal();
    }

    /** Bytes every reconciliation and resync since the open compared (each unmatched range once). */
    public long bytesComparedTotal() {
        return reconciler.bytesComparedTotal();
    }

    /** Every leg's state and figures now (a snapshot: {@code mirror status}, {@code stats}, the metrics). */
    public List<LegStatus> status() {
        Reconciliation r = reconciler.last();
        boolean reconciling = reconciler.running();
        List<LegStatus> out = new ArrayList<>();
        for (Leg l : legs.legs) {
            String state = l.joining ? (l.stale ? "failed" : "resyncing") : l.stale ? (reconciling && l.failure == null ? "resyncing" : "degraded")
                    : l.failure != null ? "failed" : reconciling ? "resyncing" : "in-sync";
            LegRegionMap m = l.map;
            out.add(new LegStatus(l.index, l.uri, state, Math.max(0, l.depth.get()), l.writes.sum(),
                    l.writeNanos.sum(), l.maxWriteNanos.get(), r == null ? 0 : r.bytesTo(l.index),
                    r == null ? 0 : r.bytesFrom(l.index), r == null ? 0 : r.rangesTo(l.index),
                    r == null ? "none" : r.direction(l.index), l.failure, l.bytesCopiedIn.get(),
                    m == null ? 0 : m.missedBytes(), r == null || !r.tookPart(l.index) ? 0 : r.report().bytesCompared(),
                    l.table == null ? 0 : l.table.commitForces()));
        }
        return out;
    }

    /**
     * Hot regions now ({@link HotRegions}): regions whose region entry is live, so their changes' ENTRY records go
     * unforced; at most {@link #hotRegionCap()} of {@link #regionBytes()} each, which bounds what a reconciliation
     * after a crash compares.
     */
    public int hotRegions() {
        return writes.hot.hot();
    }

    public int hotRegionCap() {
        return HotRegions.FORCED_ENTRIES ? 0 : writes.hot.cap;
    }

    public long regionBytes() {
        return writes.hot.regionBytes();
    }

    /** Region entries made durable since the open (a region made hot). */
    public long regionEntries() {
        return writes.hot.made();
    }

    /** Regions cooled since the open (region entries retired). */
    public long regionsCooled() {
        return writes.hot.cooled();
    }

    /** Changes whose regions were all hot (ENTRY unforced), and changes that found no room under the cap (forced). */
    public long unforcedEntryChanges() {
        return writes.hot.fastChanges();
    }

    /**
     * Fine entries of changes in hot regions retired without waiting for a data force (their regions' entries, live
     * until a data force after their last change completed, cover them).
     */
    public long hotEntriesRetiredEarly() {
        return writes.forcer.retiredEarly();
    }

    /**
     * Hot-path changes that appended no fine ENTRY at all ({@code -Dsnapbd.mirror.hotEntries=none}): their regions'
     * entries are their record. They count neither in a leg's depth (live entries) nor in {@link #hotEntriesRetiredEarly}.
     */
    public long hotChangesWithoutEntry() {
        return writes.forcer.hotWithoutEntry();
    }

    public long capFallbacks() {
        return writes.hot.strictChanges();
    }

    /** Legs degraded now. */
    public int degradedLegs() {
        return legs.staleLegs.get();
    }

    /** Times completed entries were folded into degraded legs' region maps (the table-overflow fallback). */
    public long folds() {
        return legs.degraded.folds();
    }

    /** The running (or last) reconciliation's copy progress: bytes done and in all. */
    public long[] copyProgress() {
        return changes.adding() ? changes.progress() : reconciler.copyProgress();
    }

    /** Table forces run by group commit on leg {@code leg} (tests, stats). */
    public long tableForces(int leg) {
        return legs.legs[leg].table.commitForces();
    }

    public Path directory() {
        return legs.dir;
    }

    public UUID owner() {
        return legs.owner;
    }

    public long size() {
        return legs.size;
    }
}
