package io.snapbd.engine.fuzz;

import com.code_intelligence.jazzer.api.FuzzedDataProvider;
import com.code_intelligence.jazzer.junit.FuzzTest;
import io.snapbd.engine.BlockDevice;
import io.snapbd.engine.BlockDeviceException;
import io.snapbd.engine.TestVolumes;
import io.snapbd.engine.fsck.VolumeChecker;
import io.snapbd.engine.lun.LunState;
import io.snapbd.engine.mirror.FileTagStore;
import io.snapbd.engine.mirror.LegRegionMap;
import io.snapbd.engine.mirror.TagSource;
import io.snapbd.engine.mirror.TagTable;
import io.snapbd.engine.mirror.TagTableChecker;
import io.snapbd.engine.snapshot.RestoreMarker;
import io.snapbd.engine.snapshot.SnapshotSet;
import io.snapbd.engine.volume.Volume;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.Arrays;
import java.util.Comparator;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.UUID;
import java.util.stream.Stream;

import static io.snapbd.engine.TestVolumes.pattern;
import static io.snapbd.engine.TestVolumes.read;
import static io.snapbd.engine.TestVolumes.write;

/**
 * Fuzzes every file the engine reads (issue 25, part 2): a valid file of a small real volume is damaged with
 * the fuzzer's bytes (see {@link Damage}; sometimes with its checksums recomputed so the damage reaches the
 * field checks), then fsck and the engine's open run on it. Allowed outcomes: a clean open or an IOException
 * whose message names a file; never an unchecked exception. When the checksums were not forged, a volume that
 * opens must serve exactly its original content (production, and every snapshot it still lists as active) and
 * a LUN state counter that did not go back.
 *
 * <p>Without {@code JAZZER_FUZZ=1} each target replays its corpus in
 * {@code src/test/resources/io/snapbd/engine/fuzz/OnDiskFuzzTestInputs/<target>/}; see benchmarks/fuzz.sh.
 */
class OnDiskFuzzTest {

    private static final int BS = 512;
    private static final long BLOCKS = 1024;
    private static final long SIZE = BLOCKS * BS;
    private static final long SAVE = 96L * BS;
    private static final String[] VOLUME_FILES = {Volume.HEADER_FILE, Volume.META_FILE, Volume.INTENT_FILE, "snap-1.meta",
            "snap-2.meta", SnapshotSet.TABLE_FILE, SnapshotSet.LOG_FILE, LunState.FILE, RestoreMarker.FILE};
    private static final Damage.Format[] FORMATS = {Damage.Format.VOLUME_HEADER, Damage.Format.BITMAP_V1, Damage.Format.BITMAP_V1,
            Damage.Format.SNAPSHOT_META_V2, Damage.Format.SNAPSHOT_META_V2, Damage.Format.WHOLE_FILE_CRC_AT_60,
            Damage.Format.EXCEPTION_LOG, Damage.Format.CRC_AT_60, Damage.Format.WHOLE_FILE_CRC_AT_60};

    /** The pristine volume, made once per JVM. */
    private static Pristine pristine;

    private record Pristine(Path root, Path vol, Map<String, byte[]> files, Map<String, byte[]> contents, long lunCounter,
                            UUID uuid, Path mirror, Map<String, byte[]> mirrorFiles, List<TagTable.Entry> tagEntries,
                            List<long[]> missed) {
    }

    private static synchronized Pristine pristine() throws IOException {
        if (pristine == null) {
            pristine = makePristine();
        }
        return pristine;
    }

