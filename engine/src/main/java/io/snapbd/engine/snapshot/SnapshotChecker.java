package io.snapbd.engine.snapshot;

import io.snapbd.engine.bitmap.PagedBitMap;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.UUID;

/**
 * Read-only checks of a volume's snapshot files for fsck: the snapshot table, every active snapshot's meta
 * file, and the exception log (no chunk used twice, no block mapped twice for one snapshot, every chunk
 * inside the save volume). Damage — a meta page, table entry or log record that was durable once and no longer
 * reads back — is a problem naming the file and the snapshots that lose content (the ones the next open refuses);
 * a torn log tail past the last commit point is what a crash leaves and is only a note.
 */
public final class SnapshotChecker {
    private SnapshotChecker() {
    }

    public static void check(Path dir, UUID uuid, long blocks, int blockSize, long saveSize, List<String> problems,
                             List<String> notes) {
        SnapshotTable.Contents table;
        try {
            table = SnapshotTable.read(dir.resolve(SnapshotSet.TABLE_FILE), uuid);
        } catch (IOException e) {
            problems.add(e.getMessage());
            return;
        }
        Set<Long> active = new HashSet<>();
        List<SnapshotRecord> all = new ArrayList<>();
        List<SnapshotMetaFile> files = new ArrayList<>();
        List<String> fileProblems = new ArrayList<>();
        int pages = (int) PagedBitMap.pageCount(blocks);
        List<BitSet> present = new ArrayList<>();
        List<BitSet> damaged = new ArrayList<>();
        for (SnapshotRecord r : table.snapshots()) {
            if (r.seq() >= table.nextSeq()) {
                problems.add(SnapshotSet.TABLE_FILE + ": snapshot " + r.name() + " has sequence " + r.seq()
                        + " but the next sequence is " + table.nextSeq());
            }
            if (r.state() != SnapshotRecord.State.ACTIVE) {
                if (r.reason() != null && r.reason().startsWith("damaged")) {
                    // Refused at an open: the volume lost that snapshot's content. Stays a problem until deleted.
                    problems.add("snapshot " + r.name() + " (seq " + r.seq() + ") was refused for damaged metadata and has lost its content: "
                            + r.reason() + " (delete the snapshot to clear this)");
                } else {
                    notes.add("snapshot " + r.name() + " (seq " + r.seq() + ") is invalid: " + r.reason());
                }
                continue;
            }
            active.add(r.seq());
            all.add(r);
            BitSet pr = new BitSet();
            BitSet dm = new BitSet();
            present.add(pr);
            damaged.add(dm);
            Path mf = SnapshotSet.metaFile(dir, r.seq());
            SnapshotMetaFile f;
            try {
                f = SnapshotMetaFile.open(mf, uuid, blocks, false);
            } catch (IOException e) {
                files.add(null);
                fileProblems.add(e instanceof NoSuchFileException ? "missing" : e.getMessage());
                dm.set(0, pages);
                problems.add((e instanceof NoSuchFileException ? mf.getFileName() + " is missing" : e.getMessage())
                        + ": the frozen meta bit map of snapshot " + r.name() + " is lost");
                continue;
            }
            try (f) {
                files.add(f);
                fileProblems.add(null);
                long[] words = new long[PagedBitMap.PAGE_LONGS];
                for (int p = 0; p < f.pageCount(); p++) {
                    SnapshotMetaFile.PageState st = f.readPage(p, words);
                    if (st == SnapshotMetaFile.PageState.PRESENT) {
                        pr.set(p);
                    } else if (st == SnapshotMetaFile.PageState.DAMAGED) {
                        dm.set(p);
                    }
                }
                if (!dm.isEmpty()) {
                    problems.add(mf.getFileName() + ": " + dm.cardinality() + " page(s) (first: page " + dm.nextSetBit(0)
                            + ", blocks " + ((long) dm.nextSetBit(0) << PagedBitMap.PAGE_SHIFT) + " … "
                            + Math.min(blocks - 1, (((long) dm.nextSetBit(0) + 1) << PagedBitMap.PAGE_SHIFT) - 1) + ") fail their checksum"
                            + (f.version() == 1 ? " (version-1 file: a torn page cannot be told from damage)"
                            : " though they were forced before their table entry (damage, not a crash)")
                            + ": the frozen meta bits of snapshot " + r.name() + " there are lost");
                }
                if (f.version() == 1) {
                    notes.add(mf.getFileName() + ": format version 1" + (dm.isEmpty() ? " (converted to version 2 at the next open)" : ""));
                }
                notes.add("snapshot " + r.name() + " (seq " + r.seq() + "): " + pr.cardinality() + " frozen meta page(s) of its own");
            } catch (IOException e) {
                problems.add(e.getMessage());
            }
        }
        Path log = dir.resolve(SnapshotSet.LOG_FILE);
        ExceptionLog.Scan scan = new ExceptionLog.Scan();
        if (!Files.exists(log)) {
            if (!active.isEmpty()) {
                problems.add(SnapshotSet.LOG_FILE + " is missing but " + active.size() + " snapshot(s) exist");
            }
        } else {
            checkLog(log, uuid, blocks, blockSize, saveSize, active, scan, problems, notes);
        }
        // Which snapshots the damage takes with it: exactly the ones the next open refuses.
        if (files.size() == all.size()) {
            String[] refused = SnapshotLoader.refusals(all, files, fileProblems, present.toArray(new BitSet[0]),
                    damaged.toArray(new BitSet[0]), pages, scan.hasDamage() ? scan.damageBound : -1,
                    scan.hasDamage() ? "damaged: " + SnapshotSet.LOG_FILE + " record at byte " + scan.firstDamagedOffset : null);
            for (int i = 0; i < refused.length; i++) {
                if (refused[i] != null) {
                    problems.add("snapshot " + all.get(i).name() + " (seq " + all.get(i).seq()
                            + ") has lost content and will be refused (marked invalid) at the next open: " + refused[i]);
                }
            }
        }
    }

