package io.snapbd.engine.snapshot;

import io.snapbd.engine.BlockDevice;
import io.snapbd.engine.BlockDeviceException;
import io.snapbd.engine.TestVolumes;
import io.snapbd.engine.fsck.VolumeChecker;
import io.snapbd.engine.volume.Volume;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;

import static io.snapbd.engine.TestVolumes.pattern;
import static io.snapbd.engine.TestVolumes.read;
import static io.snapbd.engine.TestVolumes.write;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Bit rot in snapshot metadata (issue 21 B): one byte flipped (XOR 0x5a) in a snapshot's meta file (header, page
 * table, page data) or in any forced record of the exception log must be reported by fsck as a problem naming the
 * file, and the snapshots that lose content must be refused (listed invalid with the reason, reads fail) — never
 * read through as silently wrong data, and the log evidence never compacted away by the open. A torn log tail left
 * by a crash is repaired silently.
 */
@Timeout(300)
class SnapshotDamageTest {

    private static final int BS = 512;
    private static final long SIZE = 65536L * BS;            // two meta pages (32768 blocks each)
    private static final long SAVE = 256L * BS;
    /** Blocks whose content the test compares: data blocks, and blocks whose meta bit differs between snapshots. */
    private static final long[] BLOCKS = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 100, 200, 40000, 40005, 40009, 40010};
    private static final String[] FILES = {"snap-1.meta", "snap-2.meta", "exceptions.log", "snapshots.meta",
            "volume.meta", "meta.bitmap", "intent.map", "lun.state"};

    @TempDir
    Path tmp;

    private Path dir;
    private final Map<String, byte[]> pristine = new HashMap<>();
    private final Map<String, Map<Long, byte[]>> expected = new HashMap<>();

    /**
     * Two snapshots with copied blocks and frozen meta pages. s1 owns page 0 (frozen when block 100 came into
     * use); s2 owns pages 0 and 1 (blocks 200 and 40010), so s1 reads page 1 through s2's file. Before-images of
     * blocks 0…4 and 0, 1 belong to s1 and s2; those of 5…9 to s2 on behalf of s1 as well.
     */
    @BeforeEach
    void makeVolume() throws IOException {
        dir = tmp.resolve("vol");
        Volume.create(dir, "vol", SIZE, BS, SAVE, true, TestVolumes.java());
        Volume v = Volume.open(dir, TestVolumes.java());
        try (BlockDevice.Session s = v.openSession()) {
            write(v, s, 0, pattern(1, 10 * BS));
            write(v, s, 40000L * BS, pattern(2, 10 * BS));
            v.createSnapshot("s1");
            write(v, s, 0, pattern(3, 5 * BS));
            write(v, s, 100L * BS, pattern(4, BS));
            v.flush();
            v.createSnapshot("s2");
            write(v, s, 5L * BS, pattern(5, 5 * BS));
            write(v, s, 40010L * BS, pattern(6, BS));
            write(v, s, 200L * BS, pattern(7, BS));
            write(v, s, 0, pattern(8, 2 * BS));
            v.flush();
            for (String snap : new String[]{"s1", "s2", null}) {
                expected.put(snap == null ? "" : snap, contents(v, snap));
            }
        }
        v.close();
        // The scenario is what the test means it to be.
        assertTrue(TestVolumes.isZero(expected.get("s1").get(100L)), "block 100 not in use in s1");
        assertFalse(TestVolumes.isZero(expected.get("s2").get(100L)));
        assertTrue(TestVolumes.isZero(expected.get("s2").get(40010L)));
        assertFalse(TestVolumes.isZero(expected.get("").get(40010L)));
        assertFalse(Arrays.equals(expected.get("s1").get(0L), expected.get("s2").get(0L)));
        for (String f : FILES) {
            pristine.put(f, Files.readAllBytes(dir.resolve(f)));
        }
        VolumeChecker.Report r = VolumeChecker.check(dir, false);
        assertTrue(r.ok(), r.problems().toString());
    }

    private static Map<Long, byte[]> contents(Volume v, String snap) throws IOException {
        BlockDevice d = snap == null ? v : v.snapshotView(snap);
        Map<Long, byte[]> out = new HashMap<>();
        try (BlockDevice.Session s = d.openSession()) {
            for (long b : BLOCKS) {
                out.put(b, read(d, s, b * BS, BS));
            }
        }
        return out;
    }

    private void restore() throws IOException {
        try (Stream<Path> files = Files.list(dir)) {
            for (Path p : files.toList()) {
                String n = p.getFileName().toString();
                if (!n.equals("data.img") && !n.equals("save.img") && !pristine.containsKey(n)) {
                    Files.delete(p);
                }
            }
        }
        for (Map.Entry<String, byte[]> e : pristine.entrySet()) {
            Files.write(dir.resolve(e.getKey()), e.getValue());
        }
    }

    private void flip(String file, long offset) throws IOException {
        byte[] b = Files.readAllBytes(dir.resolve(file));
        b[(int) offset] ^= 0x5a;
        Files.write(dir.resolve(file), b);
    }

    /**
     * Flips one byte, then: fsck reports a problem naming the file; the volume opens; every snapshot either
     * reads exactly its content or is refused (invalid, "damaged" reason, reads fail); {@code mustRefuse} is
     * refused; production is intact; the verdict and the evidence survive a restart.
     */
    private void corruptAndCheck(String file, long offset, String mustRefuse) throws IOException {
        restore();
        flip(file, offset);
        String what = file + " byte " + offset;
        VolumeChecker.Report r = VolumeChecker.check(dir, false);
        assertFalse(r.ok(), what + ": fsck says clean; notes " + r.notes());
        assertTrue(r.problems().stream().anyMatch(p -> p.contains(file)), what + ": " + r.problems());
        assertTrue(r.problems().stream().anyMatch(p -> p.contains("snapshot " + mustRefuse + " ")), what + ": " + r.problems());
        List<String> refused = new ArrayList<>();
        for (int round = 0; round < 2; round++) {
            Volume v = Volume.open(dir, TestVolumes.java());
            try {
                assertEquals(expected.get(""), contentsEqual(expected.get(""), contents(v, null)), what + ": production");
                List<String> now = new ArrayList<>();
                for (SnapshotSet.Info i : v.snapshots().list()) {
                    String name = i.record().name();
                    if (!i.active()) {
                        assertNotNull(i.record().reason(), what);
                        assertTrue(i.record().reason().startsWith("damaged"), what + ": " + i.record().reason());
                        now.add(name);
                        BlockDevice view = v.snapshotView(name);
                        try (BlockDevice.Session s = view.openSession()) {
                            BlockDeviceException e = assertThrows(BlockDeviceException.class, () -> read(view, s, 0, BS), what);
                            assertEquals(BlockDeviceException.Reason.UNAVAILABLE, e.reason(), what);
                        }
                        assertTrue(view.unavailableReason().contains(file), what + ": " + view.unavailableReason());
                    } else {
                        assertEquals(expected.get(name), contentsEqual(expected.get(name), contents(v, name)),
                                what + ": snapshot " + name + " is served with wrong data");
                    }
                }
                assertTrue(now.contains(mustRefuse), what + ": " + mustRefuse + " not refused: " + v.snapshots().list());
                if (round == 0) {
                    refused = now;
                } else {
                    assertEquals(refused, now, what + ": the verdict changed at the second open");
                }
            } finally {
                v.close();
            }
            VolumeChecker.Report after = VolumeChecker.check(dir, false);
            assertFalse(after.ok(), what + ": fsck clean after the server opened it: " + after.notes());
        }
    }

    /** Returns {@code actual} if it equals {@code expected} block by block, else {@code actual} (shown by assertEquals). */
    private static Map<Long, byte[]> contentsEqual(Map<Long, byte[]> expected, Map<Long, byte[]> actual) {
        for (long b : BLOCKS) {
            if (!Arrays.equals(expected.get(b), actual.get(b))) {
                return Map.of(b, actual.get(b));
            }
        }
        return expected;
    }

    @Test
    void damagedPageTableEntriesAreRefusedNotReadAsAbsent() throws IOException {
        // entry 0 (present) and entry 1 (absent) of each snapshot's table: crc, flags, page, entry crc
        for (long off : new long[]{4096, 4097, 4100, 4104, 4108, 4112, 4116, 4124}) {
            corruptAndCheck("snap-1.meta", off, "s1");
            corruptAndCheck("snap-2.meta", off, "s2");
        }
    }

    @Test
    void damagedPageDataIsRefusedAlongWithTheOlderSnapshotsReadingThroughIt() throws IOException {
        long pages = 4096 + 4096;     // pages_offset: header + one 4 KiB table block
        for (long off : new long[]{pages + 50, pages + 3000, pages + 4095}) {
            corruptAndCheck("snap-1.meta", off, "s1");
            corruptAndCheck("snap-2.meta", off, "s2");
        }
        // s1 has no page 1 of its own: it reads s2's, so damage there takes s1 too
        corruptAndCheck("snap-2.meta", pages + 4096 + (40010 - 32768) / 8, "s1");
    }

    @Test
    void aDamagedMetaHeaderRefusesTheSnapshot() throws IOException {
        for (long off : new long[]{0, 8, 20, 33, 52, 61}) {
            corruptAndCheck("snap-2.meta", off, "s2");
        }
    }

    @Test
    void damageAnywhereInTheLogIsRefusedFromTheMiddleToTheTail() throws IOException {
        byte[] log = pristine.get("exceptions.log");
        int records = 0;
        for (int slot = 0; ExceptionLog.HEADER_BYTES + (slot + 1) * ExceptionLog.RECORD_BYTES <= log.length; slot++) {
            ByteBuffer r = ByteBuffer.wrap(log, ExceptionLog.HEADER_BYTES + slot * ExceptionLog.RECORD_BYTES,
                    ExceptionLog.RECORD_BYTES).slice().order(ByteOrder.LITTLE_ENDIAN);
            if (r.getInt(0) != ExceptionLog.TYPE_COW) {
                continue;
            }
            records++;
            long snapshot = r.getLong(24);
            for (int off : new int[]{0, 9, 17, 25, 33, 41, 45, 61}) {
                corruptAndCheck("exceptions.log", ExceptionLog.HEADER_BYTES + (long) slot * ExceptionLog.RECORD_BYTES + off,
                        "s" + snapshot);
            }
        }
        assertEquals(12, records, "before-images: s1 0…4, s2 5…9 and 0, 1");
    }

    /**
     * A crash while a copy-on-write batch is being forced leaves a torn tail past the last commit point: fsck only
     * notes it, open cuts it off, every snapshot stays valid with its content, and the next fsck is clean.
     */
    @Test
    void aTornLogTailFromACrashIsRepairedSilently() throws IOException {
        restore();
        Volume v = Volume.open(dir, TestVolumes.java());
        try (BlockDevice.Session s = v.openSession()) {
            write(v, s, 2L * BS, pattern(9, BS));      // s2 has block 2 already: no copy
            write(v, s, 40001L * BS, pattern(10, BS)); // copied for s2 (and s1): forced, then overwritten
            v.awaitStagedApplied();
        }
        Map<Long, byte[]> s1 = contents(v, "s1");
        Map<Long, byte[]> s2 = contents(v, "s2");
        v.abandon();                                   // kill -9
        Path log = dir.resolve("exceptions.log");
        byte[] b = Files.readAllBytes(log);
        int end = ExceptionLog.HEADER_BYTES;
        for (int slot = 0; ExceptionLog.HEADER_BYTES + (slot + 1) * ExceptionLog.RECORD_BYTES <= b.length; slot++) {
            int o = ExceptionLog.HEADER_BYTES + slot * ExceptionLog.RECORD_BYTES;
            if (!TestVolumes.isZero(b, o, o + ExceptionLog.RECORD_BYTES)) {
                end = o + ExceptionLog.RECORD_BYTES;
            }
        }
        // The next batch was being written when the power went: half a record, then a lost sector, then a record.
        byte[] junk = pattern(11, 3 * ExceptionLog.RECORD_BYTES);
        Arrays.fill(junk, 40, 2 * ExceptionLog.RECORD_BYTES, (byte) 0);
        TestVolumes.writeRaw(log, end, junk);
        VolumeChecker.Report r = VolumeChecker.check(dir, false);
        assertTrue(r.ok(), r.problems().toString());
        assertTrue(r.notes().stream().anyMatch(n -> n.contains("torn tail")), r.notes().toString());
        v = Volume.open(dir, TestVolumes.java());
        try {
            for (SnapshotSet.Info i : v.snapshots().list()) {
                assertTrue(i.active(), i.toString());
            }
            assertEquals(s1, contentsEqual(s1, contents(v, "s1")));
            assertEquals(s2, contentsEqual(s2, contents(v, "s2")));
            assertEquals(1, v.snapshots().openReport()[1] > 0 ? 1 : 0, "the torn slots are counted");
        } finally {
            v.close();
        }
        VolumeChecker.Report clean = VolumeChecker.check(dir, false);
        assertTrue(clean.ok(), clean.problems().toString());
        assertFalse(clean.notes().stream().anyMatch(n -> n.contains("torn")), clean.notes().toString());
    }

    /**
     * Whole records lost from the end of the log (the file cut on a record boundary, or its last records zeroed)
     * are damage, not a log that ended there: the commit stamp in the header (written at every open and clean close)
     * says how many were durable. Without it (a log written before stamps) the log opens as before.
     */
    @Test
    void wholeRecordsLostFromTheEndOfTheLogAreDamage() throws IOException {
        byte[] log = pristine.get("exceptions.log");
        int used = 0;
        for (int slot = 0; ExceptionLog.HEADER_BYTES + (slot + 1) * ExceptionLog.RECORD_BYTES <= log.length; slot++) {
            if (!TestVolumes.isZero(log, ExceptionLog.HEADER_BYTES + slot * ExceptionLog.RECORD_BYTES,
                    ExceptionLog.HEADER_BYTES + (slot + 1) * ExceptionLog.RECORD_BYTES)) {
                used = slot + 1;
            }
        }
        int lastCow = 0;
        for (int slot = 0; slot < used; slot++) {
            if (ByteBuffer.wrap(log).order(ByteOrder.LITTLE_ENDIAN).getInt(ExceptionLog.HEADER_BYTES + slot * ExceptionLog.RECORD_BYTES)
                    == ExceptionLog.TYPE_COW) {
                lastCow = slot;
            }
        }
        int cut = ExceptionLog.HEADER_BYTES + lastCow * ExceptionLog.RECORD_BYTES;    // s2's last before-image and after
        for (boolean zeroed : new boolean[]{false, true}) {
            restore();
            byte[] b = zeroed ? log.clone() : Arrays.copyOf(log, cut);
            if (zeroed) {
                Arrays.fill(b, cut, ExceptionLog.HEADER_BYTES + used * ExceptionLog.RECORD_BYTES, (byte) 0);
            }
            Files.write(dir.resolve("exceptions.log"), b);
            VolumeChecker.Report r = VolumeChecker.check(dir, false);
            assertTrue(r.problems().stream().anyMatch(p -> p.contains("exceptions.log") && p.contains("missing from the end")),
                    (zeroed ? "zeroed: " : "truncated: ") + r.problems());
            Volume v = Volume.open(dir, TestVolumes.java());
            try {
                for (SnapshotSet.Info i : v.snapshots().list()) {
                    assertFalse(i.active(), i.record().name() + " is served although its before-images may be lost");
                    assertTrue(i.record().reason().contains("exceptions.log"), i.record().reason());
                }
                assertEquals(expected.get(""), contentsEqual(expected.get(""), contents(v, null)), "production");
            } finally {
                v.close();
            }
        }
        // A log without a stamp (written by an earlier build) opens as before; the open stamps it.
        restore();
        byte[] old = log.clone();
        Arrays.fill(old, ExceptionLog.STAMP_OFFSET, ExceptionLog.STAMP_OFFSET + 20, (byte) 0);
        Files.write(dir.resolve("exceptions.log"), old);
        assertTrue(VolumeChecker.check(dir, false).ok());
        Volume v = Volume.open(dir, TestVolumes.java());
        try {
            for (String snap : new String[]{"s1", "s2"}) {
                assertEquals(expected.get(snap), contentsEqual(expected.get(snap), contents(v, snap)), snap);
            }
        } finally {
            v.close();
        }
        assertFalse(TestVolumes.isZero(Files.readAllBytes(dir.resolve("exceptions.log")), ExceptionLog.STAMP_OFFSET,
                ExceptionLog.STAMP_OFFSET + 20), "the open stamps the log");
    }

    /** Deleting the refused snapshots is what clears the damage: the log is rewritten, fsck is clean again. */
    @Test
    void deletingTheRefusedSnapshotsClearsTheDamage() throws IOException {
        for (String[] c : new String[][]{{"exceptions.log", String.valueOf(ExceptionLog.HEADER_BYTES + 2 * ExceptionLog.RECORD_BYTES + 20)},
                {"snap-2.meta", String.valueOf(8192 + 4096 + 905)}}) {
            restore();
            flip(c[0], Long.parseLong(c[1]));
            List<String> kept = new ArrayList<>();
            Volume v = Volume.open(dir, TestVolumes.java());
            try {
                for (SnapshotSet.Info i : v.snapshots().list()) {
                    if (i.active()) {
                        kept.add(i.record().name());
                    } else {
                        v.deleteSnapshot(i.record().name());
                    }
                }
            } finally {
                v.close();
            }
            VolumeChecker.Report r = VolumeChecker.check(dir, false);
            assertTrue(r.ok(), c[0] + ": " + r.problems());
            v = Volume.open(dir, TestVolumes.java());
            try {
                for (String name : kept) {
                    assertEquals(expected.get(name), contentsEqual(expected.get(name), contents(v, name)), name);
                }
                assertEquals(kept.size(), v.snapshots().list().size());
            } finally {
                v.close();
            }
        }
    }

    // ---- files of the previous release (version 1) ------------------------------------------------------------

    /** Rewrites every snapshot file in its version-1 layout, as the previous release wrote it. */
    private void downgradeToVersion1() throws IOException {
        java.util.UUID uuid = io.snapbd.engine.volume.VolumeHeader.read(dir.resolve("volume.meta")).uuid();
        long bits = SIZE / BS;
        for (String name : new String[]{"snap-1.meta", "snap-2.meta"}) {
            Path f = dir.resolve(name);
            Path old = dir.resolve(name + ".v1");
            try (SnapshotMetaFile v2 = SnapshotMetaFile.open(f, uuid, bits, false);
                 io.snapbd.engine.bitmap.BitMapFile v1 = io.snapbd.engine.bitmap.BitMapFile.create(old,
                         io.snapbd.engine.bitmap.BitMapFile.Kind.SNAPSHOT_META, uuid, bits, false)) {
                long[] words = new long[io.snapbd.engine.bitmap.PagedBitMap.PAGE_LONGS];
                for (int p = 0; p < v2.pageCount(); p++) {
                    if (v2.readPage(p, words) == SnapshotMetaFile.PageState.PRESENT) {
                        v1.writeWords(p, words);
                    }
                }
                v1.force();
            }
            Files.move(old, f, java.nio.file.StandardCopyOption.REPLACE_EXISTING);
        }
        List<ExceptionLog.Entry> entries = new ArrayList<>();
        Path log = dir.resolve("exceptions.log");
        ExceptionLog.open(log, uuid, (s, b, c) -> entries.add(new ExceptionLog.Entry(s, b, c)), new ExceptionLog.Scan(), false).close();
        ByteBuffer out = ByteBuffer.allocate(ExceptionLog.HEADER_BYTES + 32 * entries.size()).order(ByteOrder.LITTLE_ENDIAN);
        out.putLong(0, ExceptionLog.MAGIC).putInt(8, 1).putInt(12, ExceptionLog.HEADER_BYTES).putInt(16, 32)
                .putLong(24, uuid.getMostSignificantBits()).putLong(32, uuid.getLeastSignificantBits());
        out.putInt(60, io.snapbd.engine.format.Crc32c.of(out, 0, 60));
        int o = ExceptionLog.HEADER_BYTES;
        for (ExceptionLog.Entry e : entries) {
            out.putInt(o, 1).putLong(o + 8, e.snapshot()).putLong(o + 16, e.block()).putInt(o + 24, e.chunk());
            out.putInt(o + 28, io.snapbd.engine.format.Crc32c.of(out, o, o + 28));
            o += 32;
        }
        Files.write(log, out.array());
        pristine.put("exceptions.log", Files.readAllBytes(log));
        pristine.put("snap-1.meta", Files.readAllBytes(dir.resolve("snap-1.meta")));
        pristine.put("snap-2.meta", Files.readAllBytes(dir.resolve("snap-2.meta")));
    }

    private int version(String file) throws IOException {
        return ByteBuffer.wrap(Files.readAllBytes(dir.resolve(file))).order(ByteOrder.LITTLE_ENDIAN).getInt(8);
    }

    @Test
    void versionOneFilesStillOpenAndAreConvertedToVersionTwo() throws IOException {
        downgradeToVersion1();
        assertEquals(1, version("snap-1.meta"));
        assertEquals(1, version("exceptions.log"));
        VolumeChecker.Report r = VolumeChecker.check(dir, false);
        assertTrue(r.ok(), r.problems().toString());
        Volume v = Volume.open(dir, TestVolumes.java());
        try {
            for (String snap : new String[]{"s1", "s2"}) {
                assertEquals(expected.get(snap), contentsEqual(expected.get(snap), contents(v, snap)), snap);
            }
        } finally {
            v.close();
        }
        assertEquals(2, version("snap-1.meta"));
        assertEquals(2, version("snap-2.meta"));
        assertEquals(2, version("exceptions.log"));
        VolumeChecker.Report after = VolumeChecker.check(dir, false);
        assertTrue(after.ok(), after.problems().toString());
    }

    @Test
    void damageInVersionOneFilesIsRefusedToo() throws IOException {
        downgradeToVersion1();
        corruptAndCheck("snap-1.meta", 8192 + 50, "s1");         // v1 pages_offset: 4096 + align4k(8 · 2)
        corruptAndCheck("snap-2.meta", 4096 + 8 + 2, "s1");       // crc of s2's page 1 (s1 reads through it)
        corruptAndCheck("exceptions.log", ExceptionLog.HEADER_BYTES + 32 * 3 + 17, "s1");
    }
}
