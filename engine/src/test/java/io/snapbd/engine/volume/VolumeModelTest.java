package io.snapbd.engine.volume;

import io.snapbd.engine.BlockDevice;
import io.snapbd.engine.TestVolumes;
import io.snapbd.engine.io.FileSpace;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import java.io.IOException;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.BitSet;
import java.util.Random;

import static io.snapbd.engine.TestVolumes.read;
import static io.snapbd.engine.TestVolumes.write;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * Model-based test: a seeded random sequence of writes, trims, write-zeroes, flushes, clean reopens and crashes
 * (abandon + reopen), checked against a byte[] reference and an exact model of the meta bit map.
 *
 * <p>The bit model: WRITE sets every touched block; TRIM and WRITE_ZEROES without NO_HOLE clear the whole blocks
 * of the range; WRITE_ZEROES with NO_HOLE sets them; partial edge blocks keep their bit. FLUSH and close persist
 * the bits. After a crash the map is exactly {@code persisted ∪ {blocks with non-zero data}}: recovery only adds
 * blocks whose data is non-zero, and every block changed since the last flush lies in an intent region.
 */
class VolumeModelTest {

    @TempDir
    Path tmp;

    @ParameterizedTest(name = "bs={0} {1} seed={2}")
    @CsvSource({
            "512, java, 1",
            "4096, java, 2",
            "4096, fast, 3",
            "65536, java, 4",
            "65536, fast, 5",
    })
    void randomOperationsAgreeWithTheModel(int bs, String kind, long seed) throws IOException {
        // not a whole number of 2 MiB regions, nor of 64-bit words of blocks
        long size = (4L << 20) + 3L * bs;
        int blocks = (int) (size / bs);
        FileSpace space = VolumeTest.space(kind);
        Path dir = tmp.resolve("m");
        Volume.create(dir, "m", size, bs, 0, false, space);
        Volume v = Volume.open(dir, space);
        BlockDevice.Session s = v.openSession();

        Random rnd = new Random(seed);
        byte[] model = new byte[(int) size];
        BitSet bits = new BitSet(blocks);          // the exact in-memory meta bit map
        BitSet persisted = new BitSet(blocks);     // as of the last flush / close / open
        int[] counts = new int[8];
        final int ops = 5000;
        try {
            for (int op = 0; op < ops; op++) {
                int kindOfOp = rnd.nextInt(100);
                if (kindOfOp < 45) {
                    counts[0]++;
                    long off = randomOffset(rnd, size, bs);
                    int len = (int) Math.min(size - off, 1 + rnd.nextInt(rnd.nextInt(8) == 0 ? 4 * bs : bs + 10));
                    byte[] data = new byte[len];
                    if (rnd.nextInt(10) != 0) {           // one write in ten writes zeros
                        rnd.nextBytes(data);
                    }
                    write(v, s, off, data, rnd.nextInt(20) == 0);
                    System.arraycopy(data, 0, model, (int) off, len);
                    bits.set((int) (off / bs), (int) ((off + len - 1) / bs) + 1);
                } else if (kindOfOp < 57) {
                    counts[1]++;
                    long off = randomOffset(rnd, size, bs);
                    long len = Math.min(size - off, rnd.nextInt(6 * bs));
                    boolean fua = rnd.nextInt(10) == 0;
                    v.trim(s, off, len, fua);
                    long first = (off + bs - 1) / bs;
                    long end = (off + len) / bs;
                    if (first < end) {
                        Arrays.fill(model, (int) (first * bs), (int) (end * bs), (byte) 0);
                        bits.clear((int) first, (int) end);
                    }
                    if (fua) {
                        persisted = (BitSet) bits.clone();
                    }
                } else if (kindOfOp < 72) {
                    counts[2]++;
                    long off = randomOffset(rnd, size, bs);
                    long len = Math.min(size - off, rnd.nextInt(6 * bs));
                    boolean noHole = rnd.nextBoolean();
                    boolean fua = rnd.nextInt(10) == 0;
                    v.writeZeroes(s, off, len, noHole, false, fua);
                    Arrays.fill(model, (int) off, (int) (off + len), (byte) 0);
                    long first = (off + bs - 1) / bs;
                    long end = (off + len) / bs;
                    if (first < end) {
                        bits.set((int) first, (int) end, noHole);
                    }
                    if (fua) {
                        persisted = (BitSet) bits.clone();
                    }
                } else if (kindOfOp < 92) {
                    counts[3]++;
                    long off = rnd.nextInt((int) size);
                    int len = (int) Math.min(size - off, rnd.nextInt(3 * bs));
                    assertArrayEquals(Arrays.copyOfRange(model, (int) off, (int) off + len), read(v, s, off, len),
                            "op " + op + ": read at " + off);
                } else if (kindOfOp < 98) {
                    counts[4]++;
                    v.flush();
                    persisted = (BitSet) bits.clone();
                } else if (kindOfOp < 99) {
                    counts[5]++;
                    s.close();
                    v.close();
                    v = Volume.open(dir, space);
                    s = v.openSession();
                    assertEquals(true, v.recovery().wasClean(), "op " + op);
                    persisted = (BitSet) bits.clone();
                    checkBits(v, model, bits, blocks, "op " + op + " after reopen");
                } else {
                    counts[6]++;
                    s.close();
                    v.abandon();
                    v = Volume.open(dir, space);
                    s = v.openSession();
                    assertEquals(false, v.recovery().wasClean(), "op " + op);
                    // after a crash: exactly what was persisted plus every block holding non-zero data
                    BitSet expected = (BitSet) persisted.clone();
                    for (int b = 0; b < blocks; b++) {
                        if (!TestVolumes.isZero(model, b * bs, (b + 1) * bs)) {
                            expected.set(b);
                        }
                    }
                    checkBits(v, model, expected, blocks, "op " + op + " after crash");
                    bits = expected;
                    persisted = (BitSet) bits.clone();
                    assertArrayEquals(model, read(v, s, 0, (int) size), "op " + op + ": content after crash");
                }
                // a few random reads after every step
                for (int k = 0; k < 3; k++) {
                    long off = rnd.nextInt((int) size);
                    int len = (int) Math.min(size - off, 1 + rnd.nextInt(bs + 64));
                    byte[] got = read(v, s, off, len);
                    if (!Arrays.equals(Arrays.copyOfRange(model, (int) off, (int) off + len), got)) {
                        throw new AssertionError("op " + op + ": random read at " + off + "+" + len + " differs");
                    }
                }
                if (op % 500 == 0) {
                    checkBits(v, model, bits, blocks, "op " + op);
                }
            }
            assertArrayEquals(model, read(v, s, 0, (int) size), "full content at the end");
            checkBits(v, model, bits, blocks, "at the end");
            for (int b = 0; b < blocks; b++) {
                boolean zero = TestVolumes.isZero(model, b * bs, (b + 1) * bs);
                if (!zero && !v.inUse(b)) {
                    throw new AssertionError("block " + b + " holds data but is not in use");
                }
            }
            // every kind of step ran
            for (int i = 0; i < 7; i++) {
                if (counts[i] == 0) {
                    throw new AssertionError("operation kind " + i + " never ran: " + Arrays.toString(counts));
                }
            }
        } finally {
            s.close();
            v.close();
        }
        // and once more after a clean close
        Volume last = Volume.open(dir, space);
        try (BlockDevice.Session s2 = last.openSession()) {
            assertArrayEquals(model, read(last, s2, 0, (int) size));
            checkBits(last, model, bits, blocks, "after the final reopen");
        } finally {
            last.close();
        }
    }