    private static void checkLog(Path log, UUID uuid, long blocks, int blockSize, long saveSize, Set<Long> active,
                                 ExceptionLog.Scan scan, List<String> problems, List<String> notes) {
        long chunks = saveSize / blockSize;
        BitSet usedChunks = new BitSet();
        Map<Long, BitSet> mapped = new HashMap<>();
        long[] counts = new long[2];     // entries, orphans
        try (ExceptionLog l = ExceptionLog.open(log, uuid, (snap, block, chunk) -> {
            counts[0]++;
            if (block < 0 || block >= blocks || chunk < 0 || chunk >= chunks) {
                problems.add(SnapshotSet.LOG_FILE + ": entry snapshot " + snap + " block " + block + " chunk " + chunk + " is out of range");
                return;
            }
            if (!active.contains(snap)) {
                counts[1]++;
                return;
            }
            BitSet m = mapped.computeIfAbsent(snap, k -> new BitSet());
            if (m.get((int) block)) {
                problems.add(SnapshotSet.LOG_FILE + ": block " + block + " is mapped twice for snapshot " + snap);
            }
            m.set((int) block);
            if (usedChunks.get(chunk)) {
                problems.add(SnapshotSet.LOG_FILE + ": chunk " + chunk + " is used twice");
            }
            usedChunks.set(chunk);
        }, scan, false)) {
            notes.add(SnapshotSet.LOG_FILE + ": format version " + scan.version + ", " + counts[0] + " entries, "
                    + usedChunks.cardinality() + " of " + chunks + " save chunks in use");
            if (counts[1] > 0) {
                notes.add(SnapshotSet.LOG_FILE + ": " + counts[1] + " entries of deleted or invalid snapshots (merged into older snapshots or dropped at the next open)");
            }
            if (scan.torn > 0) {
                notes.add(SnapshotSet.LOG_FILE + ": torn tail of " + scan.torn + " record slot(s) past the last commit point "
                        + "(a crash during a copy-on-write force; nothing depended on them), cut off at the next open");
            }
            if (scan.hasDamage()) {
                problems.add(scan.describeDamage(log));
            }
        } catch (IOException e) {
            problems.add(e.getMessage());
        }
    }
}
