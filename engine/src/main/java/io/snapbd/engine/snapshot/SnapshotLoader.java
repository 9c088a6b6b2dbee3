package io.snapbd.engine.snapshot;

import io.snapbd.engine.bitmap.PagedBitMap;
import io.snapbd.engine.format.CorruptMetadataException;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.BitSet;
import java.util.List;
import java.util.UUID;

/**
 * Reads the snapshot state of a volume at open: the queue from {@code snapshots.meta}, each snapshot's frozen
 * meta pages, the block maps from the exception log. Entries of snapshots that no longer exist (a delete
 * interrupted by a crash) are merged exactly as delete would; chunks are rebuilt from the entries, and a chunk
 * claimed twice is an error. A torn tail of the log (a crash during a force) is cut off. Damage (a meta page or
 * log record that was durable and no longer reads back) is never read through: every snapshot whose content
 * depends on it is refused, i.e. marked invalid with the reason in the table, as a terminated one is; a log
 * with damage is not rewritten here, so fsck keeps reporting it ({@link SnapshotChecker} uses the same
 * {@link #refusals}).
 */
final class SnapshotLoader {

    /**
     * What open found: the save volume with its chunks claimed, the log, the queue, the next sequence number,
     * {@code report} (entries dropped, damaged records skipped, entries merged into older snapshots) and one
     * line per refused snapshot.
     */
    record Loaded(SaveVolume save, ExceptionLog log, SnapshotChain chain, long nextSeq, long[] report,
                  List<String> refused) {
    }

    private SnapshotLoader() {
    }

    /**
     * Loads the snapshot state of a volume (creating an empty exception log if there is none); records the
     * snapshots it refuses in the table and compacts the log when that is safe. On failure every file it
     * opened is closed.
     */
    static Loaded load(Path dir, UUID uuid, long blocks, int blockSize, long saveSize, Path saveFile,
                       PagedBitMap prodMeta) throws IOException {
        SnapshotTable.Contents table = SnapshotTable.read(dir.resolve(SnapshotSet.TABLE_FILE), uuid);
        SaveVolume save = new SaveVolume(saveFile, saveSize, blockSize);
        List<SnapshotRecord> all = new ArrayList<>();          // active in the table, oldest first
        List<SnapshotRecord> invalidRecords = new ArrayList<>();
        List<SnapshotMetaFile> files = new ArrayList<>();      // null where the file cannot be opened
        ExceptionLog openedLog = null;
        try {
            int pages = (int) PagedBitMap.pageCount(blocks);
            List<String> fileProblems = new ArrayList<>();
            for (SnapshotRecord r : table.snapshots()) {
                if (r.state() == SnapshotRecord.State.ACTIVE) {
                    all.add(r);
                    try {
                        files.add(SnapshotMetaFile.open(SnapshotSet.metaFile(dir, r.seq()), uuid, blocks, true));
                        fileProblems.add(null);
                    } catch (NoSuchFileException | CorruptMetadataException e) {
                        files.add(null);
                        fileProblems.add(e instanceof NoSuchFileException ? "missing" : e.getMessage());
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
            Path logPath = dir.resolve(SnapshotSet.LOG_FILE);
            if (!Files.exists(logPath)) {
                openedLog = ExceptionLog.create(logPath, uuid);
            } else {
                openedLog = ExceptionLog.open(logPath, uuid, (snap, block, chunk) -> logged.add(new ExceptionLog.Entry(snap, block, chunk)),
                        scan, true);
            }
            String[] refused = refusals(all, files, fileProblems, present, damaged, pages,
                    scan.hasDamage() ? scan.damageBound : -1,
                    scan.hasDamage() ? "damaged: " + SnapshotSet.LOG_FILE + " record at byte " + scan.firstDamagedOffset + " (" + scan.firstDamage + ")" : null);
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
                Snapshot s = SnapshotChain.find(withMeta, snap);
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
                Snapshot older = SnapshotChain.olderThan(withMeta, e.snapshot());
                int olderIndex = older == null ? -1 : SnapshotChain.indexOf(withMeta, older.seq());
                if (older != null && SnapshotChain.neededByOlder(withMeta, olderIndex, e.block()) && save.claim(e.chunk())) {
                    older.put(e.block(), e.chunk());
                    report[2]++;
                } else {
                    report[0]++;
                }
            }
            SnapshotChain chain = new SnapshotChain(blocks);
            chain.replace(withMeta);
            invalidRecords.forEach(chain::addInvalid);
            refusedRecords.forEach(chain::addInvalid);
            long nextSeq = Math.max(table.nextSeq(), 1);
            List<String> refusedLines = new ArrayList<>();
            for (SnapshotRecord r : refusedRecords) {
                refusedLines.add("snapshot " + r.name() + " (seq " + r.seq() + ") refused: " + r.reason());
            }
            for (int i = 0; i < n; i++) {
                if (refused[i] != null && files.get(i) != null) {
                    files.get(i).close();       // kept on disk for inspection; deleted with the snapshot
                }
            }
            if (!refusedRecords.isEmpty()) {
                // the verdict is durable before anything else changes
                SnapshotTable.write(dir.resolve(SnapshotSet.TABLE_FILE), uuid, nextSeq, chain.records(null));
            }
            // A damaged log is not compacted (the evidence stays until the snapshots it affects are deleted); a
            // version-1 log is converted once its damage, if any, has been recorded in the table.
            if (scan.version == 1 || (!scan.hasDamage() && report[0] + report[2] > 0)) {
                openedLog.rewrite(chain.entries());
            }
            openedLog.commitPoint(withMeta.length == 0 ? 0 : withMeta[withMeta.length - 1].seq());
            return new Loaded(save, openedLog, chain, nextSeq, report, List.copyOf(refusedLines));
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
}