    /** Exact bit comparison, plus the invariant "not in use ⇒ zero data" through the model, plus extents. */
    private static void checkBits(Volume v, byte[] model, BitSet expected, int blocks, String when) throws IOException {
        int bsInt = v.blockSize();
        for (int b = 0; b < blocks; b++) {
            if (v.inUse(b) != expected.get(b)) {
                throw new AssertionError(when + ": block " + b + " in use " + v.inUse(b) + ", model says " + expected.get(b));
            }
            if (!expected.get(b) && !TestVolumes.isZero(model, b * bsInt, (b + 1) * bsInt)) {
                throw new AssertionError(when + ": block " + b + " is not in use but the model holds data there");
            }
        }
        assertEquals(expected.cardinality(), v.blocksInUse(), when);
        long bs = v.blockSize();
        long[] pos = {0};
        v.extents(0, v.size(), (o, l, used) -> {
            if (o != pos[0]) {
                throw new AssertionError(when + ": extent gap at " + pos[0]);
            }
            for (long b = o / bs; b < (o + l) / bs; b++) {
                if (expected.get((int) b) != used) {
                    throw new AssertionError(when + ": extent [" + o + ", +" + l + ") says " + used + " for block " + b);
                }
            }
            if (o + l < v.size() && expected.get((int) ((o + l) / bs)) == used) {
                throw new AssertionError(when + ": extents not coalesced at " + (o + l));
            }
            pos[0] = o + l;
            return true;
        });
        assertEquals(v.size(), pos[0], when + ": extents cover the volume");
    }

    private static long randomOffset(Random rnd, long size, int bs) {
        return switch (rnd.nextInt(4)) {
            case 0 -> (long) rnd.nextInt((int) (size / bs)) * bs;                       // aligned
            case 1 -> Math.max(0, (long) rnd.nextInt((int) (size / bs)) * bs - 1 - rnd.nextInt(8));   // just before a boundary
            default -> rnd.nextInt((int) size);                                        // anywhere
        };
    }
}
