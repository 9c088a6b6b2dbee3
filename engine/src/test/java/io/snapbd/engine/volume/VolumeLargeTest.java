package io.snapbd.engine.volume;

import io.snapbd.engine.BlockDevice;
import io.snapbd.engine.TestVolumes;
import io.snapbd.engine.io.MappedData;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import static io.snapbd.engine.TestVolumes.isZero;
import static io.snapbd.engine.TestVolumes.pattern;
import static io.snapbd.engine.TestVolumes.read;
import static io.snapbd.engine.TestVolumes.write;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** A sparse 5 GiB volume: offsets past 2 GiB and requests that straddle the 1 GiB mapping segments. */
class VolumeLargeTest {

    private static final long GIB = 1L << 30;
    private static final long SIZE = 5 * GIB;

    @TempDir
    Path tmp;

    @Test
    void offsetsPastTwoGibAndAcrossSegmentBoundariesReadBack() throws IOException {
        Path dir = tmp.resolve("big");
        Volume.create(dir, "big", SIZE, 4096, 0, true, TestVolumes.java());
        assertEquals(SIZE, Files.size(dir.resolve(Volume.DATA_FILE)));
        assertEquals(GIB, MappedData.SEGMENT_BYTES);
        long[][] writes = {
                {GIB - 10, 20},                  // straddles segments 0|1
                {2 * GIB - 1, 2},                // straddles 1|2, the int boundary of a byte offset
                {3 * GIB - 4096, 8192},          // a whole block each side of 2|3
                {4 * GIB - 3, 6},                // straddles 3|4
                {4 * GIB + 123_457, 70_001},     // well past 4 GiB
                {SIZE - 1, 1},                   // the very last byte
        };
        Volume v = Volume.open(dir, TestVolumes.java());
        try (BlockDevice.Session s = v.openSession()) {
            for (int i = 0; i < writes.length; i++) {
                write(v, s, writes[i][0], pattern(i + 1, (int) writes[i][1]));
            }
            check(v, s, writes);
            // extents around a straddling write: blocks (GiB-10)/4096 and GiB/4096 are in use
            List<long[]> ext = new ArrayList<>();
            v.extents(GIB - 8192, 16384, (o, l, u) -> {
                ext.add(new long[]{o, l, u ? 1 : 0});
                return true;
            });
            assertEquals(3, ext.size());
            assertArrayEquals(new long[]{GIB - 8192, 4096, 0}, ext.get(0));
            assertArrayEquals(new long[]{GIB - 4096, 8192, 1}, ext.get(1));
            assertArrayEquals(new long[]{GIB + 4096, 4096, 0}, ext.get(2));
            // a trim across a segment boundary
            v.trim(s, 3 * GIB - 4096, 8192, false);
            assertTrue(isZero(read(v, s, 3 * GIB - 4096, 8192)));
            assertFalse(v.inUse(3 * GIB / 4096 - 1));
            assertFalse(v.inUse(3 * GIB / 4096));
            writes[2] = new long[]{3 * GIB - 4096, 0};
        }
        v.close();
        Volume again = Volume.open(dir, TestVolumes.java());
        try (BlockDevice.Session s = again.openSession()) {
            assertTrue(again.recovery().wasClean());
            check(again, s, writes);
            assertTrue(again.header().sparse());
        } finally {
            again.close();
        }
    }

    /**
     * A TRIM of the whole 5 GiB (1.3 million blocks: more than one of the int-counted runs the copy-on-write and
     * overlay scans go in) after a snapshot copies the before-images of blocks in use at both ends of the range.
     */
    @Test
    void aTrimOfMoreThanARunOfBlocksCopiesBlocksAtBothEnds() throws IOException {
        Path dir = tmp.resolve("trim");
        Volume.create(dir, "trim", SIZE, 4096, 1L << 20, true, TestVolumes.java());
        Volume v = Volume.open(dir, TestVolumes.java());
        try (BlockDevice.Session s = v.openSession()) {
            long late = SIZE - 8192;        // block 1,310,718: in the second run of 2^20 blocks
            write(v, s, 0, pattern(1, 4096));
            write(v, s, late, pattern(2, 4096));
            v.createSnapshot("before");
            v.trim(s, 0, SIZE, false);
            assertTrue(isZero(read(v, s, 0, 4096)));
            assertTrue(isZero(read(v, s, late, 4096)));
            BlockDevice snap = v.snapshotView("before");
            try (BlockDevice.Session ss = snap.openSession()) {
                assertArrayEquals(pattern(1, 4096), read(snap, ss, 0, 4096));
                assertArrayEquals(pattern(2, 4096), read(snap, ss, late, 4096));
            }
            assertEquals(2, v.cowCopies());
        } finally {
            v.close();
        }
    }

    private static void check(Volume v, BlockDevice.Session s, long[][] writes) throws IOException {
        for (int i = 0; i < writes.length; i++) {
            long off = writes[i][0];
            int len = (int) writes[i][1];
            if (len == 0) {
                continue;
            }
            assertArrayEquals(pattern(i + 1, len), read(v, s, off, len), "write " + i + " at " + off);
            for (long b = off / 4096; b <= (off + len - 1) / 4096; b++) {
                assertTrue(v.inUse(b), "block " + b);
            }
            // the bytes just around the write are still zero
            if (off > 0) {
                assertEquals(0, read(v, s, off - 1, 1)[0]);
            }
            if (off + len < v.size()) {
                assertEquals(0, read(v, s, off + len, 1)[0]);
            }
        }
        // one read spanning three segments: 1 GiB - 10 .. 2 GiB + 10 is too big for a byte[]; read 64 KiB windows
        byte[] w = read(v, s, 2 * GIB - 32768, 65536);
        assertEquals(pattern(2, 2)[0], w[32767]);
        assertEquals(pattern(2, 2)[1], w[32768]);
    }
}
