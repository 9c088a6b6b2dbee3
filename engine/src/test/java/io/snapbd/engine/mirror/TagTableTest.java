package io.snapbd.engine.mirror;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.util.List;
import java.util.UUID;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * A leg's tag table (docs/glossary.md: Symantec tag table; behaviours 4, 5, 7, 9–11): round trip, torn tail
 * versus damage, retirement, compaction and its crash points, the byte layout docs/mirrors.md gives.
 */
class TagTableTest {

    @TempDir
    Path dir;

    private final UUID owner = UUID.randomUUID();

    private Path file() {
        return dir.resolve("leg-0.tags");
    }

    private TagTable create(long half) throws IOException {
        return TagTable.create(FileTagStore.create(file(), TagTable.areaBytes(half)), owner, 0, half);
    }

    private TagTable reopen() throws IOException {
        return TagTable.open(FileTagStore.open(file(), true), owner, 0);
    }

    private static TagTable.Entry e(long tag, long off, long len, boolean done) {
        return new TagTable.Entry(tag, off, len, done);
    }

    /** Symantec behaviours 4, 5, 11: entries, DONE marks and retirements survive a reopen; only retired entries go. */
    @Test
    void symantec4_5_11_roundTripAcrossReopen() throws IOException {
        try (TagTable t = create(64)) {
            t.record(10, 0, 4096);
            t.record(11, 8192, 512);
            t.record(12, 4096, 4096);
            t.markDone(new long[]{10, 12}, 2);
            t.retire(new long[]{10}, 1);
        }
        try (TagTable t = reopen()) {
            assertEquals(List.of(e(11, 8192, 512, false), e(12, 4096, 4096, true)), t.live());
        }
        TagTableChecker.Report r = TagTableChecker.check(file());
        assertTrue(r.ok(), r.problems().toString());
        assertEquals(2, r.liveEntries());
    }

    /** A record cut short by a crash (its force never returned) is a torn tail: dropped, not reported as damage. */
    @Test
    void tornLastRecordIsCutOffAndAppendsContinue() throws IOException {
        try (TagTable t = create(64)) {
            t.record(1, 0, 512);
            t.record(2, 512, 512);
            t.record(3, 1024, 512);
        }
        corruptSlot(0, 2, 20);   // the last record, half written
        byte[] before = java.nio.file.Files.readAllBytes(file());
        assertTrue(TagTableChecker.check(file()).ok());
        assertArrayEquals(before, java.nio.file.Files.readAllBytes(file()), "the checker never writes");
        assertTrue(TagTableChecker.check(file()).notes().stream().anyMatch(n -> n.contains("torn tail")));
        try (TagTable t = reopen()) {
            assertEquals(List.of(e(1, 0, 512, false), e(2, 512, 512, false)), t.live());
            t.record(4, 0, 512);
        }
        try (TagTable t = reopen()) {
            assertEquals(List.of(e(1, 0, 512, false), e(2, 512, 512, false), e(4, 0, 512, false)), t.live());
        }
    }

    /** A bad record below the commit point was durable once: damage, refused, reported by the checker. */
    @Test
    void badRecordBelowTheCommitPointIsDamage() throws IOException {
        try (TagTable t = create(64)) {
            t.record(1, 0, 512);
            t.record(2, 512, 512);
            t.record(3, 1024, 512);
        }
        corruptSlot(0, 0, 40);
        TagTableChecker.Report r = TagTableChecker.check(file());
        assertFalse(r.ok());
        assertTrue(r.problems().get(0).contains(file().toString()) && r.problems().get(0).contains("commit point"), r.problems().toString());
        TagTable.DamagedException ex = assertThrows(TagTable.DamagedException.class, this::reopen);
        assertTrue(ex.getMessage().contains(file().toString()));
    }

    /** Retirement past the end of a half compacts; the table cycles forever with few live entries, and overflows clearly. */
    @Test
    void compactionCyclesHalvesAndOverflowIsClear() throws IOException {
        try (TagTable t = create(8)) {
            for (long tag = 1; tag <= 200; tag++) {
                t.record(tag, tag * 512, 512);
                t.markDone(new long[]{tag}, 1);
                if (tag % 3 == 0) {
                    t.retire(new long[]{tag - 2, tag - 1, tag}, 3);
                }
            }
            assertEquals(List.of(e(199, 199 * 512, 512, true), e(200, 200 * 512, 512, true)), t.live());
            for (long tag = 201; tag <= 206; tag++) {
                t.record(tag, 0, 512);
            }
            assertThrows(TagTable.TableFullException.class, () -> t.record(207, 0, 512));
        }
        try (TagTable t = reopen()) {
            assertEquals(8, t.live().size());
        }
    }

