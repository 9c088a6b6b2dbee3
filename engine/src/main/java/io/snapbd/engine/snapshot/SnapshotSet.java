package io.snapbd.engine.snapshot;

import io.snapbd.engine.BlockRuns;
import io.snapbd.engine.bitmap.PagedBitMap;
import io.snapbd.engine.io.MappedData;
import io.snapbd.engine.lun.LunState;
import io.snapbd.engine.format.VolumeNames;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import java.util.List;
import java.util.UUID;
import java.util.concurrent.locks.StampedLock;

/**
 * The snapshot queue of one volume (docs/snapshots.md), oldest (head) first, with the save volume and the
 * exception log that they share: the facade the volume uses. It owns copy-on-write for production writes and
 * snapshot create / delete / terminate. Its parts each do one job: {@link SnapshotLoader} (reading the state at
 * open, damage), {@link SnapshotChain} (the queue and its lookups), {@link PendingCopies} (before-images claimed
 * but not yet durable, and the group force that makes them so), {@link SnapshotReads} (reads of snapshot content
 * and the pins that hold a snapshot while they run) and {@link FrozenPages} (production meta pages the tail
 * keeps). Structural changes run with production writers paused (the volume's write gate) and with every stripe
 * lock held, so readers and copy-on-write see either the old queue or the new one, never a mix.
 */
public final class SnapshotSet implements AutoCloseable {

    public static final String TABLE_FILE = "snapshots.meta";
    public static final String LOG_FILE = "exceptions.log";
    static final int STRIPES = 256;

    /** What the volume lends the snapshot machinery. */
    public interface Production {
        MappedData data();

        PagedBitMap meta();

        /** Pauses production writers (waits for in-flight ones) so the queue can change; false on timeout. */
        boolean pauseWriters() throws IOException;

        void resumeWriters();

        /** Forces production data and meta bit map (the snapshot's point in time becomes durable). */
        void flushProduction() throws IOException;

        /**
         * Called between the durable steps of create, delete and restore with the name of the step just done
         * ("create.table", "delete.log", ...: docs/engine.md). A no-op in the server; crash tests throw from it to
         * stop the operation there, as a kill -9 would, and reopen the volume.
         */
        default void step(String name) throws IOException {
        }
    }

    /** Per-session state for copy-on-write. */
    public static final class CowBuffer {
        boolean sawPending;
    }

    /** Summary of one snapshot for listings. */
    public record Info(SnapshotRecord record, long chunksUsed, boolean active) {
    }

    /** Per-session cursors for snapshot reads. */
    public static final class ReadCursor {
        private MappedData.Cursor production;
        private MappedData.Cursor save;

        MappedData.Cursor production(MappedData d) {
            if (production == null) {
                production = d.cursor();
            }
            return production;
        }

        MappedData.Cursor save(MappedData d) {
            if (save == null) {
                save = d.cursor();
            }
            return save;
        }
    }

    private final Path dir;
    private final UUID uuid;
    private final long blocks;
    private final Production production;
    private final SaveVolume save;
    private final ExceptionLog log;
    private final SnapshotChain chain;
    private final PendingCopies copies;
    private final SnapshotReads reads;
    private final FrozenPages frozenPages;
    private final StampedLock[] stripes = new StampedLock[STRIPES];
    private final Object opsLock = new Object();
    private long nextSeq;
    /** Sequence of the snapshot a restore began from and has not finished (its marker exists), or -1. */
    private volatile long restoring = -1;
    private final long[] openReport;   // dropped entries, damaged records, merged entries
    private final List<String> refusedAtOpen;

    private SnapshotSet(Path dir, UUID uuid, long blocks, int blockSize, Production production,
                        SnapshotLoader.Loaded loaded) {
        this.dir = dir;
        this.uuid = uuid;
        this.blocks = blocks;
        this.production = production;
        this.save = loaded.save();
        this.log = loaded.log();
        this.chain = loaded.chain();
        this.nextSeq = loaded.nextSeq();
        this.openReport = loaded.report();
        this.refusedAtOpen = loaded.refused();
        for (int i = 0; i < STRIPES; i++) {
            stripes[i] = new StampedLock();
        }
        this.frozenPages = new FrozenPages(chain);
        this.copies = new PendingCopies(blocks, blockSize, production, save, log);
        this.reads = new SnapshotReads(dir.getFileName().toString(), chain, copies, stripes, production, save, blockSize);
    }