    /**
     * Two snapshots with before-images in the save volume and frozen meta pages, LUN state enabled, closed
     * cleanly; then a restore marker for s1 (as a restore interrupted before its first block leaves it, so an
     * open finishes the restore), and mirror files: a tag table with live entries, a tag counter, a region map.
     */
    private static Pristine makePristine() throws IOException {
        // tmpfs when there is one: thousands of opens per minute, each forcing files, must not wait for a disk
        Path shm = Path.of("/dev/shm");
        Path root = Files.isDirectory(shm) && Files.isWritable(shm) ? Files.createTempDirectory(shm, "snapbd-fuzz")
                : Files.createTempDirectory("snapbd-fuzz");
        Runtime.getRuntime().addShutdownHook(new Thread(() -> deleteTree(root)));
        Path dir = root.resolve("pristine").resolve("vol");
        Files.createDirectories(dir.getParent());
        Volume.create(dir, "vol", SIZE, BS, SAVE, true, TestVolumes.java());
        Volume v = Volume.open(dir, TestVolumes.java());
        Map<String, byte[]> contents = new HashMap<>();
        long lun;
        UUID uuid = v.header().uuid();
        try (BlockDevice.Session s = v.openSession()) {
            v.lunState().enable();
            write(v, s, 0, pattern(1, 16 * BS));
            write(v, s, 700L * BS, pattern(2, 8 * BS));
            v.createSnapshot("s1");
            write(v, s, 4L * BS, pattern(3, 6 * BS));
            write(v, s, 300L * BS, pattern(4, 2 * BS));
            v.flush();
            v.createSnapshot("s2");
            write(v, s, 8L * BS, pattern(5, 10 * BS));
            write(v, s, 702L * BS, pattern(6, 3 * BS));
            write(v, s, 1000L * BS, pattern(7, 4 * BS));
            v.flush();
            contents.put("", all(v));
            contents.put("s1", all(v.snapshotView("s1")));
            contents.put("s2", all(v.snapshotView("s2")));
            lun = v.lunState().get().counter();
        }
        v.close();
        if (Arrays.equals(contents.get("s1"), contents.get("s2")) || Arrays.equals(contents.get("s2"), contents.get(""))) {
            throw new AssertionError("the snapshots do not differ from each other and production");
        }
        RestoreMarker.write(dir, uuid, 1, "s1");
        Map<String, byte[]> files = new HashMap<>();
        try (Stream<Path> l = Files.list(dir)) {
            for (Path p : l.toList()) {
                files.put(p.getFileName().toString(), Files.readAllBytes(p));
            }
        }
        for (String f : VOLUME_FILES) {
            if (!files.containsKey(f)) {
                throw new AssertionError("the pristine volume has no " + f + ": " + files.keySet());
            }
        }
        VolumeChecker.Report r = VolumeChecker.check(dir, true);
        if (!r.ok()) {
            throw new AssertionError("pristine volume: " + r.problems());
        }

        Path mirror = root.resolve("pristine-mirror");
        Files.createDirectories(mirror);
        List<TagTable.Entry> entries;
        try (TagTable t = TagTable.create(FileTagStore.create(mirror.resolve("leg-0.tags"), TagTable.areaBytes(16)), uuid, 0, 16)) {
            for (int i = 1; i <= 12; i++) {
                t.record(i, i * 4096L, 512L * i);
            }
            t.markDone(new long[]{2, 5}, 2);
            t.retire(new long[]{1, 3}, 2);
            t.compact();
            t.record(13, 0, 4096);
            t.markDone(new long[]{13}, 1);
            entries = t.live();
        }
        TagSource ts = TagSource.open(mirror, uuid);
        ts.next();
        ts.closeClean();
        List<long[]> missed;
        try (LegRegionMap m = LegRegionMap.create(FileTagStore.create(mirror.resolve("leg-0.regions"),
                LegRegionMap.areaBytes(1L << 32, 16)), uuid, 0, 1L << 32, 16)) {
            m.markMissed(0, 4096);
            m.markMissed(5L << 28, 1L << 20);
            m.markMissed((1L << 32) - 4096, 4096);
            missed = m.missedRanges();
        }
        Map<String, byte[]> mirrorFiles = new HashMap<>();
        for (String f : new String[]{"leg-0.tags", TagSource.FILE, "leg-0.regions"}) {
            mirrorFiles.put(f, Files.readAllBytes(mirror.resolve(f)));
        }
        return new Pristine(root, dir, files, contents, lun, uuid, mirror, mirrorFiles, entries, missed);
    }

    private static byte[] all(BlockDevice d) throws IOException {
        try (BlockDevice.Session s = d.openSession()) {
            return read(d, s, 0, (int) SIZE);
        }
    }

    private static void deleteTree(Path p) {
        try (Stream<Path> w = Files.walk(p)) {
            w.sorted(Comparator.reverseOrder()).forEach(f -> f.toFile().delete());
        } catch (IOException | UncheckedIOException e) {
            // best effort
        }
    }