    /**
     * Compaction crash points: a new half written but its header not (or torn) leaves the old generation in force,
     * with the same live entries.
     */
    @Test
    void compactionInterruptedBeforeOrDuringTheHeaderKeepsTheOldTable() throws IOException {
        List<TagTable.Entry> expected;
        try (TagTable t = create(16)) {
            t.record(1, 0, 512);
            t.record(2, 512, 512);
            t.retire(new long[]{1}, 1);
            expected = t.live();
            t.compact();   // generation 2: header copy 0, half 1
        }
        // tear the new header copy: as if the crash came during its write
        try (FileTagStore s = FileTagStore.open(file(), true)) {
            s.write(ByteBuffer.wrap(new byte[]{1, 2, 3}), 40);
            s.force();
        }
        TagTable.Loaded l;
        try (FileTagStore s = FileTagStore.open(file(), false)) {
            l = TagTable.read(s);
        }
        assertEquals(1, l.generation());
        assertEquals(expected, l.live());
        try (TagTable t = reopen()) {
            assertEquals(expected, t.live());
            t.record(3, 0, 512);
            t.compact();
        }
        try (TagTable t = reopen()) {
            assertEquals(List.of(e(2, 512, 512, false), e(3, 0, 512, false)), t.live());
        }
    }

    @Test
    void foreignTableIsRefused() throws IOException {
        create(8).close();
        assertThrows(IOException.class, () -> TagTable.open(FileTagStore.open(file(), true), UUID.randomUUID(), 0));
        assertThrows(IOException.class, () -> TagTable.open(FileTagStore.open(file(), true), owner, 1));
    }

    /** Pins the layout of docs/mirrors.md, "Tag table format". */
    @Test
    void byteLayoutIsWhatTheFormatDocumentSays() throws IOException {
        try (TagTable t = create(8)) {
            t.record(0x1122, 0x3344, 0x55);
            t.markDone(new long[]{0x1122}, 1);
        }
        ByteBuffer b;
        try (FileTagStore s = FileTagStore.open(file(), false)) {
            assertEquals(4096 + 2 * 8 * 64, s.size());
            b = ByteBuffer.allocate((int) s.size()).order(ByteOrder.LITTLE_ENDIAN);
            s.read(b, 0);
        }
        int h = 2048;   // generation 1 lives in header copy 1
        assertEquals(0x5447415444424e53L, b.getLong(h));
        assertEquals("SNBDTAGT", new String(b.array(), h, 8));
        assertEquals(1, b.getInt(h + 8));
        assertEquals(64, b.getInt(h + 12));
        assertEquals(owner, new UUID(b.getLong(h + 16), b.getLong(h + 24)));
        assertEquals(0, b.getInt(h + 32));      // leg
        assertEquals(0, b.getInt(h + 36));      // active half
        assertEquals(1, b.getInt(h + 40));      // generation
        assertEquals(8, b.getLong(h + 48));     // half_records
        assertEquals(io.snapbd.engine.format.Crc32c.of(b, h, h + 60), b.getInt(h + 60));
        assertEquals(0, b.getLong(0));          // header copy 0 unused yet
        int r = 4096;
        assertEquals(1, b.getShort(r));         // ENTRY
        assertEquals(1, b.getShort(r + 2));
        assertEquals(1, b.getInt(r + 4));       // generation
        assertEquals(0, b.getLong(r + 8));      // lsn
        assertEquals(0, b.getLong(r + 16));     // committed
        assertEquals(0x1122, b.getLong(r + 24));
        assertEquals(0x3344, b.getLong(r + 32));
        assertEquals(0x55, b.getLong(r + 40));
        assertEquals(0, b.getLong(r + 48));     // flags
        assertEquals(b.getInt(h + 60), b.getInt(r + 56));   // chain seed: the header copy's crc
        assertEquals(io.snapbd.engine.format.Crc32c.of(b, r, r + 60), b.getInt(r + 60));
        r += 64;
        assertEquals(2, b.getShort(r));         // DONE
        assertEquals(1, b.getShort(r + 2));
        assertEquals(1, b.getLong(r + 8));
        assertEquals(1, b.getLong(r + 16));     // record 0 was forced before it
        assertEquals(0x1122, b.getLong(r + 24));
        assertEquals(b.getInt(4096 + 60), b.getInt(r + 56));
    }

    private void corruptSlot(int half, int slot, int at) throws IOException {
        try (FileTagStore s = FileTagStore.open(file(), true)) {
            ByteBuffer hb = ByteBuffer.allocate(64).order(ByteOrder.LITTLE_ENDIAN);
            s.read(hb, 2048);
            long halfRecords = hb.getLong(48);
            long pos = 4096 + (half * halfRecords + slot) * 64 + at;
            s.write(ByteBuffer.wrap(new byte[]{(byte) 0xA5, 0x5A}), pos);
            s.force();
        }
    }

