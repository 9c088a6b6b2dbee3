package io.snapbd.engine.fsck;

import io.snapbd.engine.bitmap.BitMapFile;
import io.snapbd.engine.bitmap.PagedBitMap;
import io.snapbd.engine.lun.LunState;
import io.snapbd.engine.mirror.MirrorChecker;
import io.snapbd.engine.snapshot.RestoreMarker;
import io.snapbd.engine.snapshot.SnapshotChecker;
import io.snapbd.engine.volume.Volume;
import io.snapbd.engine.volume.VolumeHeader;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
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
                damagedPages(h, Volume.META_FILE, damaged, problems, notes);
            }
        } catch (IOException e) {
            problems.add(e.getMessage());
        }
        long regions = (blocks + (1L << h.regionShift()) - 1) >>> h.regionShift();
        PagedBitMap intents = new PagedBitMap(regions);
        BitSet damagedIntents = new BitSet();
        try (BitMapFile f = BitMapFile.open(dir.resolve(Volume.INTENT_FILE), BitMapFile.Kind.INTENT, h.uuid(), intents, damagedIntents)) {
            if (!damagedIntents.isEmpty()) {
                damagedPages(h, Volume.INTENT_FILE, damagedIntents, problems, notes);
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
        checkLunState(dir, h, problems, notes);
        SnapshotChecker.check(dir, h.uuid(), blocks, h.blockSize(), h.saveSize(), problems, notes);
        RestoreMarker.check(dir, h.uuid(), problems, notes);
        MirrorChecker.check(dir, h.uuid(), h.size(), h.clean(), problems, notes);
        try {
            notes.addAll(Volume.overlayFileNotes(dir, h));
        } catch (IOException e) {
            notes.add("overlay files not listed: " + e.getMessage());
        }
        long scanned = 0;
        if (scanData && metaOk && damaged.isEmpty()) {
            // Read through the file, not a mapping: a read of a hole in a sparse file needs no space, whereas a
            // mapping's page fault on a full file system (tmpfs) allocates, fails, and kills the thread with SIGBUS.
            try (FileChannel data = FileChannel.open(dir.resolve(Volume.DATA_FILE), StandardOpenOption.READ)) {
                int bs = h.blockSize();
                int perRead = Math.max(1, SCAN_BYTES / bs);
                ByteBuffer buf = ByteBuffer.allocateDirect(perRead * bs).order(ByteOrder.LITTLE_ENDIAN);
                long bad = 0;
                long firstBad = -1;
                for (long b = meta.next(0, blocks, false); b < blocks; ) {
                    // a run of blocks not in use, read in pieces of up to SCAN_BYTES
                    long n = Math.min(perRead, meta.next(b, blocks, true) - b);
                    read(data, buf, b * bs, (int) n * bs);
                    for (int i = 0; i < n; i++) {
                        scanned++;
                        if (!zero(buf, i * bs, bs)) {
                            // Only an error on a clean volume: after a crash, recovery re-derives these from the data.
                            if (firstBad < 0) {
                                firstBad = b + i;
                            }
                            bad++;
                        }
                    }
                    b = meta.next(b + n, blocks, false);
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

    /** {@code lun.state}: the open-time checks (size, magic, crc, version, owner = the volume's UUID, flags). */
    /**
     * Bit-map pages are rewritten in place and their checksums live in another 4 KiB page of the file, so a power
     * cut between two forces can keep one without the other: on a volume not cleanly closed that is a crash
     * artefact the next open repairs (it rebuilds the regions under the page from the data), on a clean one damage.
     */
    private static void damagedPages(VolumeHeader h, String file, BitSet damaged, List<String> problems, List<String> notes) {
        String msg = file + ": " + damaged.cardinality() + " page(s) fail their checksum: " + damaged;
        if (h.clean()) {
            problems.add(msg);
        } else {
            notes.add(msg + " (a power cut between a page and its checksum; the next open rebuilds the regions under them)");
        }
    }

    private static void checkLunState(Path dir, VolumeHeader h, List<String> problems, List<String> notes) {
        try {
            LunState.Stored s = LunState.read(dir.resolve(LunState.FILE), h.uuid());
            if (s == null) {
                notes.add(LunState.FILE + " absent (never opened): LUN state starts at counter 0, "
                        + "timestamp = creation time");
            } else if (!s.clean() && h.clean()) {
                problems.add(LunState.FILE + ": holds lease ceilings on a cleanly closed volume "
                        + "(a clean close writes the exact values first)");
            }
        } catch (IOException e) {
            problems.add(e.getMessage());
        }
    }

    private static void checkSize(Path file, long expected, List<String> problems) {
        try {
            long actual = Files.size(file);
            if (actual < expected) {
                problems.add(file + ": " + actual + " bytes, expected " + expected);
            }
        } catch (IOException e) {
            problems.add(file + ": missing or unreadable (" + e.getMessage() + ")");
        }
    }

    /** Bytes of data read per system call by the scan. */
    private static final int SCAN_BYTES = 1 << 20;

    /** Reads {@code length} bytes at {@code offset} into {@code buf}; bytes past the end of the file read as zero. */
    private static void read(FileChannel ch, ByteBuffer buf, long offset, int length) throws IOException {
        buf.clear().limit(length);
        while (buf.hasRemaining()) {
            if (ch.read(buf, offset + buf.position()) < 0) {
                while (buf.hasRemaining()) {
                    buf.put((byte) 0);
                }
            }
        }
    }

    private static boolean zero(ByteBuffer buf, int from, int length) {
        for (int i = from; i < from + length; i += 8) {
            if (buf.getLong(i) != 0) {
                return false;
            }
        }
        return true;
    }
}