    /** A fresh copy of the pristine volume under {@code work/vol}, with or without the restore marker. */
    private static Path copy(Pristine p, boolean marker) throws IOException {
        Path dir = p.root().resolve("work").resolve("vol");
        if (Files.exists(dir)) {
            deleteTree(dir);
        }
        Files.createDirectories(dir);
        for (Map.Entry<String, byte[]> e : p.files().entrySet()) {
            if (marker || !e.getKey().equals(RestoreMarker.FILE)) {
                Files.write(dir.resolve(e.getKey()), e.getValue());
            }
        }
        return dir;
    }

    /** An IOException is the allowed way to refuse: its message must name a file of the volume (or the directory). */
    private static void assertNamesAFile(IOException e, Path dir, String what) {
        String m = String.valueOf(e.getMessage());
        boolean named = m.contains(dir.toString());
        for (String f : VOLUME_FILES) {
            named |= m.contains(f);
        }
        if (!named) {
            throw new AssertionError(what + ": the error does not name the file: " + e, e);
        }
    }

    /**
     * The volume's files: one file damaged, then fsck (must not throw), then open. A volume that opens from
     * undamaged checksums serves its original content, refuses (never misreads) the snapshots it lists as
     * inactive, and its LUN state counter did not go back.
     */
    @FuzzTest(maxDuration = "5m")
    void volumeFiles(FuzzedDataProvider in) throws IOException {
        Pristine p = pristine();
        int which = in.consumeInt(0, VOLUME_FILES.length - 1);
        String file = VOLUME_FILES[which];
        boolean forge = in.consumeBoolean();
        Path dir = copy(p, file.equals(RestoreMarker.FILE));
        byte[] b = Damage.mutate(in, p.files().get(file).clone(), 64 << 10);
        if (forge) {
            Damage.forge(FORMATS[which], b);
        }
        Files.write(dir.resolve(file), b);
        String what = file + ":" + Damage.LAST.get();

        VolumeChecker.Report r = VolumeChecker.check(dir, true);
        Volume v;
        try {
            v = Volume.open(dir, TestVolumes.java());
        } catch (IOException e) {
            assertNamesAFile(e, dir, what);
            return;
        }
        try {
            if (forge) {
                return;     // forged metadata is indistinguishable from real: only the absence of crashes is checked
            }
            if (file.equals(SnapshotSet.LOG_FILE) && tailLost(p.files().get(file), b) && !stampVouches(b)) {
                return;     // whole records lost from the end of a log whose commit stamp is gone: not detectable
            }
            byte[] production = all(v);
            byte[] expected = p.contents().get(file.equals(RestoreMarker.FILE) ? "s1" : "");
            if (!Arrays.equals(expected, production)) {
                throw new AssertionError(what + ": the volume opened with wrong production content; fsck said " + r.problems());
            }
            for (SnapshotSet.Info i : v.snapshots().list()) {
                String name = i.record().name();
                BlockDevice view = v.snapshotView(name);
                if (i.active()) {
                    if (!Arrays.equals(p.contents().get(name), all(view))) {
                        throw new AssertionError(what + ": snapshot " + name + " is served with wrong content");
                    }
                } else {
                    try (BlockDevice.Session s = view.openSession()) {
                        read(view, s, 0, BS);
                        throw new AssertionError(what + ": inactive snapshot " + name + " still reads");
                    } catch (BlockDeviceException expectedRefusal) {
                        // refused, as it must be
                    }
                }
            }
            long counter = v.lunState().get().counter();
            if (counter < p.lunCounter()) {
                throw new AssertionError(what + ": LUN state counter went back from " + p.lunCounter() + " to " + counter);
            }
        } finally {
            v.close();
        }
    }

