package io.snapbd.engine.fsck;

import io.snapbd.engine.bitmap.BitMapFile;
import io.snapbd.engine.bitmap.PagedBitMap;
import io.snapbd.engine.io.MappedData;
import io.snapbd.engine.volume.Volume;
import io.snapbd.engine.volume.VolumeHeader;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.List;

/**
 * Read-only verifier of one volume directory: every file's magic, version, checksums and geometry, and the
 * engine's invariants (a clean volume has no write intents; a block not in use reads as zeros).
 * It never writes; run it while no server holds the data directory.
 */
public final class VolumeChecker {

    public record Report(String volume, List<String> problems, List<String> notes, long blocksInUse, long blocksScanned) {
        public boolean ok() {
            return problems.isEmpty();
        }
    }

    private VolumeChecker() {
    }

    public static Report check(Path dir, boolean scanData) {
        List<String> problems = new ArrayList<>();
        List<String> notes = new ArrayList<>();
        String name = dir.getFileName().toString();
        VolumeHeader h;
        try {
            h = VolumeHeader.read(dir.resolve(Volume.HEADER_FILE));
        } catch (IOException e) {
            problems.add(e.getMessage());
            return new Report(name, problems, notes, 0, 0);
        }
        if (!h.name().equals(name)) {
            problems.add(Volume.HEADER_FILE + ": names volume '" + h.name() + "' but lives in directory '" + name + "'");
        }
        notes.add(h.clean() ? "cleanly closed" : "not cleanly closed (the next open rebuilds the meta bit map of regions with write intents)");
        checkSize(dir.resolve(Volume.DATA_FILE), h.size(), problems);
        checkSize(dir.resolve(Volume.SAVE_FILE), h.saveSize(), problems);

        long blocks = h.blocks();
        PagedBitMap meta = new PagedBitMap(blocks);
        BitSet damaged = new BitSet();
        boolean metaOk = false;
        try (BitMapFile f = BitMapFile.open(dir.resolve(Volume.META_FILE), BitMapFile.Kind.META, h.uuid(), meta, damaged)) {
            metaOk = true;
            if (!damaged.isEmpty()) {
                problems.add(Volume.META_FILE + ": " + damaged.cardinality() + " page(s) fail their checksum: " + damaged);
            }
        } catch (IOException e) {
            problems.add(e.getMessage());
        }
        long regions = (blocks + (1L << h.regionShift()) - 1) >>> h.regionShift();
        PagedBitMap intents = new PagedBitMap(regions);
        BitSet damagedIntents = new BitSet();
        try (BitMapFile f = BitMapFile.open(dir.resolve(Volume.INTENT_FILE), BitMapFile.Kind.INTENT, h.uuid(), intents, damagedIntents)) {
            if (!damagedIntents.isEmpty()) {
                problems.add(Volume.INTENT_FILE + ": " + damagedIntents.cardinality() + " page(s) fail their checksum");
            }
            long set = intents.cardinality();
            if (h.clean() && set > 0) {
                problems.add(Volume.INTENT_FILE + ": " + set + " write intent(s) on a cleanly closed volume");
            } else if (set > 0) {
                notes.add(set + " region(s) with write intents");
            }
        } catch (IOException e) {
            problems.add(e.getMessage());
        }
        io.snapbd.engine.snapshot.SnapshotChecker.check(dir, h.uuid(), blocks, h.blockSize(), h.saveSize(), problems, notes);
        io.snapbd.engine.snapshot.RestoreMarker.check(dir, h.uuid(), problems, notes);
        long scanned = 0;
        if (scanData && metaOk && damaged.isEmpty()) {
            try (MappedData data = new MappedData(dir.resolve(Volume.DATA_FILE), h.size())) {
                MappedData.Cursor c = data.cursor();
                long bad = 0;
                long firstBad = -1;
                for (long b = meta.next(0, blocks, false); b < blocks; b = meta.next(b + 1, blocks, false)) {
                    scanned++;
                    if (!zero(c, b * h.blockSize(), h.blockSize())) {
                        // Only an error on a clean volume: after a crash, recovery re-derives these from the data.
                        if (firstBad < 0) {
                            firstBad = b;
                        }
                        bad++;
                    }
                }
                if (bad > 0) {
                    String msg = bad + " block(s) not in use hold non-zero data (first: block " + firstBad + ")";
                    if (h.clean()) {
                        problems.add(msg);
                    } else {
                        notes.add(msg + "; recovery marks them in use");
                    }
                }
            } catch (IOException e) {
                problems.add(Volume.DATA_FILE + ": " + e.getMessage());
            }
        }
        return new Report(h.name(), problems, notes, meta.cardinality(), scanned);
    }

    private static void checkSize(Path file, long expected, List<String> problems) {
        try {
            long actual = Files.size(file);
            if (actual < expected) {
                problems.add(file.getFileName() + ": " + actual + " bytes, expected " + expected);
            }
        } catch (IOException e) {
            problems.add(file.getFileName() + ": missing or unreadable (" + e.getMessage() + ")");
        }
    }

    private static boolean zero(MappedData.Cursor c, long offset, int length) throws IOException {
        long pos = offset;
        long end = offset + length;
        while (pos < end) {
            ByteBuffer v = c.view(pos, end - pos);
            for (int i = v.position(); i < v.limit(); i += 8) {
                if (v.limit() - i >= 8 ? v.getLong(i) != 0 : v.get(i) != 0) {
                    return false;
                }
            }
            pos += v.remaining();
        }
        return true;
    }
}