    /**
     * Group commit of ENTRY records (docs/mirrors.md, "Group commit"; behaviours 5, 6): entries appended while a
     * force runs are covered by the next single force, so three concurrent writers cost two forces, not three;
     * every entry is durable when its commit returns, and the table reads back with a valid chain.
     */
    @Test
    void symantec5_6_groupCommitOneForceCoversEntriesQueuedMeanwhile() throws Exception {
        java.util.concurrent.CountDownLatch forcing = new java.util.concurrent.CountDownLatch(1);
        java.util.concurrent.CountDownLatch release = new java.util.concurrent.CountDownLatch(1);
        java.util.concurrent.atomic.AtomicInteger forces = new java.util.concurrent.atomic.AtomicInteger();
        java.util.concurrent.atomic.AtomicBoolean armed = new java.util.concurrent.atomic.AtomicBoolean();
        FileTagStore inner = FileTagStore.create(file(), TagTable.areaBytes(64));
        TagStore gated = new ForwardingTagStore(inner) {
            @Override
            public void force() throws IOException {
                if (armed.get() && forces.incrementAndGet() == 1 && release.getCount() > 0) {
                    forcing.countDown();
                    try {
                        release.await();
                    } catch (InterruptedException e) {
                        throw new IOException(e);
                    }
                }
                inner.force();
            }
        };
        try (TagTable t = TagTable.create(gated, owner, 0, 64)) {
            long base = t.commitForces();
            armed.set(true);
            Thread a = new Thread(() -> {
                try {
                    t.record(1, 0, 4096);
                } catch (IOException e) {
                    throw new RuntimeException(e);
                }
            });
            a.start();
            forcing.await();                                   // A's force is running
            long tb = t.append(2, 4096, 4096);                 // B and C queue their entries meanwhile
            long tc = t.append(3, 8192, 4096);
            Thread b = new Thread(() -> {
                try {
                    t.commit(tb);
                } catch (IOException e) {
                    throw new RuntimeException(e);
                }
            });
            b.start();
            release.countDown();
            a.join(10_000);
            b.join(10_000);
            t.commit(tc);                                      // covered by B's force: no force of its own
            assertEquals(2, forces.get(), "one force for A, one for B and C together");
            assertEquals(base + 2, t.commitForces());
            assertEquals(List.of(e(1, 0, 4096, false), e(2, 4096, 4096, false), e(3, 8192, 4096, false)), t.live());
        }
        TagTableChecker.Report r = TagTableChecker.check(file());
        assertTrue(r.ok(), r.problems().toString());
        assertEquals(3, r.liveEntries());
    }
    /**
     * Every tag table a mirrored volume gets (leg 0's and a file leg's) is created written, with no hole: an ENTRY
     * appended into a hole allocates a block, and the group-commit force then also commits the file system's journal
     * (docs/mirrors.md, "Cost"). Checked with stat(1)'s allocated blocks, even for a volume made with sparse legs.
     */
    @Test
    void everyTagTableOfANewMirrorIsWrittenNotSparse() throws Exception {
        Path vol = java.nio.file.Files.createDirectories(dir.resolve("vol"));
        long size = 1 << 20;
        try (java.nio.channels.FileChannel ch = java.nio.channels.FileChannel.open(vol.resolve("data.img"),
                java.nio.file.StandardOpenOption.CREATE_NEW, java.nio.file.StandardOpenOption.WRITE)) {
            ch.write(ByteBuffer.allocate(1), size - 1);
        }
        Path leg = dir.resolve("leg1.img");
        MirrorSet.create(vol, owner, size, List.of(leg.toString()), true, new io.snapbd.engine.io.JavaFileSpace(), false);
        for (Path t : List.of(vol.resolve(MirrorConfig.LOCAL_TABLE), FileLegOpener.tableFile(leg))) {
            long bytes = java.nio.file.Files.size(t);
            assertEquals(TagTable.areaBytes(TagTable.DEFAULT_HALF_RECORDS), bytes, t.toString());
            assertTrue(allocatedBytes(t) >= bytes, t + ": only " + allocatedBytes(t) + " of " + bytes
                    + " bytes allocated (a sparse table: appends would allocate blocks)");
        }
    }

    /** Bytes the file system allocated to {@code f} ({@code stat -c '%b %B'}). */
    private static long allocatedBytes(Path f) throws Exception {
        Process p = new ProcessBuilder("stat", "-c", "%b %B", f.toString()).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes()).trim();
        assertEquals(0, p.waitFor(), out);
        String[] w = out.split(" ");
        return Long.parseLong(w[0]) * Long.parseLong(w[1]);
    }
}