    /**
     * True when, inside [{@code from}, {@code to}), {@code now} is {@code was} up to some record, that record is
     * torn or gone, and no valid record follows it (zeros, garbage, or past the end of the file), whatever else
     * changed: with
     * the header in force damaged too, that is indistinguishable from a compaction whose header write was cut.
     */
    private static boolean tailLost(byte[] was, byte[] now, int from, int to) {
        int d = from;
        while (d < to && d < now.length && d < was.length && was[d] == now[d]) {
            d++;
        }
        if (d >= to || (d >= was.length && d >= now.length)) {
            return false;       // the range did not change
        }
        // the record holding the first change may be left half written (torn); every record after it is gone:
        // zero, or bytes that are no valid record (a record with a valid checksum there would be read)
        java.nio.ByteBuffer w = java.nio.ByteBuffer.wrap(now).order(java.nio.ByteOrder.LITTLE_ENDIAN);
        for (int r = from + ((d - from) / 64 + 1) * 64; r + 64 <= Math.min(to, now.length); r += 64) {
            if (w.getInt(r + 60) == io.snapbd.engine.format.Crc32c.of(now, r, r + 60) && !TestVolumes.isZero(now, r, r + 64)) {
                return false;
            }
        }
        return true;
    }

    /**
     * True when the log {@code now}'s commit stamp (docs/on-disk-format.md, exceptions.log) is intact and covers
     * more records than are left: the reader then reports the lost tail as damage.
     */
    private static boolean stampVouches(byte[] now) {
        if (now.length < 4096) {
            return false;
        }
        java.nio.ByteBuffer h = java.nio.ByteBuffer.wrap(now).order(java.nio.ByteOrder.LITTLE_ENDIAN);
        if (h.getInt(80) != io.snapbd.engine.format.Crc32c.of(now, 64, 80) || h.getLong(72) != h.getLong(40)) {
            return false;
        }
        long used = 0;
        for (int r = 4096; r + 64 <= now.length; r += 64) {
            if (!TestVolumes.isZero(now, r, r + 64)) {
                used = (r - 4096) / 64 + 1;
            }
        }
        return h.getLong(64) > used;
    }

    /**
     * True when {@code now} is {@code was} with whole 64-byte records missing from the end of the log: from some
     * record boundary on, every slot is zero or beyond the end of the file (and nothing else changed but,
     * possibly, the header's unread bytes).
     */
    private static boolean tailLost(byte[] was, byte[] now) {
        int first = 0;
        while (first < Math.min(was.length, now.length) && (was[first] == now[first] || first >= 64 && first < 4096)) {
            first++;
        }
        if (first == was.length && now.length >= was.length) {
            return false;       // nothing lost (only appended)
        }
        if (first < 4096 || (now.length - 4096) % 64 != 0) {
            return false;
        }
        int from = 4096 + (first - 4096) / 64 * 64;
        for (int i = from; i < now.length; i++) {
            if (now[i] != 0) {
                return false;
            }
        }
        return true;
    }

    /** A leg's tag table: damaged, then the checker, read and open; an intact-checksum table that opens keeps its entries. */
    @FuzzTest(maxDuration = "5m")
    void tagTable(FuzzedDataProvider in) throws IOException {
        Pristine p = pristine();
        boolean forge = in.consumeBoolean();
        Path f = p.root().resolve("work-leg-0.tags");
        byte[] b = Damage.mutate(in, p.mirrorFiles().get("leg-0.tags").clone(), 16 << 10);
        if (forge) {
            Damage.forge(Damage.Format.TAG_TABLE, b);
        }
        Files.write(f, b);
        TagTableChecker.check(f);
        TagTable t;
        try {
            t = TagTable.open(FileTagStore.open(f, true), p.uuid(), 0);
        } catch (IOException e) {
            if (!String.valueOf(e.getMessage()).contains(f.toString())) {
                throw new AssertionError("the error does not name the file: " + e, e);
            }
            return;
        }
        try (t) {
            List<TagTable.Entry> live = t.live();
            // Whole records lost at the end of the active half (zeroed, or cut and grown back) read as a clean end:
            // not detectable (docs/mirrors.md, Reading), so not checked. The active half is half 1 (one compaction).
            long half = 16;
            boolean tailLost = tailLost(p.mirrorFiles().get("leg-0.tags"), b, (int) (4096 + half * 64), (int) (4096 + 2 * half * 64));
            if (!forge && !tailLost) {
                // Every entry live before is still live, same range; its DONE mark may be lost (a DONE record is
                // not forced: it can go with a torn tail, which only makes reconciliation copy more). A retired
                // entry may come back only as it was written (also only more copying). Nothing else.
                Map<Long, TagTable.Entry> now = new HashMap<>();
                for (TagTable.Entry e : live) {
                    now.put(e.tag(), e);
                }
                // Entry 13 is the last batch (slot 10 of half 1, after the commit point 10 that the compaction's
                // records carry): damage there reads as a torn tail, the stated limit (docs/mirrors.md, Reading).
                // With header copy 0 (generation 2, in force) intact only half 1 is read: the first change there counts.
                byte[] was = p.mirrorFiles().get("leg-0.tags");
                int firstChange = (int) (4096 + half * 64);
                while (firstChange < Math.min(b.length, 4096 + 2 * half * 64) && b[firstChange] == was[firstChange]) {
                    firstChange++;
                }
                boolean lastBatchOnly = b.length >= 64 && Arrays.equals(was, 0, 64, b, 0, 64)
                        && firstChange >= 4096 + half * 64 + 10 * 64;
                for (TagTable.Entry e : p.tagEntries()) {
                    if (e.tag() == 13 && lastBatchOnly) {
                        continue;
                    }
                    TagTable.Entry n = now.get(e.tag());
                    if (n == null || n.offset() != e.offset() || n.length() != e.length() || (n.done() && !e.done())) {
                        throw new AssertionError("tag table opened without entry " + e + ": " + live + "; damage:" + Damage.LAST.get());
                    }
                }
                for (TagTable.Entry n : live) {
                    long tag = n.tag();
                    if (tag < 1 || tag > 13 || n.offset() != (tag == 13 ? 0 : tag * 4096L) || n.length() != (tag == 13 ? 4096 : 512L * tag)) {
                        throw new AssertionError("tag table opened with an entry never written: " + n + "; damage:" + Damage.LAST.get());
                    }
                }
            }
            t.record(99, 0, 512);       // appending to what open left must work
        }
    }