    static Path metaFile(Path dir, long seq) {
        return dir.resolve("snap-" + seq + ".meta");
    }

    /**
     * Opens (creating if needed) the snapshot state of a volume ({@link SnapshotLoader}: the queue, frozen meta
     * pages and block maps; interrupted deletes merged; snapshots that read through damage refused); from then
     * on the tail keeps each shared meta page production is about to change ({@link FrozenPages}).
     */
    public static SnapshotSet open(Path dir, UUID uuid, long blocks, int blockSize, long saveSize, Path saveFile,
                                   Production production) throws IOException {
        SnapshotLoader.Loaded loaded = SnapshotLoader.load(dir, uuid, blocks, blockSize, saveSize, saveFile, production.meta());
        SnapshotSet set = new SnapshotSet(dir, uuid, blocks, blockSize, production, loaded);
        production.meta().setCopyListener(set.frozenPages::pageCopied);
        return set;
    }

    /** What open refused, one line per snapshot (for the server's log). */
    public List<String> refusedAtOpen() {
        return refusedAtOpen;
    }

    /** Entries dropped, damaged records skipped, and entries merged into older snapshots while opening. */
    public long[] openReport() {
        return openReport.clone();
    }

    /** Writes frozen meta pages to their snapshots' files and forces them; runs before production's meta is persisted. */
    public void persistFrozenPages() throws IOException {
        frozenPages.persist();
    }

    // ---- the write path (docs/snapshots.md, rules 1-6) ---------------------------------------------------------

    public boolean isEmpty() {
        return chain.active().length == 0;
    }

    /**
     * Saves the before-image of every block in [first, last] that some snapshot still needs, then makes the
     * saved chunks and their map entries durable (one group force for all concurrent writers). Returns the
     * number of blocks copied. Called with the production writer admitted by the write gate.
     */
    public int beforeOverwrite(CowBuffer buf, long first, long last) throws IOException {
        int copied = copyBeforeOverwrite(buf, first, last);
        if (copied > 0 || buf.sawPending) {
            forceCopies();
        }
        return copied;
    }

    /**
     * Copies the before-images [first, last] needs into the save volume and the log, without forcing them:
     * the caller must call {@link #forceCopies} before the production blocks may change.
     */
    public int copyBeforeOverwrite(CowBuffer buf, long first, long last) throws IOException {
        buf.sawPending = false;
        int copied = 0;
        long from = first;
        // Int-counted runs (see BlockRuns): a TRIM or zeroing may cover millions of blocks.
        for (; last - from >= BlockRuns.MAX_BLOCKS; from += BlockRuns.MAX_BLOCKS) {
            copied += copyRun(buf, from, BlockRuns.MAX_BLOCKS);
        }
        return copied + copyRun(buf, from, (int) (last - from + 1));
    }

    private int copyRun(CowBuffer buf, long first, int n) throws IOException {
        int copied = 0;
        for (int i = 0; i < n; i++) {
            long b = first + i;
            Snapshot[] c = chain.active();
            if (c.length == 0) {
                break;
            }
            if (SnapshotChain.needsCopy(c, b) == null) {
                notePending(buf, b);
                continue;
            }
            if (copyOne(buf, b)) {
                copied++;
            }
        }
        return copied;
    }

    /**
     * B is saved already, but maybe by a writer whose copy is not durable yet: then this write too must wait for
     * the force, or production would change before the force fills the chunk from it (rule 5 holds for every
     * writer of b, not only the one that copied it).
     */
    private void notePending(CowBuffer buf, long b) {
        if (copies.isPending(b)) {
            buf.sawPending = true;
        }
    }

    /** True when the last {@link #copyBeforeOverwrite} met a block whose copy is not durable yet. */
    public static boolean sawPending(CowBuffer buf) {
        return buf.sawPending;
    }

    /**
     * Makes every copy registered so far durable: one group force for all concurrent writers
     * ({@link PendingCopies#force}).
     */
    public void forceCopies() throws IOException {
        copies.force();
    }

