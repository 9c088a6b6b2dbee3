package io.snapbd.engine.snapshot;

import io.snapbd.engine.bitmap.BitMapFile;
import io.snapbd.engine.bitmap.PagedBitMap;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
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
 * inside the save volume).
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
        for (SnapshotRecord r : table.snapshots()) {
            if (r.seq() >= table.nextSeq()) {
                problems.add(SnapshotSet.TABLE_FILE + ": snapshot " + r.name() + " has sequence " + r.seq()
                        + " but the next sequence is " + table.nextSeq());
            }
            if (r.state() != SnapshotRecord.State.ACTIVE) {
                continue;
            }
            active.add(r.seq());
            Path mf = SnapshotSet.metaFile(dir, r.seq());
            try (BitMapFile f = BitMapFile.openPages(mf, BitMapFile.Kind.SNAPSHOT_META, uuid, blocks)) {
                long[] words = new long[PagedBitMap.PAGE_LONGS];
                int present = 0;
                int torn = 0;
                for (int p = 0; p < f.pageCount(); p++) {
                    BitMapFile.PageState st = f.readPage(p, words);
                    present += st == BitMapFile.PageState.PRESENT ? 1 : 0;
                    torn += st == BitMapFile.PageState.DAMAGED ? 1 : 0;
                }
                if (torn > 0) {
                    notes.add(mf.getFileName() + ": " + torn + " torn page(s), read as absent (their content is still in production's map)");
                }
                notes.add("snapshot " + r.name() + " (seq " + r.seq() + "): " + present + " frozen meta page(s) of its own");
            } catch (IOException e) {
                problems.add(e.getMessage());
            }
        }
        Path log = dir.resolve(SnapshotSet.LOG_FILE);
        if (!Files.exists(log)) {
            if (!active.isEmpty()) {
                problems.add(SnapshotSet.LOG_FILE + " is missing but " + active.size() + " snapshot(s) exist");
            }
            return;
        }
        long chunks = saveSize / blockSize;
        BitSet usedChunks = new BitSet();
        Map<Long, BitSet> mapped = new HashMap<>();
        long[] counts = new long[3];     // entries, orphans, bad
        long[] damaged = new long[1];
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
        }, damaged)) {
            notes.add(SnapshotSet.LOG_FILE + ": " + counts[0] + " entries, " + usedChunks.cardinality() + " of " + chunks + " save chunks in use");
            if (counts[1] > 0) {
                notes.add(SnapshotSet.LOG_FILE + ": " + counts[1] + " entries of deleted snapshots (merged into older snapshots at the next open)");
            }
            if (damaged[0] > 0) {
                notes.add(SnapshotSet.LOG_FILE + ": " + damaged[0] + " torn record(s) from a crash, ignored (never made durable)");
            }
        } catch (IOException e) {
            problems.add(e.getMessage());
        }
    }
}