    /** The tag counter {@code mirror.tags}: damaged, then opened; an intact one never hands out a tag already used. */
    @FuzzTest(maxDuration = "5m")
    void tagCounter(FuzzedDataProvider in) throws IOException {
        Pristine p = pristine();
        boolean forge = in.consumeBoolean();
        Path dir = p.root().resolve("work-tags");
        Files.createDirectories(dir);
        byte[] b = Damage.mutate(in, p.mirrorFiles().get(TagSource.FILE).clone(), 4096);
        if (forge) {
            Damage.forge(Damage.Format.CRC_AT_60, b);
        }
        Files.write(dir.resolve(TagSource.FILE), b);
        TagSource s;
        try {
            s = TagSource.open(dir, p.uuid());
        } catch (IOException e) {
            if (!String.valueOf(e.getMessage()).contains(TagSource.FILE)) {
                throw new AssertionError("the error does not name the file: " + e, e);
            }
            return;
        }
        long tag = s.next();
        if (!forge && tag <= 1) {
            throw new AssertionError("tag " + tag + " was handed out before");
        }
    }

    /** A leg region map: damaged, then opened; an intact one still lists every region that was missed. */
    @FuzzTest(maxDuration = "5m")
    void regionMap(FuzzedDataProvider in) throws IOException {
        Pristine p = pristine();
        boolean forge = in.consumeBoolean();
        Path f = p.root().resolve("work-leg-0.regions");
        byte[] b = Damage.mutate(in, p.mirrorFiles().get("leg-0.regions").clone(), 64 << 10);
        if (forge) {
            Damage.forge(Damage.Format.REGION_MAP, b);
        }
        Files.write(f, b);
        LegRegionMap m;
        try {
            m = LegRegionMap.open(FileTagStore.open(f, true), p.uuid(), 0);
        } catch (IOException e) {
            if (!String.valueOf(e.getMessage()).contains(f.toString())) {
                throw new AssertionError("the error does not name the file: " + e, e);
            }
            return;
        }
        try (m) {
            List<long[]> now = m.missedRanges();
            if (!forge) {
                for (long[] r : p.missed()) {
                    boolean covered = false;
                    for (long[] n : now) {
                        covered |= n[0] <= r[0] && r[0] + r[1] <= n[0] + n[1];
                    }
                    if (!covered) {
                        throw new AssertionError("missed range [" + r[0] + ", +" + r[1] + ") lost; damage:" + Damage.LAST.get());
                    }
                }
            }
            m.markMissed(0, 512);
        }
    }
}
