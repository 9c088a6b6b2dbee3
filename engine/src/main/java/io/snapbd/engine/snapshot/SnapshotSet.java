package io.snapbd.engine.snapshot;

import io.snapbd.engine.BlockRuns;
import io.snapbd.engine.BlockDeviceException;
import io.snapbd.engine.bitmap.PagedBitMap;
import io.snapbd.engine.bitmap.PagedIntArray;
import io.snapbd.engine.io.GroupCommit;
import io.snapbd.engine.io.MappedData;
import io.snapbd.engine.volume.VolumeNames;

import java.io.IOException;
import java.lang.invoke.VarHandle;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.BitSet;
import java.util.Collections;
import java.util.List;
import java.util.UUID;
import java.util.concurrent.locks.StampedLock;

/**
 * The snapshot queue of one volume (docs/snapshots.md), oldest (head) first, with the save volume and the
 * exception log that they share. It owns copy-on-write for production writes, reads of snapshot content,
 * and snapshot create / delete / terminate. Structural changes run with production writers paused (the
 * volume's write gate) and with every stripe lock held, so readers and copy-on-write see either the old
 * queue or the new one, never a mix.
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

    private final Path dir;
    private final UUID uuid;
    private final long blocks;
    private final int blockSize;
    private final int blockShift;
    private final Production production;
    private final SaveVolume save;
    private final ExceptionLog log;
    private final GroupCommit commit = new GroupCommit();
    private final StampedLock[] stripes = new StampedLock[STRIPES];
    private final Object opsLock = new Object();
    /** Active snapshots, oldest first. Replaced, never mutated, so readers can walk it without locks. */
    private volatile Snapshot[] chain = new Snapshot[0];
    /** Terminated snapshots kept for listing (no content). */
    private final List<SnapshotRecord> invalid = Collections.synchronizedList(new ArrayList<>());
    private long nextSeq;
    /** Sequence of the snapshot a restore began from and has not finished (its marker exists), or -1. */
    private volatile long restoring = -1;
    private final long[] openReport = new long[3];   // dropped entries, damaged records, merged entries

    private SnapshotSet(Path dir, UUID uuid, long blocks, int blockSize, Production production, SaveVolume save,
                        ExceptionLog log) {
        this.dir = dir;
        this.uuid = uuid;
        this.blocks = blocks;
        this.blockSize = blockSize;
        this.blockShift = Integer.numberOfTrailingZeros(blockSize);
        this.production = production;
        this.save = save;
        this.log = log;
        for (int i = 0; i < STRIPES; i++) {
            stripes[i] = new StampedLock();
        }
        this.pending = new PagedIntArray(blocks);
    }

    static Path metaFile(Path dir, long seq) {
        return dir.resolve("snap-" + seq + ".meta");
    }

    /**
     * Opens (creating if needed) the snapshot state of a volume: the queue from {@code snapshots.meta}, each
     * snapshot's frozen meta pages, the block maps from the exception log. Entries of snapshots that no longer
     * exist (a delete interrupted by a crash) are merged exactly as delete would; chunks are rebuilt from the
     * entries, and a chunk claimed twice is an error. A torn tail of the log (a crash during a force) is cut off.
     * Damage (a meta page or log record that was durable and no longer reads back) is never read through: every
     * snapshot whose content depends on it is refused, i.e. marked invalid with the reason in the table, as a
     * terminated one is; a log with damage is not rewritten here, so fsck keeps reporting it.
     */
    public static SnapshotSet open(Path dir, UUID uuid, long blocks, int blockSize, long saveSize, Path saveFile,
                                   Production production) throws IOException {
        SnapshotTable.Contents table = SnapshotTable.read(dir.resolve(TABLE_FILE), uuid);
        SaveVolume save = new SaveVolume(saveFile, saveSize, blockSize);
        List<SnapshotRecord> all = new ArrayList<>();          // active in the table, oldest first
        List<SnapshotRecord> invalidRecords = new ArrayList<>();
        List<SnapshotMetaFile> files = new ArrayList<>();      // null where the file cannot be opened
        PagedBitMap prodMeta = production.meta();
        ExceptionLog openedLog = null;
        try {
            int pages = (int) PagedBitMap.pageCount(blocks);
            List<String> fileProblems = new ArrayList<>();
            for (SnapshotRecord r : table.snapshots()) {
                if (r.state() == SnapshotRecord.State.ACTIVE) {
                    all.add(r);
                    try {
                        files.add(SnapshotMetaFile.open(metaFile(dir, r.seq()), uuid, blocks, true));
                        fileProblems.add(null);
                    } catch (java.nio.file.NoSuchFileException | io.snapbd.engine.format.CorruptMetadataException e) {
                        files.add(null);
                        fileProblems.add(e instanceof java.nio.file.NoSuchFileException ? "missing" : e.getMessage());
                    }
                } else {
                    invalidRecords.add(r);
                }
            }
            // Page states of every active snapshot's file.
            int n = all.size();
            BitSet[] present = new BitSet[n];
            BitSet[] damaged = new BitSet[n];
            long[][][] ownPages = new long[n][][];
            long[] words = new long[PagedBitMap.PAGE_LONGS];
            for (int i = 0; i < n; i++) {
                present[i] = new BitSet();
                damaged[i] = new BitSet();
                ownPages[i] = new long[pages][];
                SnapshotMetaFile f = files.get(i);
                for (int p = 0; p < pages; p++) {
                    SnapshotMetaFile.PageState st = f == null ? SnapshotMetaFile.PageState.DAMAGED : f.readPage(p, words);
                    if (st == SnapshotMetaFile.PageState.PRESENT) {
                        present[i].set(p);
                        ownPages[i][p] = words.clone();
                    } else if (st == SnapshotMetaFile.PageState.DAMAGED) {
                        damaged[i].set(p);
                    }
                }
            }
            // The exception log: entries collected first, applied once the queue is known.
            List<ExceptionLog.Entry> logged = new ArrayList<>();
            ExceptionLog.Scan scan = new ExceptionLog.Scan();
            Path logPath = dir.resolve(LOG_FILE);
            if (!Files.exists(logPath)) {
                openedLog = ExceptionLog.create(logPath, uuid);
            } else {
                openedLog = ExceptionLog.open(logPath, uuid, (snap, block, chunk) -> logged.add(new ExceptionLog.Entry(snap, block, chunk)),
                        scan, true);
            }
            String[] refused = refusals(all, files, fileProblems, present, damaged, pages,
                    scan.hasDamage() ? scan.damageBound : -1,
                    scan.hasDamage() ? "damaged: " + LOG_FILE + " record at byte " + scan.firstDamagedOffset + " (" + scan.firstDamage + ")" : null);
            // Resolve each snapshot's meta pages along the read chain: own page, else the next younger's, else
            // production's. Refused snapshots' intact pages still serve the chains of older kept snapshots; those
            // pages are copied into the older snapshot's file below, as a delete would.
            long[][] resolved = new long[pages][];
            int[] from = new int[pages];
            for (int p = 0; p < pages; p++) {
                resolved[p] = prodMeta.pageRef(p);
                from[p] = -1;
            }
            List<Snapshot> kept = new ArrayList<>();
            List<SnapshotRecord> refusedRecords = new ArrayList<>();
            for (int i = n - 1; i >= 0; i--) {
                for (int p = present[i].nextSetBit(0); p >= 0; p = present[i].nextSetBit(p + 1)) {
                    long[] ref = Arrays.copyOf(ownPages[i][p], PagedBitMap.PAGE_LONGS + 1);
                    ref[PagedBitMap.PAGE_LONGS] = -1;    // generation of a frozen page: never owned by production
                    resolved[p] = ref;
                    from[p] = i;
                }
                if (refused[i] != null) {
                    refusedRecords.add(all.get(i).invalid(refused[i]));
                    continue;
                }
                SnapshotMetaFile f = files.get(i);
                Snapshot s = new Snapshot(all.get(i), blocks, PagedBitMap.view(blocks, resolved), f);
                s.ownedPages.or(present[i]);
                for (int p = 0; p < pages; p++) {
                    if (from[p] > i && refused[from[p]] != null) {
                        f.writeWords(p, ownPages[from[p]][p]);     // its chain read through a refused snapshot
                        s.ownedPages.set(p);
                    }
                }
                f.commit();
                kept.add(0, s);
            }
            Snapshot[] withMeta = kept.toArray(new Snapshot[0]);
            if (withMeta.length > 0) {
                prodMeta.setShared(true);      // production pages the tail resolves to are shared from now on
            }
            long[] report = new long[3];
            List<ExceptionLog.Entry> orphans = new ArrayList<>();
            for (ExceptionLog.Entry e : logged) {
                long snap = e.snapshot();
                long block = e.block();
                int chunk = e.chunk();
                Snapshot s = find(withMeta, snap);
                if (block < 0 || block >= blocks || chunk < 0 || chunk >= save.capacity()) {
                    report[0]++;
                    continue;
                }
                if (s == null) {
                    orphans.add(e);
                    continue;
                }
                if (s.bits.get(block) || !save.claim(chunk)) {
                    throw new IOException(logPath + ": block " + block + " of snapshot " + snap
                            + " or chunk " + chunk + " appears twice");
                }
                s.put(block, chunk);
            }
            report[1] = scan.torn;
            // Entries of deleted or refused snapshots: hand each to the next older kept snapshot if it needs the block.
            for (ExceptionLog.Entry e : orphans) {
                Snapshot older = olderThan(withMeta, e.snapshot());
                int olderIndex = older == null ? -1 : java.util.Arrays.asList(withMeta).indexOf(older);
                if (older != null && neededByOlder(withMeta, olderIndex, e.block()) && save.claim(e.chunk())) {
                    older.put(e.block(), e.chunk());
                    report[2]++;
                } else {
                    report[0]++;
                }
            }
            SnapshotSet set = new SnapshotSet(dir, uuid, blocks, blockSize, production, save, openedLog);
            set.chain = withMeta;
            set.invalid.addAll(invalidRecords);
            set.invalid.addAll(refusedRecords);
            set.nextSeq = Math.max(table.nextSeq(), 1);
            System.arraycopy(report, 0, set.openReport, 0, 3);
            for (SnapshotRecord r : refusedRecords) {
                set.refusedAtOpen.add("snapshot " + r.name() + " (seq " + r.seq() + ") refused: " + r.reason());
            }
            for (int i = 0; i < n; i++) {
                if (refused[i] != null && files.get(i) != null) {
                    files.get(i).close();       // kept on disk for inspection; deleted with the snapshot
                }
            }
            prodMeta.setCopyListener(set::productionPageCopied);
            if (!refusedRecords.isEmpty()) {
                set.writeTable();               // the verdict is durable before anything else changes
            }
            // A damaged log is not compacted (the evidence stays until the snapshots it affects are deleted); a
            // version-1 log is converted once its damage, if any, has been recorded in the table.
            if (scan.version == 1 || (!scan.hasDamage() && report[0] + report[2] > 0)) {
                set.log.rewrite(set.entries());
            }
            set.log.commitPoint(withMeta.length == 0 ? 0 : withMeta[withMeta.length - 1].seq());
            return set;
        } catch (IOException | RuntimeException e) {
            save.close();
            for (SnapshotMetaFile f : files) {
                if (f != null) {
                    f.close();
                }
            }
            if (openedLog != null) {
                openedLog.close();
            }
            throw e;
        }
    }

    /**
     * Why each active snapshot (oldest first) cannot be trusted, or null where it can: its own meta file or a
     * page of it is damaged; its chain reads a page of a younger snapshot's file that is damaged; or a damaged
     * log record may be one of its before-images (sequence ≤ {@code logBound}).
     */
    static String[] refusals(List<SnapshotRecord> all, List<SnapshotMetaFile> files, List<String> fileProblems,
                             BitSet[] present, BitSet[] damaged, int pages, long logBound, String logWhy) {
        int n = all.size();
        String[] why = new String[n];
        for (int i = 0; i < n; i++) {
            if (fileProblems.get(i) != null) {
                why[i] = "damaged: snap-" + all.get(i).seq() + ".meta unreadable (" + shortProblem(fileProblems.get(i)) + ")";
            } else if (!damaged[i].isEmpty()) {
                why[i] = "damaged: snap-" + all.get(i).seq() + ".meta page " + damaged[i].nextSetBit(0)
                        + (files.get(i).version() == 1 ? " fails its checksum (version-1 file)" : " fails its checksum");
            }
        }
        for (int p = 0; p < pages; p++) {
            int owner = -1;
            for (int i = n - 1; i >= 0; i--) {
                if (damaged[i].get(p) || present[i].get(p)) {
                    owner = i;
                }
                if (owner > i && damaged[owner].get(p) && why[i] == null) {
                    why[i] = "damaged: reads page " + p + " of snap-" + all.get(owner).seq() + ".meta, which is damaged";
                }
            }
        }
        for (int i = 0; i < n; i++) {
            if (why[i] == null && logWhy != null && all.get(i).seq() <= logBound) {
                why[i] = logWhy;
            }
        }
        return why;
    }

    private static String shortProblem(String message) {
        int at = message.indexOf(".meta: ");
        return at >= 0 ? message.substring(at + 7) : message;
    }

    /** What open refused, one line per snapshot (for the server's log). */
    public List<String> refusedAtOpen() {
        return List.copyOf(refusedAtOpen);
    }

    private final List<String> refusedAtOpen = new ArrayList<>();

    private void writeTable() throws IOException {
        List<SnapshotRecord> records = new ArrayList<>();
        for (Snapshot x : chain) {
            records.add(x.record);
        }
        synchronized (invalid) {
            records.addAll(invalid);
        }
        records.sort((a, b) -> Long.compare(a.seq(), b.seq()));
        SnapshotTable.write(dir.resolve(TABLE_FILE), uuid, nextSeq, records);
    }

    private static Snapshot find(Snapshot[] c, long seq) {
        for (Snapshot s : c) {
            if (s.seq() == seq) {
                return s;
            }
        }
        return null;
    }

    private static Snapshot olderThan(Snapshot[] c, long seq) {
        Snapshot best = null;
        for (Snapshot s : c) {
            if (s.seq() < seq) {
                best = s;
            }
        }
        return best;
    }

    /** Entries dropped, damaged records skipped, and entries merged into older snapshots while opening. */
    public long[] openReport() {
        return openReport.clone();
    }

    // ---- production meta pages frozen by copy-on-write ----------------------------------------------------

    /** Production is about to change a page some snapshots share: the tail keeps the old content. */
    private void productionPageCopied(int page, long[] frozen) {
        Snapshot[] c = chain;
        if (c.length == 0) {
            return;
        }
        Snapshot tail = c[c.length - 1];
        synchronized (tail.pendingPages) {
            if (tail.ownedPages.get(page)) {
                return;     // the tail has its own copy: production's page was not shared with it
            }
            tail.ownedPages.set(page);
            tail.pendingPages.add(new Snapshot.FrozenPage(page, frozen));
        }
    }

    /** Writes frozen meta pages to their snapshots' files and forces them; runs before production's meta is persisted. */
    public void persistFrozenPages() throws IOException {
        for (Snapshot s : chain) {
            List<Snapshot.FrozenPage> todo;
            synchronized (s.pendingPages) {
                if (s.pendingPages.isEmpty()) {
                    continue;
                }
                todo = new ArrayList<>(s.pendingPages);
            }
            for (Snapshot.FrozenPage fp : todo) {
                s.metaFile.writeWords(fp.page(), fp.words());
            }
            s.metaFile.commit();        // pages forced, then their entries: a crash leaves a page absent, never torn
            synchronized (s.pendingPages) {
                s.pendingPages.removeAll(todo);
            }
        }
    }

    // ---- the write path (docs/snapshots.md, rules 1-6) ---------------------------------------------------------

    public boolean isEmpty() {
        return chain.length == 0;
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
            Snapshot[] c = chain;
            if (c.length == 0) {
                break;
            }
            if (needsCopy(c, b) == null) {
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
        if (pending.get(b) > 0) {
            buf.sawPending = true;
        }
    }

    /** True when the last {@link #copyBeforeOverwrite} met a block whose copy is not durable yet. */
    public static boolean sawPending(CowBuffer buf) {
        return buf.sawPending;
    }

    /**
     * Makes every copy registered so far durable: one group force for all concurrent writers. The forcing thread
     * fills the registered chunks from production (runs of consecutive chunks in one write each), forces the
     * save volume, then appends and forces their log records, so a record never reaches disk before its chunk.
     */
    public void forceCopies() throws IOException {
        commit.sync(this::completePending);
    }

    /**
     * Copies registered by writers, not yet durable. A writer only claims the chunk and sets the snapshot's bit
     * (under the block's stripe lock); the before-image itself is copied by the next force, which batches the
     * copies of many writers into few system calls and keeps page faults on the save volume off the writers.
     * Until the force has finished, production still holds the before-image (rule 5: nobody changes a pending
     * block before {@link #forceCopies} returns), so a snapshot read of a pending block reads production.
     */
    private final PagedIntArray pending;        // block -> chunk + 1 while its copy is pending, else 0 or -1
    private final Object pendingLock = new Object();
    private long[] pendingBlocks = new long[1024];  // in registration order; guarded by pendingLock
    private int[] pendingChunks = new int[1024];
    private long[] pendingSeqs = new long[1024];
    private int pendingCount;
    /** The forcing thread's scratch (guarded by the group commit): before-images of a run of chunks, and a record. */
    private ByteBuffer fillBuffer;
    private MappedData.Cursor fillCursor;
    private static final int FILL_BYTES = 1 << 20;

    private void markPending(long b, int chunk, long seq) {
        pending.set(b, chunk + 1);
        synchronized (pendingLock) {
            if (pendingCount == pendingBlocks.length) {
                int n = pendingCount * 2;
                pendingBlocks = Arrays.copyOf(pendingBlocks, n);
                pendingChunks = Arrays.copyOf(pendingChunks, n);
                pendingSeqs = Arrays.copyOf(pendingSeqs, n);
            }
            pendingBlocks[pendingCount] = b;
            pendingChunks[pendingCount] = chunk;
            pendingSeqs[pendingCount] = seq;
            pendingCount++;
        }
    }

    /** Run by one thread at a time (inside the group commit). */
    private void completePending() throws IOException {
        int n;
        long[] blocksOf;
        int[] chunksOf;
        long[] seqsOf;
        synchronized (pendingLock) {
            n = pendingCount;
            blocksOf = pendingBlocks;       // entries below n never change until this method removes them
            chunksOf = pendingChunks;
            seqsOf = pendingSeqs;
        }
        if (n > 0) {
            fill(blocksOf, chunksOf, n);
        }
        save.force();
        for (int i = 0; i < n; i++) {
            log.append(seqsOf[i], blocksOf[i], chunksOf[i]);
        }
        log.force();
        if (n == 0) {
            return;
        }
        // Durable: snapshot reads may use the chunks from now on. The full fence orders these stores before
        // any change of production the caller makes next (readers re-check the marker after copying production).
        for (int i = 0; i < n; i++) {
            if (pending.get(blocksOf[i]) == chunksOf[i] + 1) {
                pending.set(blocksOf[i], 0);
            }
        }
        VarHandle.fullFence();
        synchronized (pendingLock) {
            System.arraycopy(pendingBlocks, n, pendingBlocks, 0, pendingCount - n);
            System.arraycopy(pendingChunks, n, pendingChunks, 0, pendingCount - n);
            System.arraycopy(pendingSeqs, n, pendingSeqs, 0, pendingCount - n);
            pendingCount -= n;
        }
    }

    /** Copies the before-images of pending entries [0, n) from production into their chunks. */
    private void fill(long[] blocksOf, int[] chunksOf, int n) throws IOException {
        if (fillBuffer == null) {
            fillBuffer = ByteBuffer.allocateDirect(Math.max(FILL_BYTES, blockSize));
            fillCursor = production.data().cursor();
        }
        ByteBuffer buf = fillBuffer;
        int perRun = buf.capacity() / blockSize;
        int i = 0;
        while (i < n) {
            // A run: consecutive chunks (the allocator hands them out in order), at most one buffer full.
            int runStart = i;
            buf.clear();
            do {
                copyProductionBlock(blocksOf[i], buf);
                i++;
            } while (i < n && i - runStart < perRun && chunksOf[i] == chunksOf[i - 1] + 1);
            buf.flip();
            save.data().write(buf, save.offset(chunksOf[runStart]));
        }
    }

    private void copyProductionBlock(long b, ByteBuffer dst) throws IOException {
        long src = b << blockShift;
        int done = 0;
        while (done < blockSize) {
            ByteBuffer from = fillCursor.view(src + done, blockSize - done);
            done += from.remaining();
            dst.put(from);
        }
    }

    /** The snapshot on whose behalf B must be saved (rule 3), or null when B may be overwritten in place. */
    private static Snapshot needsCopy(Snapshot[] c, long b) {
        for (int i = c.length - 1; i >= 0; i--) {
            Snapshot s = c[i];
            if (s.bits.get(b)) {
                return null;            // rule 2: the before-image is already safe
            }
            if (s.meta.get(b)) {
                return s;               // rule 3: B was in use when s was taken
            }
        }
        return null;                    // rule 4: past the head, nothing in use needs saving
    }

    /** Copies block b into a fresh chunk on behalf of the tail, under b's stripe lock. */
    private boolean copyOne(CowBuffer buf, long b) throws IOException {
        while (true) {
            StampedLock lock = stripes[(int) (b & (STRIPES - 1))];
            long stamp = lock.writeLock();
            Snapshot needing;
            try {
                Snapshot[] c = chain;
                if (c.length == 0 || (needing = needsCopy(c, b)) == null) {
                    notePending(buf, b);    // another writer saved it meanwhile
                    return false;
                }
                int chunk = save.allocate();
                if (chunk >= 0) {
                    Snapshot tail = c[c.length - 1];
                    markPending(b, chunk, tail.seq());  // before the bit: whoever sees the bit sees the marker
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

    // ---- the read path (docs/snapshots.md) ---------------------------------------------------------------------

    /** Where block b of snapshot s reads from: a chunk (≥ 0), production (-1) or zeros (-2). */
    static final int FROM_PRODUCTION = -1;
    static final int ZERO = -2;

    private static int source(Snapshot[] c, int index, long b) {
        if (!c[index].meta.get(b)) {
            return ZERO;                // not in use when the snapshot was taken
        }
        for (int i = index; i < c.length; i++) {
            if (c[i].bits.get(b)) {
                int chunk = c[i].map.get(b);
                if (chunk >= 0) {
                    return chunk;
                }
            }
        }
        return FROM_PRODUCTION;
    }

    /**
     * Copies bytes [offset, offset+length) of snapshot {@code seq} into {@code dst} (at its position). Each block
     * is resolved and copied under its stripe's optimistic read, retried if copy-on-write raced with it.
     */
    public void read(long seq, ReadCursor rc, long offset, int length, ByteBuffer dst) throws IOException {
        long pos = offset;
        long end = offset + length;
        while (pos < end) {
            long b = pos >>> blockShift;
            long blockEnd = Math.min(end, (b + 1) << blockShift);
            int n = (int) (blockEnd - pos);
            int at = dst.position();
            StampedLock lock = stripes[(int) (b & (STRIPES - 1))];
            long stamp = lock.tryOptimisticRead();
            boolean ok = stamp != 0 && copyFrom(seq, rc, b, pos, n, dst, at);
            if (!ok || !lock.validate(stamp)) {
                stamp = lock.readLock();
                try {
                    if (!copyFrom(seq, rc, b, pos, n, dst, at)) {
                        throw new BlockDeviceException(BlockDeviceException.Reason.UNAVAILABLE, "snapshot is gone");
                    }
                } finally {
                    lock.unlockRead(stamp);
                }
            }
            dst.position(at + n);
            pos = blockEnd;
        }
    }

    private boolean copyFrom(long seq, ReadCursor rc, long b, long pos, int n, ByteBuffer dst, int at) throws IOException {
        Snapshot[] c = chain;
        int index = -1;
        for (int i = 0; i < c.length; i++) {
            if (c[i].seq() == seq) {
                index = i;
                break;
            }
        }
        if (index < 0) {
            return false;
        }
        int src = source(c, index, b);
        dst.position(at);
        if (src == ZERO) {
            for (int i = 0; i < n; i++) {
                dst.put(at + i, (byte) 0);
            }
            return true;
        }
        if (src >= 0 && pending.get(b) == src + 1) {
            // The chunk is claimed but its copy is not durable (maybe not even made): production still holds the
            // before-image until the force completes and clears the marker, so read production and re-check.
            copyOut(rc.production(production.data()), pos, n, dst, at);
            VarHandle.acquireFence();
            if (pending.get(b) == src + 1) {
                return true;
            }
            dst.position(at);
        }
        if (src == FROM_PRODUCTION) {
            copyOut(rc.production(production.data()), pos, n, dst, at);
        } else {
            copyOut(rc.save(save.data()), save.offset(src) + (pos & (blockSize - 1)), n, dst, at);
        }
        return true;
    }

    private static void copyOut(MappedData.Cursor cur, long off, int n, ByteBuffer dst, int at) throws IOException {
        int done = 0;
        while (done < n) {
            ByteBuffer v = cur.view(off + done, n - done);
            int k = v.remaining();
            dst.limit(at + done + k).position(at + done);
            dst.put(v);
            done += k;
        }
        dst.limit(dst.capacity());
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

    /** The frozen meta bit map of an active snapshot (for block status), or null if it is not active. */
    public PagedBitMap metaOf(long seq) {
        Snapshot s = find(chain, seq);
        return s == null ? null : s.meta;
    }

    public boolean isActive(long seq) {
        return find(chain, seq) != null;
    }

    // ---- pins: reads in flight hold their snapshot in the queue ------------------------------------------------

    /** How long delete and terminate wait for in-flight reads of the snapshot (see {@link #setReaderGrace}). */
    private static volatile long readerGraceNanos = java.util.concurrent.TimeUnit.SECONDS.toNanos(10);

    /**
     * How long deleting or terminating a snapshot waits for the reads in flight on it to finish (a client that
     * stopped reading its socket holds one); after that it goes ahead and those reads end with an error (their
     * connections are closed). Process-wide; default 10 s.
     */
    public static void setReaderGrace(java.time.Duration grace) {
        if (grace.isNegative()) {
            throw new IllegalArgumentException("snapshot read grace must not be negative: " + grace);
        }
        readerGraceNanos = grace.toNanos();
    }

    public static java.time.Duration readerGrace() {
        return java.time.Duration.ofNanos(readerGraceNanos);
    }

    /**
     * Pins active snapshot {@code seq} for one read request: until {@link #unpin}, its before-images stay where
     * they are and production keeps saving them, because delete and terminate wait (up to the grace) for every
     * pin to go. So a read that starts returns the content the snapshot had. Lock-free (one atomic increment);
     * null when the snapshot is not active or is already leaving the queue.
     */
    Snapshot pin(long seq) {
        Snapshot s = find(chain, seq);
        if (s == null) {
            return null;
        }
        s.readers.incrementAndGet();
        if (s.leaving != null) {        // the remover set it before looking at readers: do not hold it up
            unpin(s);
            return null;
        }
        return s;
    }

    void unpin(Snapshot s) {
        if (s.readers.decrementAndGet() == 0 && s.leaving != null) {
            synchronized (s) {
                s.notifyAll();
            }
        }
    }

    /** Why snapshot {@code seq} refuses new reads while its delete or terminate waits for reads in flight, or null. */
    String leavingReason(long seq) {
        Snapshot s = find(chain, seq);
        return s == null ? null : s.leaving;
    }

    /**
     * Marks {@code s} as leaving (new pins are refused) and waits until no read holds it, at most the grace.
     * Holds no stripe lock (a pinned read may need one), only {@link #opsLock}.
     */
    private void drainReaders(Snapshot s, String invalidReason) {
        s.leaving = invalidReason != null ? "snapshot terminated: " + invalidReason : "snapshot deleted";
        if (s.readers.get() == 0) {
            return;
        }
        long grace = readerGraceNanos;
        String what = dir.getFileName() + "@" + s.name();
        String doing = invalidReason != null ? "terminating it (" + invalidReason + ")" : "deleting it";
        System.err.println("snapbd: snapshot " + what + ": waiting up to " + (grace / 1_000_000) + " ms for "
                + s.readers.get() + " read(s) in flight to finish before " + doing);
        long deadline = System.nanoTime() + grace;
        synchronized (s) {
            while (s.readers.get() > 0) {
                long left = deadline - System.nanoTime();
                if (left <= 0) {
                    System.err.println("snapbd: snapshot " + what + ": " + s.readers.get() + " read(s) still in flight after "
                            + (grace / 1_000_000) + " ms: going ahead; they end with an error and their connections are closed");
                    return;
                }
                try {
                    s.wait(Math.max(1, left / 1_000_000));
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    return;
                }
            }
        }
    }

    // ---- queue operations ----------------------------------------------------------------------------------

    public List<Info> list() {
        List<Info> out = new ArrayList<>();
        for (Snapshot s : chain) {
            out.add(new Info(s.record, s.chunks.get(), true));
        }
        synchronized (invalid) {
            for (SnapshotRecord r : invalid) {
                out.add(new Info(r, 0, false));
            }
        }
        out.sort((a, b) -> Long.compare(a.record().seq(), b.record().seq()));
        return out;
    }

    public SnapshotRecord record(String name) {
        for (Info i : list()) {
            if (i.record().name().equals(name)) {
                return i.record();
            }
        }
        return null;
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
    public SnapshotRecord create(String name, io.snapbd.engine.lun.LunState lun) throws IOException {
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
                io.snapbd.engine.lun.LunState.Value l = lun.get();
                SnapshotRecord r = new SnapshotRecord(seq, name, System.currentTimeMillis() * 1_000_000L,
                        SnapshotRecord.State.ACTIVE, null, l.counter(), l.timestamp(), l.enabled());
                Path mf = metaFile(dir, seq);
                Files.deleteIfExists(mf);
                SnapshotMetaFile f = SnapshotMetaFile.create(mf, uuid, blocks);
                production.step("create.meta-file");
                PagedBitMap frozen = production.meta().freeze();
                Snapshot s = new Snapshot(r, blocks, frozen, f);
                List<SnapshotRecord> records = new ArrayList<>();
                for (Snapshot x : chain) {
                    records.add(x.record);
                }
                records.add(r);
                synchronized (invalid) {
                    records.addAll(invalid);
                }
                records.sort((a, b) -> Long.compare(a.seq(), b.seq()));
                try {
                    SnapshotTable.write(dir.resolve(TABLE_FILE), uuid, seq + 1, records);
                } catch (IOException | RuntimeException e) {
                    // Not in the table, so not a snapshot: remove its meta file rather than leave it behind.
                    f.close();
                    Files.deleteIfExists(mf);
                    throw e;
                }
                production.step("create.table");
                nextSeq = seq + 1;
                Snapshot[] next = Arrays.copyOf(chain, chain.length + 1);
                next[next.length - 1] = s;
                chain = next;
                return r;
            }
        } finally {
            production.resumeWriters();
        }
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
            if (find(chain, s.seq()) == null) {
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
     */
    private void removeFromQueue(long seq, String invalidReason) throws IOException {
        Snapshot going = find(chain, seq);
        if (going != null) {
            drainReaders(going, invalidReason);
        }
        boolean removed = false;
        try {
            removeDrained(seq, invalidReason);
            removed = true;
        } finally {
            if (!removed && going != null && find(chain, seq) == going) {
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
            Snapshot[] c = chain;
            int index = -1;
            for (int i = 0; i < c.length; i++) {
                if (c[i].seq() == seq) {
                    index = i;
                }
            }
            SnapshotRecord invalidRecord = null;
            if (index < 0) {
                // An invalid snapshot: only its record goes.
                synchronized (invalid) {
                    invalid.removeIf(r -> r.seq() == seq);
                }
            } else {
                Snapshot victim = c[index];
                Snapshot older = index > 0 ? c[index - 1] : null;
                long[] words = new long[PagedBitMap.PAGE_LONGS];
                if (older != null) {
                    // (1) meta pages frozen in the victim's file serve the older snapshot's read chain
                    boolean wrote = false;
                    long[] olderWords = new long[PagedBitMap.PAGE_LONGS];
                    for (int p = 0; p < victim.metaFile.pageCount(); p++) {
                        if (victim.metaFile.readPage(p, words) == SnapshotMetaFile.PageState.PRESENT
                                && older.metaFile.readPage(p, olderWords) == SnapshotMetaFile.PageState.ABSENT) {
                            older.metaFile.writeWords(p, words);
                            synchronized (older.pendingPages) {
                                older.ownedPages.set(p);
                            }
                            wrote = true;
                        }
                    }
                    if (wrote) {
                        older.metaFile.commit();
                    }
                    production.step("delete.pages");
                }
                if (invalidReason != null) {
                    invalidRecord = victim.record.invalid(invalidReason);
                }
                // In memory: move or free the victim's before-images.
                for (long b = victim.bits.next(0, blocks, true); b < blocks; b = victim.bits.next(b + 1, blocks, true)) {
                    int chunk = victim.map.get(b);
                    if (older != null && neededByOlder(c, index - 1, b)) {
                        older.put(b, chunk);
                    } else {
                        save.free(chunk);
                    }
                }
                Snapshot[] next = new Snapshot[c.length - 1];
                System.arraycopy(c, 0, next, 0, index);
                System.arraycopy(c, index + 1, next, index, c.length - index - 1);
                chain = next;
                if (next.length == 0) {
                    production.meta().setShared(false);
                }
                if (invalidRecord != null) {
                    invalid.add(invalidRecord);
                }
                victim.metaFile.close();
            }
            // (2) table, (3) log, (4) file
            List<SnapshotRecord> records = new ArrayList<>();
            for (Snapshot x : chain) {
                records.add(x.record);
            }
            synchronized (invalid) {
                records.addAll(invalid);
            }
            records.sort((a, b) -> Long.compare(a.seq(), b.seq()));
            SnapshotTable.write(dir.resolve(TABLE_FILE), uuid, nextSeq, records);
            production.step("delete.table");
            log.rewrite(entries());
            production.step("delete.log");
            Files.deleteIfExists(metaFile(dir, seq));
            production.step("delete.file");
        } finally {
            unlockAllStripes(stamps);
        }
    }

    /**
     * Whether some snapshot at or older than {@code c[from]} would read block b through the chain past
     * {@code c[from]}: walking toward the head, a snapshot that had b in use comes before one that holds its
     * own before-image. If not, a before-image leaving the queue above {@code from} is freed, not moved (a
     * snapshot with b not in use reads zeros, and the differential already counts it as changed).
     */
    private static boolean neededByOlder(Snapshot[] c, int from, long b) {
        for (int i = from; i >= 0; i--) {
            if (c[i].bits.get(b)) {
                return false;
            }
            if (c[i].meta.get(b)) {
                return true;
            }
        }
        return false;
    }

    private List<ExceptionLog.Entry> entries() {
        List<ExceptionLog.Entry> out = new ArrayList<>();
        for (Snapshot s : chain) {
            for (long b = s.bits.next(0, blocks, true); b < blocks; b = s.bits.next(b + 1, blocks, true)) {
                out.add(new ExceptionLog.Entry(s.seq(), b, s.map.get(b)));
            }
        }
        return out;
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
        Snapshot[] c = chain;
        int l = -1;
        int m = -1;
        for (int i = 0; i < c.length; i++) {
            if (c[i].name().equals(older)) {
                l = i;
            }
            if (c[i].name().equals(younger)) {
                m = i;
            }
        }
        if (l < 0 || m < 0) {
            String missing = l < 0 ? older : younger;
            SnapshotRecord r = record(missing);
            throw new IllegalArgumentException(r == null ? "no snapshot named " + missing
                    : "snapshot " + missing + " is invalid (" + r.reason() + ")");
        }
        if (m <= l) {
            throw new IllegalArgumentException("snapshot " + younger + " (sequence " + c[m].seq()
                    + ") is not younger than " + older + " (sequence " + c[l].seq() + ")");
        }
        PagedBitMap[] bits = new PagedBitMap[m - l];
        PagedBitMap[] metas = new PagedBitMap[m - l];
        for (int i = l; i < m; i++) {
            bits[i - l] = c[i].bits;
            metas[i - l] = c[i].meta;
        }
        return new Differential(bits, metas, c[m].meta, blocks);
    }

    /** Names of the active snapshots older than {@code name}, oldest first. */
    public List<String> olderThan(String name) {
        List<String> out = new ArrayList<>();
        for (Snapshot s : chain) {
            if (s.name().equals(name)) {
                return out;
            }
            out.add(s.name());
        }
        return List.of();
    }

    /** Seq of the named active snapshot, or -1. */
    public long seqOf(String name) {
        for (Snapshot s : chain) {
            if (s.name().equals(name)) {
                return s.seq();
            }
        }
        return -1;
    }

    /** Sequence numbers of the active snapshots, oldest first. */
    public long[] activeSeqs() {
        Snapshot[] c = chain;
        long[] out = new long[c.length];
        for (int i = 0; i < c.length; i++) {
            out[i] = c[i].seq();
        }
        return out;
    }

    /** Index of the snapshot in the queue whose content block b of snapshot seq resolves to (for restore). */
    public int sourceOf(long seq, long b) {
        Snapshot[] c = chain;
        for (int i = 0; i < c.length; i++) {
            if (c[i].seq() == seq) {
                return source(c, i, b);
            }
        }
        return ZERO;
    }

    /**
     * A restore from snapshot {@code seq} begins: from now until a restore completes ({@link #endRestore}), the
     * snapshot cannot be deleted, since an interrupted restore is finished from it at the next open. Fails if the
     * snapshot is no longer active (a delete or termination won the race). Returns the sequence protected before.
     */
    public long beginRestore(long seq) {
        synchronized (opsLock) {
            Snapshot s = find(chain, seq);
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
        for (Snapshot s : chain) {
            if (s.seq() >= seq && s.bits.get(b)) {
                return true;
            }
        }
        return false;
    }

    /** Closes files without persisting anything more (crash simulation in tests). */
    public void abandon() throws IOException {
        for (Snapshot s : chain) {
            s.metaFile.close();
        }
        log.close();
        save.close();
    }

    @Override
    public void close() throws IOException {
        forceCopies();          // records still buffered in memory reach the log
        persistFrozenPages();
        Snapshot[] c = chain;
        log.commitPoint(c.length == 0 ? 0 : c[c.length - 1].seq());   // every record is durable: damage to one is damage
        for (Snapshot s : chain) {
            s.metaFile.close();
        }
        log.close();
        save.close();
    }

    long blocks() {
        return blocks;
    }
}