    /** Copies block b into a fresh chunk on behalf of the tail, under b's stripe lock. */
    private boolean copyOne(CowBuffer buf, long b) throws IOException {
        while (true) {
            StampedLock lock = stripes[(int) (b & (STRIPES - 1))];
            long stamp = lock.writeLock();
            Snapshot needing;
            try {
                Snapshot[] c = chain.active();
                if (c.length == 0 || (needing = SnapshotChain.needsCopy(c, b)) == null) {
                    notePending(buf, b);    // another writer saved it meanwhile
                    return false;
                }
                int chunk = save.allocate();
                if (chunk >= 0) {
                    Snapshot tail = c[c.length - 1];
                    copies.add(b, chunk, tail.seq());  // before the bit: whoever sees the bit sees the marker
                    tail.put(b, chunk);
                    return true;
                }
            } finally {
                lock.unlockWrite(stamp);
            }
            // Save volume full: production must not fail (docs/snapshots.md, overflow). Terminate the snapshot that needed the
            // copy; its before-images move to older snapshots or are freed, which may free space.
            terminate(needing, "save volume full");
        }
    }

    // ---- the read path (docs/snapshots.md): SnapshotReads ------------------------------------------------------

    /**
     * Copies bytes [offset, offset+length) of snapshot {@code seq} into {@code dst} (at its position). Each block
     * is resolved and copied under its stripe's optimistic read, retried if copy-on-write raced with it.
     */
    public void read(long seq, ReadCursor rc, long offset, int length, ByteBuffer dst) throws IOException {
        reads.read(seq, rc, offset, length, dst);
    }

    /** The frozen meta bit map of an active snapshot (for block status), or null if it is not active. */
    public PagedBitMap metaOf(long seq) {
        Snapshot s = chain.find(seq);
        return s == null ? null : s.meta;
    }

    public boolean isActive(long seq) {
        return chain.find(seq) != null;
    }

    /**
     * How long deleting or terminating a snapshot waits for the reads in flight on it to finish (a client that
     * stopped reading its socket holds one); after that it goes ahead and those reads end with an error (their
     * connections are closed). Process-wide; default 10 s.
     */
    public static void setReaderGrace(Duration grace) {
        SnapshotReads.setReaderGrace(grace);
    }

    /** Pins active snapshot {@code seq} for one read request ({@link SnapshotReads#pin}); null if it cannot be read. */
    Snapshot pin(long seq) {
        return reads.pin(seq);
    }

    void unpin(Snapshot s) {
        reads.unpin(s);
    }

    /** Why snapshot {@code seq} refuses new reads while its delete or terminate waits for reads in flight, or null. */
    String leavingReason(long seq) {
        return reads.leavingReason(seq);
    }

    // ---- queue operations ----------------------------------------------------------------------------------

    public List<Info> list() {
        return chain.list();
    }

    public SnapshotRecord record(String name) {
        return chain.record(name);
    }

    public long saveChunksUsed() {
        return save.used();
    }

    public long saveChunks() {
        return save.capacity();
    }

    /**
     * Takes a snapshot: waits for in-flight writes, makes production durable, freezes its meta bit map
     * (copy-on-write pages: O(pages) pointer copies, no data copied) and appends the snapshot at the tail.
     */
    public SnapshotRecord create(String name, LunState lun) throws IOException {
        VolumeNames.check(name);
        if (saveChunks() == 0) {
            throw new NoSaveVolumeException(dir.getFileName().toString());
        }
        if (record(name) != null) {
            throw new IllegalArgumentException("snapshot " + name + " already exists");
        }
        // Pause before taking opsLock: a writer terminating a snapshot holds opsLock and must be able to finish.
        if (!production.pauseWriters()) {
            throw new IOException("in-flight writes did not finish in time (a client stalled in the middle of a request?); no snapshot taken");
        }
        try {
            synchronized (opsLock) {
                if (record(name) != null) {
                    throw new IllegalArgumentException("snapshot " + name + " already exists");
                }
                production.flushProduction();
                production.step("create.flushed");
                long seq = nextSeq;
                // The volume's LUN state at the snapshot's point: no writer runs, so it is exact.
                LunState.Value l = lun.get();
                SnapshotRecord r = new SnapshotRecord(seq, name, System.currentTimeMillis() * 1_000_000L,
                        SnapshotRecord.State.ACTIVE, null, l.counter(), l.timestamp(), l.enabled());
                Path mf = metaFile(dir, seq);
                Files.deleteIfExists(mf);
                SnapshotMetaFile f = SnapshotMetaFile.create(mf, uuid, blocks);
                production.step("create.meta-file");
                PagedBitMap frozen = production.meta().freeze();
                Snapshot s = new Snapshot(r, blocks, frozen, f);
                try {
                    writeTable(seq + 1, r);
                } catch (IOException | RuntimeException e) {
                    // Not in the table, so not a snapshot: remove its meta file rather than leave it behind.
                    f.close();
                    Files.deleteIfExists(mf);
                    throw e;
                }
                production.step("create.table");
                nextSeq = seq + 1;
                Snapshot[] c = chain.active();
                Snapshot[] next = Arrays.copyOf(c, c.length + 1);
                next[next.length - 1] = s;
                chain.replace(next);
                return r;
            }
        } finally {
            production.resumeWriters();
        }
    }

