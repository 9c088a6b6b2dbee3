package io.snapbd.engine.volume;

import io.snapbd.engine.BlockDevice;
import io.snapbd.engine.BlockDeviceException;
import io.snapbd.engine.TestVolumes;
import io.snapbd.engine.bitmap.BitMapFile;
import io.snapbd.engine.bitmap.PagedBitMap;
import io.snapbd.engine.io.FileSpace;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.function.Executable;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.BitSet;
import java.util.List;
import java.util.stream.Stream;

import static io.snapbd.engine.TestVolumes.isZero;
import static io.snapbd.engine.TestVolumes.pattern;
import static io.snapbd.engine.TestVolumes.read;
import static io.snapbd.engine.TestVolumes.write;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class VolumeTest {

    static final long SIZE = 6L << 20;

    @TempDir
    Path tmp;

    private Volume volume;
    private BlockDevice.Session s;
    private FileSpace space;
    private int bs;

    static Stream<Arguments> geometries() {
        return Stream.concat(
                Stream.of(512, 4096, 65536).flatMap(bs -> Stream.of(Arguments.of(bs, "java"), Arguments.of(bs, "fast"))),
                Stream.of(Arguments.of(4096, "none")));
    }

    static FileSpace space(String kind) {
        return switch (kind) {
            case "java" -> TestVolumes.java();
            case "fast" -> TestVolumes.fastZeroer();
            case "none" -> TestVolumes.noZeroer();
            case "flaky" -> TestVolumes.flakyZeroer();
            default -> throw new IllegalArgumentException(kind);
        };
    }

    private Path dir() {
        return tmp.resolve("volumes").resolve("v");
    }

    private void open(int blockSize, String spaceKind) throws IOException {
        bs = blockSize;
        space = space(spaceKind);
        Volume.create(dir(), "v", SIZE, bs, 4L * bs, false, space);
        volume = Volume.open(dir(), space);
        s = volume.openSession();
    }

    private void reopen() throws IOException {
        s.close();
        volume.close();
        volume = Volume.open(dir(), space);
        s = volume.openSession();
    }

    @AfterEach
    void closeVolume() throws IOException {
        if (volume != null) {
            volume.close();
        }
    }

    private BitSet inUse() {
        BitSet b = new BitSet();
        for (long i = 0; i < SIZE / bs; i++) {
            if (volume.inUse(i)) {
                b.set((int) i);
            }
        }
        return b;
    }

    private static BitSet bits(int from, int to) {
        BitSet b = new BitSet();
        b.set(from, to);
        return b;
    }

    private byte[] block(long b) throws IOException {
        return read(volume, s, b * bs, bs);
    }

    // ---- basics ------------------------------------------------------------------------------------------------

    @ParameterizedTest(name = "bs={0} {1}")
    @MethodSource("geometries")
    void newVolumeReadsZerosAndHasNothingInUse(int blockSize, String kind) throws IOException {
        open(blockSize, kind);
        assertEquals(SIZE, volume.size());
        assertEquals(bs, volume.blockSize());
        assertEquals("v", volume.name());
        assertFalse(volume.isReadOnly());
        assertEquals(kind.equals("fast"), volume.canZeroFast());
        assertEquals(0, volume.blocksInUse());
        for (long off = 0; off < SIZE; off += 1 << 20) {
            assertTrue(isZero(read(volume, s, off, 1 << 20)), "MiB at " + off);
        }
        List<long[]> ext = extents(0, SIZE);
        assertEquals(1, ext.size());
        assertArrayEquals(new long[]{0, SIZE, 0}, ext.get(0));
        assertTrue(volume.recovery().wasClean(), "a new volume is clean");
        assertEquals(1, volume.recovery().openCount());
    }

    @ParameterizedTest(name = "bs={0} {1}")
    @MethodSource("geometries")
    void unalignedByteGranularWritesReadBack(int blockSize, String kind) throws IOException {
        open(blockSize, kind);
        byte[] ref = new byte[(int) SIZE];
        long[][] writes = {
                {bs - 3, 2L * bs + 7},      // straddles three blocks, unaligned both ends
                {5L * bs + 1, 1},           // one byte in the middle of a block
                {7L * bs, bs},              // exactly one block
                {9L * bs + bs / 2, bs},     // half of two blocks
                {SIZE - 5, 5},              // the last bytes of the volume
                {0, 1},                     // the first byte
                {bs - 1, 2},                // overwrite across a block boundary
        };
        int seed = 1;
        for (long[] w : writes) {
            byte[] data = pattern(seed++, (int) w[1]);
            write(volume, s, w[0], data);
            System.arraycopy(data, 0, ref, (int) w[0], data.length);
        }
        // byte-granular reads at odd offsets and lengths
        for (long off = 0; off < 12L * bs; off += bs / 3 + 1) {
            int len = (int) Math.min(bs + 13, SIZE - off);
            assertArrayEquals(Arrays.copyOfRange(ref, (int) off, (int) off + len), read(volume, s, off, len), "at " + off);
        }
        assertArrayEquals(Arrays.copyOfRange(ref, (int) SIZE - 7, (int) SIZE), read(volume, s, SIZE - 7, 7));
        assertArrayEquals(new byte[0], read(volume, s, SIZE, 0));
        // every touched block is in use, nothing else
        BitSet expected = new BitSet();
        for (long[] w : writes) {
            expected.set((int) (w[0] / bs), (int) ((w[0] + w[1] - 1) / bs) + 1);
        }
        assertEquals(expected, inUse());
        assertEquals(expected.cardinality(), volume.blocksInUse());
        assertArrayEquals(ref, read(volume, s, 0, (int) SIZE));
    }

    @ParameterizedTest(name = "bs={0} {1}")
    @MethodSource("geometries")
    void zeroLengthRequestsDoNothing(int blockSize, String kind) throws IOException {
        open(blockSize, kind);
        write(volume, s, 3L * bs, new byte[0]);
        volume.trim(s, 3L * bs, 0, false);
        volume.writeZeroes(s, 3L * bs, 0, true, false, false);
        write(volume, s, SIZE, new byte[0]);
        assertEquals(0, volume.blocksInUse());
    }

    @ParameterizedTest(name = "bs={0} {1}")
    @MethodSource("geometries")
    void writingZerosStillMarksTheBlocksInUse(int blockSize, String kind) throws IOException {
        open(blockSize, kind);
        write(volume, s, 2L * bs + 1, new byte[bs]);
        assertEquals(bits(2, 4), inUse());
    }

    // ---- trim --------------------------------------------------------------------------------------------------

    @ParameterizedTest(name = "bs={0} {1}")
    @MethodSource("geometries")
    void trimClearsAndZeroesWholeBlocksOnly(int blockSize, String kind) throws IOException {
        open(blockSize, kind);
        byte[] data = pattern(7, 6 * bs);
        write(volume, s, 2L * bs, data);                 // blocks 2..7
        assertEquals(bits(2, 8), inUse());
        // [2bs+1, 6bs+1): whole blocks 3, 4, 5; partial 2 and 6 are kept
        volume.trim(s, 2L * bs + 1, 4L * bs, false);
        BitSet expected = bits(2, 8);
        expected.clear(3, 6);
        assertEquals(expected, inUse());
        for (long b = 3; b < 6; b++) {
            assertTrue(isZero(block(b)), "trimmed block " + b + " reads zeros");
        }
        assertArrayEquals(Arrays.copyOfRange(data, 0, bs), block(2), "partial head block untouched");
        assertArrayEquals(Arrays.copyOfRange(data, 4 * bs, 5 * bs), block(6), "partial tail block untouched");
        assertArrayEquals(Arrays.copyOfRange(data, 5 * bs, 6 * bs), block(7));
        if (volume.canZeroFast() && space instanceof TestVolumes.Space fast) {
            assertEquals(3L * bs, fast.zeroedBytes.get(), "the zeroer did the whole blocks in use");
        }
        // trimming blocks that are not in use changes nothing and zeroes nothing
        long zeroedBefore = space instanceof TestVolumes.Space f ? f.zeroedBytes.get() : 0;
        volume.trim(s, 20L * bs, 10L * bs, false);
        assertEquals(expected, inUse());
        if (space instanceof TestVolumes.Space f) {
            assertEquals(zeroedBefore, f.zeroedBytes.get());
        }
    }

    @ParameterizedTest(name = "bs={0} {1}")
    @MethodSource("geometries")
    void partialBlockTrimChangesNothing(int blockSize, String kind) throws IOException {
        open(blockSize, kind);
        byte[] data = pattern(8, 3 * bs);
        write(volume, s, 4L * bs, data);                 // blocks 4..6
        volume.trim(s, 4L * bs + 1, bs - 1, true);       // the tail of block 4
        volume.trim(s, 5L * bs + 10, bs, false);         // the tail of block 5 and head of block 6
        volume.trim(s, 6L * bs, bs - 1, false);          // block 6 but its last byte
        assertEquals(bits(4, 7), inUse());
        assertArrayEquals(data, read(volume, s, 4L * bs, 3 * bs));
    }

    @ParameterizedTest(name = "bs={0} {1}")
    @MethodSource("geometries")
    void trimOfTheWholeVolume(int blockSize, String kind) throws IOException {
        open(blockSize, kind);
        write(volume, s, 0, pattern(1, 3 * bs));
        write(volume, s, SIZE - bs - 1, pattern(2, bs + 1));
        volume.trim(s, 0, SIZE, false);
        assertEquals(0, volume.blocksInUse());
        assertTrue(isZero(read(volume, s, 0, (int) SIZE)));
    }

    // ---- write zeroes ------------------------------------------------------------------------------------------

    @ParameterizedTest(name = "bs={0} {1}")
    @MethodSource("geometries")
    void writeZeroesWithoutNoHolePunchesWholeBlocksAndZeroesTheEdges(int blockSize, String kind) throws IOException {
        open(blockSize, kind);
        byte[] data = pattern(3, 6 * bs);
        write(volume, s, bs, data);                      // blocks 1..6
        // [bs+5, 5bs+5): edge blocks 1 and 5 partly, whole blocks 2..4
        volume.writeZeroes(s, bs + 5, 4L * bs, false, false, false);
        byte[] expect = data.clone();
        Arrays.fill(expect, 5, 4 * bs + 5, (byte) 0);
        assertArrayEquals(expect, read(volume, s, bs, 6 * bs));
        BitSet expected = bits(1, 7);
        expected.clear(2, 5);
        assertEquals(expected, inUse(), "whole blocks become holes, partial edges stay in use");
        // on blocks never in use nothing becomes in use
        volume.writeZeroes(s, 40L * bs + 3, 5L * bs, false, false, false);
        assertEquals(expected, inUse());
        assertTrue(isZero(read(volume, s, 40L * bs, 6 * bs)));
    }

    @ParameterizedTest(name = "bs={0} {1}")
    @MethodSource("geometries")
    void writeZeroesWithNoHoleKeepsBlocksInUseAndZeroesEverything(int blockSize, String kind) throws IOException {
        open(blockSize, kind);
        byte[] data = pattern(4, 6 * bs);
        write(volume, s, bs, data);                      // blocks 1..6
        volume.writeZeroes(s, bs + 5, 4L * bs, true, false, false);
        byte[] expect = data.clone();
        Arrays.fill(expect, 5, 4 * bs + 5, (byte) 0);
        assertArrayEquals(expect, read(volume, s, bs, 6 * bs));
        assertEquals(bits(1, 7), inUse());
        // on blocks never written, NO_HOLE allocates the whole blocks covered (not the partial edges)
        volume.writeZeroes(s, 40L * bs + 3, 5L * bs, true, false, false);   // whole blocks 41..44
        BitSet expected = bits(1, 7);
        expected.set(41, 45);
        assertEquals(expected, inUse());
        assertTrue(isZero(read(volume, s, 40L * bs, 6 * bs)));
    }

    @ParameterizedTest(name = "bs={0} {1}")
    @MethodSource("geometries")
    void writeZeroesInsideBlocksOnlyZeroesTheBytes(int blockSize, String kind) throws IOException {
        open(blockSize, kind);
        byte[] data = pattern(5, 3 * bs);
        write(volume, s, 10L * bs, data);                // blocks 10..12
        for (boolean noHole : new boolean[]{false, true}) {
            volume.writeZeroes(s, 10L * bs + 7, 9, noHole, false, false);                 // inside block 10
            volume.writeZeroes(s, 11L * bs + bs - 4, 8, noHole, false, false);            // straddles 11|12
            Arrays.fill(data, 7, 16, (byte) 0);
            Arrays.fill(data, 2 * bs - 4, 2 * bs + 4, (byte) 0);
            assertArrayEquals(data, read(volume, s, 10L * bs, 3 * bs));
            assertEquals(bits(10, 13), inUse());
        }
        // partial zeroing of blocks not in use leaves them not in use
        volume.writeZeroes(s, 30L * bs + 1, bs - 2, true, false, false);
        assertFalse(volume.inUse(30));
    }

    @ParameterizedTest(name = "bs={0} {1}")
    @MethodSource("geometries")
    void fastOnlyDependsOnTheZeroer(int blockSize, String kind) throws Throwable {
        open(blockSize, kind);
        byte[] data = pattern(6, 4 * bs);
        write(volume, s, 0, data);
        Executable fastZero = () -> volume.writeZeroes(s, 0, 2L * bs, false, true, false);
        if (volume.canZeroFast()) {
            fastZero.execute();
            assertTrue(isZero(read(volume, s, 0, 2 * bs)));
            assertEquals(bits(2, 4), inUse());
        } else {
            BlockDeviceException e = assertThrows(BlockDeviceException.class, fastZero);
            assertEquals(BlockDeviceException.Reason.NOT_SUPPORTED, e.reason());
            assertArrayEquals(data, read(volume, s, 0, 4 * bs), "a refused fast zero changes nothing");
            assertEquals(bits(0, 4), inUse());
        }
    }

    @Test
    void fastOnlyIsNotSupportedWhenTheZeroerSaysNo() throws IOException {
        for (String kind : new String[]{"java", "none"}) {
            open(4096, kind);
            assertFalse(volume.canZeroFast(), kind);
            write(volume, s, 0, pattern(1, 8192));
            BlockDeviceException e = assertThrows(BlockDeviceException.class,
                    () -> volume.writeZeroes(s, 0, 8192, true, true, false));
            assertEquals(BlockDeviceException.Reason.NOT_SUPPORTED, e.reason());
            assertTrue(e.getMessage().contains("v"), e.getMessage());
            // without fastOnly the same request works, zeroing through the mapping
            volume.writeZeroes(s, 0, 8192, false, false, false);
            assertTrue(isZero(read(volume, s, 0, 8192)));
            assertEquals(0, volume.blocksInUse());
            volume.close();
            volume = null;
            Volume.deleteFiles(dir());
        }
    }

    @Test
    void aZeroerThatRefusesAfterItsProbeFallsBackToTheMapping() throws IOException {
        open(4096, "flaky");
        assertTrue(volume.canZeroFast(), "the probe said yes");
        write(volume, s, 0, pattern(2, 5 * 4096));
        volume.trim(s, 0, 2 * 4096, false);
        volume.writeZeroes(s, 2 * 4096, 2 * 4096, true, true, false);
        volume.writeZeroes(s, 4 * 4096, 4096, false, false, false);
        assertTrue(isZero(read(volume, s, 0, 5 * 4096)));
        assertEquals(bits(2, 4), inUse());
    }

    // ---- extents -----------------------------------------------------------------------------------------------

    private List<long[]> extents(long offset, long length) throws IOException {
        List<long[]> out = new ArrayList<>();
        volume.extents(offset, length, (o, l, used) -> {
            out.add(new long[]{o, l, used ? 1 : 0});
            return true;
        });
        return out;
    }

    private static String show(List<long[]> ext) {
        StringBuilder b = new StringBuilder();
        for (long[] e : ext) {
            b.append(Arrays.toString(e));
        }
        return b.toString();
    }

    @ParameterizedTest(name = "bs={0} {1}")
    @MethodSource("geometries")
    void extentsCoalesceRunsAndClipToTheRequest(int blockSize, String kind) throws IOException {
        open(blockSize, kind);
        write(volume, s, bs, pattern(1, 3 * bs));         // 1..3
        write(volume, s, 7L * bs + 5, pattern(2, bs));   // 7..8
        List<long[]> all = extents(0, SIZE);
        assertEquals(show(List.of(new long[]{0, bs, 0}, new long[]{bs, 3L * bs, 1}, new long[]{4L * bs, 3L * bs, 0},
                new long[]{7L * bs, 2L * bs, 1}, new long[]{9L * bs, SIZE - 9L * bs, 0})), show(all));
        assertEquals(show(List.of(new long[]{bs + 10, 3L * bs - 10, 1}, new long[]{4L * bs, 3L * bs, 0},
                new long[]{7L * bs, 10, 1})), show(extents(bs + 10, 6L * bs)));
        assertEquals(show(List.<long[]>of(new long[]{2L * bs + 1, 5, 1})), show(extents(2L * bs + 1, 5)));
        assertEquals(show(List.<long[]>of(new long[]{SIZE - 3, 3, 0})), show(extents(SIZE - 3, 3)));
        assertEquals(0, extents(SIZE, 0).size());
        // the consumer can stop the walk
        List<long[]> first = new ArrayList<>();
        volume.extents(0, SIZE, (o, l, used) -> {
            first.add(new long[]{o, l, used ? 1 : 0});
            return false;
        });
        assertEquals(1, first.size());
        // in-use run that reaches the end of the volume
        write(volume, s, SIZE - 1, new byte[]{1});
        List<long[]> tail = extents(SIZE - 2L * bs, 2L * bs);
        assertEquals(show(List.of(new long[]{SIZE - 2L * bs, bs, 0}, new long[]{SIZE - bs, bs, 1})), show(tail));
    }

    // ---- range checks ------------------------------------------------------------------------------------------

    @ParameterizedTest(name = "bs={0} {1}")
    @MethodSource("geometries")
    void requestsOutsideTheVolumeAreOutOfRange(int blockSize, String kind) throws IOException {
        open(blockSize, kind);
        List<Executable> bad = List.of(
                () -> read(volume, s, SIZE - 1, 2),
                () -> read(volume, s, SIZE + 1, 0),
                () -> read(volume, s, -1, 1),
                () -> volume.read(s, 0, -1, b -> { }),
                () -> write(volume, s, SIZE - 1, new byte[2]),
                () -> write(volume, s, Long.MAX_VALUE, new byte[1]),
                () -> volume.trim(s, SIZE, 1, false),
                () -> volume.trim(s, 0, SIZE + 1, false),
                () -> volume.trim(s, 1, Long.MAX_VALUE, false),
                () -> volume.writeZeroes(s, -bs, bs, false, false, false),
                () -> volume.writeZeroes(s, SIZE - bs, 2L * bs, true, false, false),
                () -> volume.extents(SIZE - 1, 2, (o, l, u) -> true),
                () -> volume.extents(0, -1, (o, l, u) -> true));
        for (Executable e : bad) {
            BlockDeviceException x = assertThrows(BlockDeviceException.class, e);
            assertEquals(BlockDeviceException.Reason.OUT_OF_RANGE, x.reason());
            assertTrue(x.getMessage().contains("(" + SIZE + " bytes)"), x.getMessage());
        }
        assertEquals(0, volume.blocksInUse(), "refused requests changed nothing");
    }

    // ---- durability --------------------------------------------------------------------------------------------

    @ParameterizedTest(name = "bs={0} {1}")
    @MethodSource("geometries")
    void closeAndReopenKeepsDataAndBits(int blockSize, String kind) throws IOException {
        open(blockSize, kind);
        byte[] a = pattern(11, 3 * bs + 17);
        write(volume, s, bs + 3, a);
        write(volume, s, 20L * bs, pattern(12, 4 * bs));
        volume.trim(s, 21L * bs, 2L * bs, false);
        volume.writeZeroes(s, 30L * bs, 2L * bs, true, false, false);
        volume.flush();
        write(volume, s, SIZE - 2, new byte[]{9, 9});            // written after the last flush: close persists it
        BitSet before = inUse();
        byte[] content = read(volume, s, 0, (int) SIZE);
        assertFalse(VolumeHeader.read(dir().resolve(Volume.HEADER_FILE)).clean(), "an open volume is marked not clean");
        reopen();
        assertTrue(volume.recovery().wasClean());
        assertEquals(0, volume.recovery().regionsScanned());
        assertEquals(0, volume.recovery().damagedPages());
        assertEquals(2, volume.recovery().openCount());
        assertEquals(2, volume.header().openCount());
        assertEquals(before, inUse());
        assertArrayEquals(content, read(volume, s, 0, (int) SIZE));
        volume.close();
        assertTrue(VolumeHeader.read(dir().resolve(Volume.HEADER_FILE)).clean());
        volume.close();                                          // idempotent
        volume = null;
    }

    @ParameterizedTest(name = "bs={0} {1}")
    @MethodSource("geometries")
    void flushPersistsTheMetaBitMap(int blockSize, String kind) throws IOException {
        open(blockSize, kind);
        write(volume, s, 3L * bs, pattern(1, bs));
        write(volume, s, 50L * bs, pattern(2, bs));
        assertFalse(onDiskMeta().get(3), "bits reach meta.bitmap at FLUSH, not at WRITE");
        volume.flush();
        PagedBitMap disk = onDiskMeta();
        assertTrue(disk.get(3));
        assertTrue(disk.get(50));
        assertEquals(2, disk.cardinality());
        volume.trim(s, 3L * bs, bs, true);                       // FUA trim is a flush
        assertFalse(onDiskMeta().get(3));
    }

    @ParameterizedTest(name = "bs={0} {1}")
    @MethodSource("geometries")
    void writeIntentIsOnDiskBeforeTheFirstBitChangeAndGoneAfterClose(int blockSize, String kind) throws IOException {
        open(blockSize, kind);
        int regionBlocks = 1 << volume.header().regionShift();
        assertEquals(2L << 20, (long) regionBlocks * bs, "an intent region covers 2 MiB");
        assertEquals(0, onDiskIntents().cardinality(), "a session starts with no intents");
        long[] seen = new long[1];
        // the intent must be durable when the source is asked for the data: look at the file from inside the write
        volume.write(s, (long) regionBlocks * bs + 1, 10, dst -> {
            try {
                seen[0] = onDiskIntents().cardinality();
                assertTrue(onDiskIntents().get(1), "region 1 intent is on disk before the data is written");
            } catch (IOException e) {
                throw new AssertionError(e);
            }
            while (dst.hasRemaining()) {
                dst.put((byte) 1);
            }
        }, false);
        assertEquals(1, seen[0]);
        // a trim in region 2 takes that region's intent too
        write(volume, s, 2L * regionBlocks * bs, pattern(1, bs));
        volume.trim(s, 2L * regionBlocks * bs, bs, false);
        PagedBitMap intents = onDiskIntents();
        assertTrue(intents.get(1));
        assertTrue(intents.get(2));
        assertFalse(intents.get(0));
        volume.close();
        volume = null;
        assertEquals(0, onDiskIntents().cardinality(), "a clean close leaves no intents");
    }

    private PagedBitMap onDiskMeta() throws IOException {
        VolumeHeader h = VolumeHeader.read(dir().resolve(Volume.HEADER_FILE));
        PagedBitMap m = new PagedBitMap(h.blocks());
        BitSet damaged = new BitSet();
        BitMapFile.open(dir().resolve(Volume.META_FILE), BitMapFile.Kind.META, h.uuid(), m, damaged).close();
        assertTrue(damaged.isEmpty());
        return m;
    }

    private PagedBitMap onDiskIntents() throws IOException {
        VolumeHeader h = VolumeHeader.read(dir().resolve(Volume.HEADER_FILE));
        PagedBitMap m = new PagedBitMap(WriteIntents.regions(h.blocks(), h.regionShift()));
        BitSet damaged = new BitSet();
        BitMapFile.open(dir().resolve(Volume.INTENT_FILE), BitMapFile.Kind.INTENT, h.uuid(), m, damaged).close();
        assertTrue(damaged.isEmpty());
        return m;
    }

    @ParameterizedTest(name = "bs={0} {1}")
    @MethodSource("geometries")
    void fuaWriteAndForceRangeWork(int blockSize, String kind) throws IOException {
        open(blockSize, kind);
        byte[] d = pattern(3, bs + 1);
        write(volume, s, 5, d, true);
        volume.forceRange(0, 2L * bs);
        assertArrayEquals(d, read(volume, s, 5, bs + 1));
    }

    @Test
    void aClosedVolumeRefusesRequests() throws IOException {
        open(4096, "java");
        volume.close();
        for (Executable e : List.<Executable>of(() -> read(volume, s, 0, 1), () -> write(volume, s, 0, new byte[1]),
                () -> volume.trim(s, 0, 4096, false), () -> volume.writeZeroes(s, 0, 1, false, false, false),
                volume::flush, () -> volume.extents(0, 1, (o, l, u) -> true))) {
            BlockDeviceException x = assertThrows(BlockDeviceException.class, e);
            assertEquals(BlockDeviceException.Reason.UNAVAILABLE, x.reason());
        }
        volume = null;
    }

    // ---- creation ----------------------------------------------------------------------------------------------

    @Test
    void createWritesEveryFileWithItsDocumentedSize() throws IOException {
        Volume.create(dir(), "v", SIZE, 4096, 1 << 20, false, TestVolumes.java());
        assertEquals(SIZE, Files.size(dir().resolve(Volume.DATA_FILE)));
        assertEquals(1 << 20, Files.size(dir().resolve(Volume.SAVE_FILE)));
        assertEquals(4096, Files.size(dir().resolve(Volume.HEADER_FILE)));
        // 1536 blocks: one page; 3 regions: one page; each file = header + 4 KiB CRC table + 1 page
        assertEquals(3 * 4096, Files.size(dir().resolve(Volume.META_FILE)));
        assertEquals(3 * 4096, Files.size(dir().resolve(Volume.INTENT_FILE)));
        VolumeHeader h = VolumeHeader.read(dir().resolve(Volume.HEADER_FILE));
        assertEquals("v", h.name());
        assertEquals(SIZE, h.size());
        assertEquals(4096, h.blockSize());
        assertEquals(1 << 20, h.saveSize());
        assertEquals(9, h.regionShift(), "2 MiB / 4 KiB = 2^9 blocks per region");
        assertEquals(0, h.openCount());
        assertTrue(h.clean());
        assertFalse(h.sparse());
        assertTrue(isZero(Files.readAllBytes(dir().resolve(Volume.DATA_FILE))));
        try (var list = Files.list(dir())) {
            assertEquals(5, list.count(), "volume.meta, data.img, save.img, meta.bitmap, intent.map");
        }
    }

    @Test
    void createRejectsBadGeometryWithClearMessages() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> Volume.create(dir(), "v", 1 << 20, 1000, 0, false, TestVolumes.java()));
        assertEquals("block size 1000 must be a power of two from 512 to 65536", e.getMessage());
        e = assertThrows(IllegalArgumentException.class,
                () -> Volume.create(dir(), "v", (1 << 20) + 100, 4096, 0, false, TestVolumes.java()));
        assertEquals("size 1048676 must be a positive multiple of the block size 4096", e.getMessage());
        e = assertThrows(IllegalArgumentException.class,
                () -> Volume.create(dir(), "v", 0, 4096, 0, false, TestVolumes.java()));
        assertTrue(e.getMessage().startsWith("size 0 must be a positive multiple"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class,
                () -> Volume.create(dir(), "v", 1 << 20, 256, 0, false, TestVolumes.java()));
        assertTrue(e.getMessage().contains("block size 256"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class,
                () -> Volume.create(dir(), "v", 1 << 20, 131072, 0, false, TestVolumes.java()));
        assertTrue(e.getMessage().contains("block size 131072"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class,
                () -> Volume.create(dir(), "v", 1 << 20, 4096, 100, false, TestVolumes.java()));
        assertEquals("save size 100 must be a multiple of the block size 4096", e.getMessage());
        e = assertThrows(IllegalArgumentException.class,
                () -> Volume.create(dir(), "bad/name", 1 << 20, 4096, 0, false, TestVolumes.java()));
        assertTrue(e.getMessage().contains("invalid name 'bad/name'"), e.getMessage());
        assertFalse(Files.exists(dir()), "a refused create leaves nothing behind");
    }

    @Test
    void createRefusesAnExistingDirectory() throws IOException {
        Volume.create(dir(), "v", 1 << 20, 4096, 0, false, TestVolumes.java());
        assertThrows(java.nio.file.FileAlreadyExistsException.class,
                () -> Volume.create(dir(), "v", 1 << 20, 4096, 0, false, TestVolumes.java()));
        assertTrue(Files.exists(dir().resolve(Volume.HEADER_FILE)), "the existing volume is untouched");
    }

    @Test
    void sparseCreateRecordsTheFlag() throws IOException {
        Volume.create(dir(), "v", SIZE, 4096, 1 << 20, true, TestVolumes.java());
        assertTrue(VolumeHeader.read(dir().resolve(Volume.HEADER_FILE)).sparse());
        assertEquals(SIZE, Files.size(dir().resolve(Volume.DATA_FILE)));
        assertEquals(1 << 20, Files.size(dir().resolve(Volume.SAVE_FILE)));
    }
}
