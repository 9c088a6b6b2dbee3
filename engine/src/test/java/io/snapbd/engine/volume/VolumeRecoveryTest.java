package io.snapbd.engine.volume;

import io.snapbd.engine.BlockDevice;
import io.snapbd.engine.TestVolumes;
import io.snapbd.engine.bitmap.PagedBitMap;
import io.snapbd.engine.io.FileSpace;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

import java.io.IOException;
import java.nio.file.Path;
import java.util.stream.Stream;

import static io.snapbd.engine.TestVolumes.flipByte;
import static io.snapbd.engine.TestVolumes.isZero;
import static io.snapbd.engine.TestVolumes.pattern;
import static io.snapbd.engine.TestVolumes.read;
import static io.snapbd.engine.TestVolumes.write;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Crash simulation: {@link Volume#abandon()} closes the files without flushing the meta bit map, clearing the
 * intents or marking the header clean. Data written through the mapping is still in the page cache of this
 * process, so it reads back; what is tested is the meta bit map the next open rebuilds.
 */
class VolumeRecoveryTest {

    @TempDir
    Path tmp;

    private Volume volume;
    private BlockDevice.Session s;
    private FileSpace space;
    private int bs;
    private long size;

    static Stream<Arguments> geometries() {
        return Stream.of(512, 4096, 65536).flatMap(bs -> Stream.of(Arguments.of(bs, "java"), Arguments.of(bs, "fast")));
    }

    private Path dir() {
        return tmp.resolve("v");
    }

    private void create(int blockSize, String kind, long volumeSize) throws IOException {
        bs = blockSize;
        size = volumeSize;
        space = VolumeTest.space(kind);
        Volume.create(dir(), "v", size, bs, 0, false, space);
        open();
    }

    private void open() throws IOException {
        volume = Volume.open(dir(), space);
        s = volume.openSession();
    }

    private void crash() throws IOException {
        s.close();
        volume.abandon();
        volume = null;
    }

    private void cleanClose() throws IOException {
        s.close();
        volume.close();
        volume = null;
    }

    @AfterEach
    void closeVolume() throws IOException {
        if (volume != null) {
            volume.close();
        }
    }

    private byte[] block(long b) throws IOException {
        return read(volume, s, b * bs, bs);
    }

    /** After recovery: non-zero data ⇒ in use, and not in use ⇒ zero data, for every block. */
    private void assertInvariants() throws IOException {
        long blocks = size / bs;
        for (long b = 0; b < blocks; b++) {
            boolean zero = isZero(block(b));
            if (!zero && !volume.inUse(b)) {
                throw new AssertionError("block " + b + " holds data but is not in use");
            }
        }
    }

    @ParameterizedTest(name = "bs={0} {1}")
    @MethodSource("geometries")
    void aCrashNeverUnderReportsABlockWrittenSinceOpen(int blockSize, String kind) throws IOException {
        create(blockSize, kind, 8L << 20);
        long blocks = size / bs;
        long region = 1L << volume.header().regionShift();
        // Session 1: some blocks, closed cleanly.
        long old = 1;
        write(volume, s, old * bs, pattern(1, bs));
        cleanClose();
        open();
        assertTrue(volume.recovery().wasClean());
        // Session 2: a block written, flushed, trimmed and flushed again (must stay a hole) ...
        long trimmed = region + 3;
        write(volume, s, trimmed * bs, pattern(2, bs));
        volume.flush();
        volume.trim(s, trimmed * bs, bs, false);
        volume.flush();
        // ... then writes never flushed, in several regions, including the trimmed block's region, the last
        // block, and an unaligned write across a region boundary.
        long[] unflushed = {0, region + 4, 2 * region - 1, 2 * region, 3 * region + 7, blocks - 1};
        write(volume, s, (2 * region - 1) * bs + bs - 5, pattern(7, 10));     // straddles regions 1|2
        for (long b : unflushed) {
            write(volume, s, b * bs + 1, pattern(100 + b, bs - 2));
        }
        assertEquals(unflushed.length + 1, volume.blocksInUse());
        crash();

        open();
        RecoveryReport r = volume.recovery();
        assertFalse(r.wasClean(), "an abandoned volume was not closed cleanly");
        assertTrue(r.regionsScanned() >= 4, "every region with an intent is scanned: " + r);
        assertEquals(unflushed.length, r.blocksMarkedInUse(), "the unflushed blocks come back from the data: " + r);
        assertEquals(0, r.damagedPages());
        assertEquals(3, r.openCount());
        assertTrue(volume.inUse(old), "a block from an earlier session stays in use");
        for (long b : unflushed) {
            assertTrue(volume.inUse(b), "block " + b + " written since open is in use after the crash");
            assertArrayEquals(pattern(100 + b, bs - 2), read(volume, s, b * bs + 1, bs - 2));
        }
        assertFalse(volume.inUse(trimmed), "a trimmed and flushed block stays a hole");
        assertTrue(isZero(block(trimmed)));
        assertEquals(unflushed.length + 1, volume.blocksInUse());
        assertInvariants();
        // the recovered map was persisted: a clean close and reopen keep it without a scan
        cleanClose();
        open();
        assertTrue(volume.recovery().wasClean());
        assertEquals(0, volume.recovery().regionsScanned());
        assertEquals(unflushed.length + 1, volume.blocksInUse());
    }

    @ParameterizedTest(name = "bs={0} {1}")
    @MethodSource("geometries")
    void aTrimNotYetFlushedMayOverReportButReadsZeros(int blockSize, String kind) throws IOException {
        create(blockSize, kind, 4L << 20);
        write(volume, s, 5L * bs, pattern(5, 2 * bs));
        volume.flush();
        volume.trim(s, 5L * bs, bs, false);        // block 5: the clear bit never reached meta.bitmap
        volume.writeZeroes(s, 6L * bs, bs, false, false, false);
        crash();
        open();
        assertFalse(volume.recovery().wasClean());
        assertTrue(isZero(read(volume, s, 5L * bs, 2 * bs)), "the data was zeroed");
        // recovery only ever adds bits: the persisted set bits stand (an over-report, never an under-report)
        assertTrue(volume.inUse(5));
        assertTrue(volume.inUse(6));
        assertInvariants();
    }

    @ParameterizedTest(name = "bs={0} {1}")
    @MethodSource("geometries")
    void zeroDataWrittenSinceTheLastFlushComesBackAsAHole(int blockSize, String kind) throws IOException {
        create(blockSize, kind, 4L << 20);
        write(volume, s, 9L * bs, new byte[bs]);    // in use in memory, data all zero
        crash();
        open();
        // documented: recovery re-derives in-use from the data; a block of zeros reads the same either way
        assertFalse(volume.inUse(9));
        assertTrue(isZero(read(volume, s, 9L * bs, bs)));
    }

    @ParameterizedTest(name = "bs={0} {1}")
    @MethodSource("geometries")
    void repeatedCrashesKeepRecovering(int blockSize, String kind) throws IOException {
        create(blockSize, kind, 4L << 20);
        for (int round = 0; round < 4; round++) {
            write(volume, s, (long) round * 3 * bs + round, pattern(round, bs));
            crash();
            open();
            assertFalse(volume.recovery().wasClean());
            for (int r = 0; r <= round; r++) {
                assertArrayEquals(pattern(r, bs), read(volume, s, (long) r * 3 * bs + r, bs), "round " + r);
            }
            assertInvariants();
        }
        assertEquals(5, volume.recovery().openCount());
    }

    /** Blocks of meta.bitmap page 1 (blocks 32768..) are written in session 1; session 2 only touches page 0. */
    private static final int TORN_BS = 512;
    private static final long TORN_SIZE = 24L << 20;         // 49152 blocks of 512: two meta pages
    private static final long[] PAGE1_BLOCKS = {PagedBitMap.PAGE_BITS, PagedBitMap.PAGE_BITS + 1, 40_000, 49_151};

    private void writePage1BlocksAndCloseCleanly(String kind) throws IOException {
        create(TORN_BS, kind, TORN_SIZE);
        for (long b : PAGE1_BLOCKS) {
            write(volume, s, b * bs, pattern(b, bs));
        }
        write(volume, s, 40_010L * bs, new byte[bs]);   // in use, but zero data
        cleanClose();
    }

    /** Position of byte {@code i} of meta page {@code p}: header 4096, CRC table 4096, pages. */
    private static long metaPageByte(int p, int i) {
        return 8192L + (long) p * PagedBitMap.PAGE_BYTES + i;
    }

    @ParameterizedTest(name = "{0}")
    @org.junit.jupiter.params.provider.ValueSource(strings = {"java", "fast"})
    void aTornMetaPageAfterACrashIsRebuiltFromTheData(String kind) throws IOException {
        writePage1BlocksAndCloseCleanly(kind);
        open();
        write(volume, s, 100L * bs, pattern(100, bs));            // region 0 only
        volume.flush();
        crash();
        flipByte(dir().resolve(Volume.META_FILE), metaPageByte(1, 5000 / 8));
        open();
        RecoveryReport r = volume.recovery();
        assertFalse(r.wasClean());
        assertEquals(1, r.damagedPages());
        for (long b : PAGE1_BLOCKS) {
            assertTrue(volume.inUse(b), "block " + b + " of the torn page is rebuilt from its data");
        }
        assertFalse(volume.inUse(40_010), "an in-use block of zeros under a torn page becomes a hole");
        assertTrue(volume.inUse(100));
        assertEquals(PAGE1_BLOCKS.length, r.blocksMarkedInUse());
        assertInvariants();
        // the rebuilt page was rewritten with a good checksum
        cleanClose();
        open();
        assertTrue(volume.recovery().wasClean());
        assertEquals(0, volume.recovery().damagedPages());
        assertEquals(PAGE1_BLOCKS.length + 1, volume.blocksInUse());
    }

    @Test
    void aDamagedMetaPageOnACleanVolumeIsRebuiltToo() throws IOException {
        writePage1BlocksAndCloseCleanly("java");
        flipByte(dir().resolve(Volume.META_FILE), metaPageByte(1, 17));
        open();
        RecoveryReport r = volume.recovery();
        assertTrue(r.wasClean());
        assertEquals(1, r.damagedPages());
        assertTrue(r.regionsScanned() > 0);
        for (long b : PAGE1_BLOCKS) {
            assertTrue(volume.inUse(b), "block " + b);
        }
        assertInvariants();
    }

    @Test
    void aDamagedIntentPageMakesEveryRegionUnderItSuspect() throws IOException {
        writePage1BlocksAndCloseCleanly("java");
        open();
        // write in session 2 to a page-1 block, never flushed, so only the intent (now damaged) tells recovery
        write(volume, s, 45_000L * bs, pattern(45_000, bs));
        crash();
        // intent.map: 12 regions, one page at 8192; damage it (its CRC no longer matches)
        flipByte(dir().resolve(Volume.INTENT_FILE), 8192 + 1000);
        open();
        RecoveryReport r = volume.recovery();
        assertFalse(r.wasClean());
        assertEquals(1, r.damagedPages());
        assertEquals(TORN_SIZE / bs >>> volume.header().regionShift(), r.regionsScanned(), "every region is scanned");
        assertTrue(volume.inUse(45_000));
        assertInvariants();
    }

    @Test
    void recoveryScansOnlyTheRegionsWithIntents() throws IOException {
        create(4096, "java", 16L << 20);                          // 8 regions of 2 MiB
        write(volume, s, (5L << 20) + 7, pattern(1, 100));          // region 2
        write(volume, s, (13L << 20), pattern(2, 4096));            // region 6
        crash();
        open();
        assertEquals(2, volume.recovery().regionsScanned());
        assertEquals(2, volume.recovery().blocksMarkedInUse());
        assertTrue(volume.inUse((5L << 20) / 4096));
        assertTrue(volume.inUse((13L << 20) / 4096));
    }
}