    /** Writes {@code snapshots.meta}: the queue as it is, plus {@code adding} if not null. */
    private void writeTable(long next, SnapshotRecord adding) throws IOException {
        SnapshotTable.write(dir.resolve(TABLE_FILE), uuid, next, chain.records(adding));
    }

    /** Deletes a snapshot at any position; before-images an older snapshot still needs move to it. */
    public void delete(String name) throws IOException {
        synchronized (opsLock) {
            SnapshotRecord r = record(name);
            if (r == null) {
                throw new IllegalArgumentException("no snapshot named " + name);
            }
            if (r.seq() == restoring) {
                throw new IllegalArgumentException("snapshot " + name + " is being restored into production, or its restore "
                        + "was interrupted: restore it (or another snapshot) to the end before deleting it");
            }
            removeFromQueue(r.seq(), null);
        }
    }

    /**
     * Ends a snapshot that can no longer be kept (save volume full): it leaves the queue like a deleted one but
     * stays listed as invalid with the reason. Called from a production writer that found no free chunk.
     */
    private void terminate(Snapshot s, String reason) throws IOException {
        synchronized (opsLock) {
            if (chain.find(s.seq()) == null) {
                return;         // someone else terminated it meanwhile
            }
            removeFromQueue(s.seq(), reason);
        }
    }

    /**
     * Removes snapshot seq from the queue. Production writers keep running: every stripe lock is held, so no
     * copy-on-write or snapshot read is in progress, and a writer that decided a block was already safe stays
     * right (the before-image it relied on moves to the older neighbour or was not needed). Order on disk, each step crash-safe: (1) frozen meta pages the older
     * neighbour lacks are written to its file; (2) the snapshot table drops (or invalidates) it; (3) the
     * exception log is rewritten with its entries moved to the older neighbour or dropped; (4) its meta file
     * is deleted. A crash after (2) is finished by {@link #open}, which merges orphan entries the same way.
     * First, new reads of the snapshot are refused and those in flight are waited for (at most the grace,
     * {@link #setReaderGrace}), so no read is cut off by its before-images moving, being freed or reused.
     * Runs under {@link #opsLock} and no stripe lock while it waits (a pinned read may need one).
     */
    private void removeFromQueue(long seq, String invalidReason) throws IOException {
        Snapshot going = chain.find(seq);
        if (going != null) {
            reads.drain(going, invalidReason);
        }
        boolean removed = false;
        try {
            removeDrained(seq, invalidReason);
            removed = true;
        } finally {
            if (!removed && going != null && chain.find(seq) == going) {
                going.leaving = null;       // still in the queue: readable again
            }
        }
    }

    private void removeDrained(long seq, String invalidReason) throws IOException {
        long[] stamps = lockAllStripes();
        try {
            // Copies registered before the stripes were taken are made durable first (no new ones can start):
            // their chunks may be moved or freed below, and the rewritten log must not name an unfilled chunk.
            forceCopies();
            persistFrozenPages();
            production.step("delete.forced");
            Snapshot[] c = chain.active();
            int index = SnapshotChain.indexOf(c, seq);
            if (index < 0) {
                // An invalid snapshot: only its record goes.
                chain.removeInvalid(seq);
            } else {
                Snapshot victim = c[index];
                Snapshot older = index > 0 ? c[index - 1] : null;
                if (older != null) {
                    // (1) meta pages frozen in the victim's file serve the older snapshot's read chain
                    frozenPages.handOver(victim, older);
                    production.step("delete.pages");
                }
                // In memory: move or free the victim's before-images.
                for (long b = victim.bits.next(0, blocks, true); b < blocks; b = victim.bits.next(b + 1, blocks, true)) {
                    int chunk = victim.map.get(b);
                    if (older != null && SnapshotChain.neededByOlder(c, index - 1, b)) {
                        older.put(b, chunk);
                    } else {
                        save.free(chunk);
                    }
                }
                Snapshot[] next = new Snapshot[c.length - 1];
                System.arraycopy(c, 0, next, 0, index);
                System.arraycopy(c, index + 1, next, index, c.length - index - 1);
                chain.replace(next);
                if (next.length == 0) {
                    production.meta().setShared(false);
                }
                if (invalidReason != null) {
                    chain.addInvalid(victim.record.invalid(invalidReason));
                }
                victim.metaFile.close();
            }
            // (2) table, (3) log, (4) file
            writeTable(nextSeq, null);
            production.step("delete.table");
            log.rewrite(chain.entries());
            production.step("delete.log");
            Files.deleteIfExists(metaFile(dir, seq));
            production.step("delete.file");
        } finally {
            unlockAllStripes(stamps);
        }
    }

    private long[] lockAllStripes() {
        long[] stamps = new long[STRIPES];
        for (int i = 0; i < STRIPES; i++) {
            stamps[i] = stripes[i].writeLock();
        }
        return stamps;
    }

    private void unlockAllStripes(long[] stamps) {
        for (int i = STRIPES - 1; i >= 0; i--) {
            stripes[i].unlockWrite(stamps[i]);
        }
    }

    /**
     * The difference from active snapshot {@code older} to the younger active snapshot {@code younger}, over
     * the queue as it is now (snapshots deleted between them have been merged into older ones).
     */
    public Differential differential(String older, String younger) {
        return chain.differential(older, younger);
    }

    /** Names of the active snapshots older than {@code name}, oldest first. */
    public List<String> olderThan(String name) {
        return chain.olderThan(name);
    }

    /** Seq of the named active snapshot, or -1. */
    public long seqOf(String name) {
        return chain.seqOf(name);
    }

    /**
     * A restore from snapshot {@code seq} begins: from now until a restore completes ({@link #endRestore}), the
     * snapshot cannot be deleted, since an interrupted restore is finished from it at the next open. Fails if the
     * snapshot is no longer active (a delete or termination won the race). Returns the sequence protected before.
     */
    public long beginRestore(long seq) {
        synchronized (opsLock) {
            Snapshot s = chain.find(seq);
            if (s == null) {
                throw new IllegalArgumentException("snapshot sequence " + seq + " is no longer active and cannot be restored");
            }
            long before = restoring;
            restoring = seq;
            return before;
        }
    }

    /** A restore completed (its marker is gone), or its marker could not be written: protect {@code seq} again (-1: none). */
    public void endRestore(long seq) {
        synchronized (opsLock) {
            restoring = seq;
        }
    }

    /** True if any snapshot from {@code seq} to the tail holds a before-image of b. */
    public boolean savedAtOrAfter(long seq, long b) {
        return chain.savedAtOrAfter(seq, b);
    }

    /** Closes files without persisting anything more (crash simulation in tests). */
    public void abandon() throws IOException {
        for (Snapshot s : chain.active()) {
            s.metaFile.close();
        }
        log.close();
        save.close();
    }

    @Override
    public void close() throws IOException {
        forceCopies();          // records still buffered in memory reach the log
        persistFrozenPages();
        Snapshot[] c = chain.active();
        log.commitPoint(c.length == 0 ? 0 : c[c.length - 1].seq());   // every record is durable: damage to one is damage
        for (Snapshot s : chain.active()) {
            s.metaFile.close();
        }
        log.close();
        save.close();
    }
}
