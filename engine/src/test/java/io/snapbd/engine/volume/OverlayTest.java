package io.snapbd.engine.volume;

import io.snapbd.engine.io.MappedData;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

class OverlayTest {

    static final int BS = 4096;
    static final long BLOCKS = 64;

    @TempDir
    Path tmp;

    private MappedData production(byte fill) throws IOException {
        Path f = tmp.resolve("data-" + fill);
        try (FileChannel ch = FileChannel.open(f, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE)) {
            ByteBuffer b = ByteBuffer.allocate((int) (BLOCKS * BS));
            for (int i = 0; i < b.capacity(); i++) {
                b.put(i, fill);
            }
            while (b.hasRemaining()) {
                ch.write(b);
            }
        }
        return new MappedData(f, BLOCKS * BS);
    }

    private static byte[] readProduction(MappedData.Cursor c, long offset, int n) throws IOException {
        byte[] out = new byte[n];
        c.view(offset, n).get(out);
        return out;
    }

    private static byte[] readThrough(Overlay o, long b, MappedData.Cursor c, Overlay.View v) throws IOException {
        ByteBuffer dst = ByteBuffer.allocate(BS);
        o.readBlock(b, b * BS, BS, dst, c, v);
        return dst.array();
    }

    /** Stages a write of {@code length} bytes of {@code value} at {@code offset}; returns the slots. */
    private static int[] stage(Overlay o, MappedData.Cursor c, Overlay.View v, long offset, int length, byte value)
            throws IOException {
        long first = offset / BS;
        long last = (offset + length - 1) / BS;
        int[] slots = new int[(int) (last - first + 1)];
        assertTrue(o.reserve(first, last, offset, offset + length, c, v, slots));
        long pos = offset;
        long end = offset + length;
        while (pos < end) {
            long b = pos / BS;
            int from = (int) (pos % BS);
            int to = (int) Math.min(BS, end - b * BS);
            ByteBuffer s = v.slot(slots[(int) (b - first)], from, to);
            while (s.hasRemaining()) {
                s.put(value);
            }
            pos = b * BS + to;
        }
        o.publish(first, last, slots);
        return slots;
    }

    @Test
    void partialWritesKeepTheUncoveredBytesOfTheirEdgeBlocks() throws IOException {
        try (MappedData data = production((byte) 7)) {
            MappedData.Cursor c = data.cursor();
            Overlay o = new Overlay(BLOCKS, BS, 1 << 20);
            Overlay.View v = o.view();
            // Unaligned at both ends, across blocks 2..4; and a write inside block 10 leaving both edges.
            stage(o, c, v, 2L * BS + 100, 2 * BS + 50, (byte) 1);
            stage(o, c, v, 10L * BS + 1000, 96, (byte) 2);
            byte[] expect2 = new byte[BS];
            java.util.Arrays.fill(expect2, (byte) 7);
            java.util.Arrays.fill(expect2, 100, BS, (byte) 1);
            assertArrayEquals(expect2, readThrough(o, 2, c, v));
            byte[] full = new byte[BS];
            java.util.Arrays.fill(full, (byte) 1);
            assertArrayEquals(full, readThrough(o, 3, c, v));
            byte[] expect4 = new byte[BS];
            java.util.Arrays.fill(expect4, (byte) 7);
            java.util.Arrays.fill(expect4, 0, 150, (byte) 1);
            assertArrayEquals(expect4, readThrough(o, 4, c, v));
            byte[] expect10 = new byte[BS];
            java.util.Arrays.fill(expect10, (byte) 7);
            java.util.Arrays.fill(expect10, 1000, 1096, (byte) 2);
            assertArrayEquals(expect10, readThrough(o, 10, c, v));
            // Production is unchanged until applied, then holds exactly what readers saw.
            byte[] seven = new byte[BS];
            java.util.Arrays.fill(seven, (byte) 7);
            assertArrayEquals(seven, readProduction(c, 3L * BS, BS));
            assertEquals(4, o.applyStaged(data.cursor(), o.view(), o.stagedSnapshot()));
            assertEquals(0, o.staged());
            assertArrayEquals(expect2, readProduction(c, 2L * BS, BS));
            assertArrayEquals(full, readProduction(c, 3L * BS, BS));
            assertArrayEquals(expect4, readProduction(c, 4L * BS, BS));
            assertArrayEquals(expect10, readProduction(c, 10L * BS, BS));
        }
    }

    @Test
    void fullBlockWritesReplaceTheWholeBlock() throws IOException {
        try (MappedData data = production((byte) 9)) {
            MappedData.Cursor c = data.cursor();
            Overlay o = new Overlay(BLOCKS, BS, 1 << 20);
            Overlay.View v = o.view();
            stage(o, c, v, 5L * BS, 2 * BS, (byte) 3);
            o.applyStaged(c, v, o.stagedSnapshot());
            byte[] three = new byte[2 * BS];
            java.util.Arrays.fill(three, (byte) 3);
            assertArrayEquals(three, readProduction(c, 5L * BS, 2 * BS));
        }
    }

    @Test
    void preallocatingGrowsTheArenaOnceAndStagingThenAllocatesNothing() throws IOException {
        try (MappedData data = production((byte) 0)) {
            MappedData.Cursor c = data.cursor();
            Overlay o = new Overlay(BLOCKS, BS, 4L << 20);
            o.preallocate(2L * Overlay.CHUNK_BYTES + 1);
            assertEquals(3L * Overlay.CHUNK_BYTES, o.allocatedBytes(), "whole pieces, rounded up");
            o.preallocate(64L << 20);
            assertEquals(4L << 20, o.allocatedBytes(), "never beyond the capacity");
            Overlay.View v = o.view();
            stage(o, c, v, 0, BS, (byte) 7);
            assertEquals(4L << 20, o.allocatedBytes());
            o.applyStaged(c, v, o.stagedSnapshot());
            assertEquals(7, data.cursor().view(0, 1).get(), "the preallocated slot carried the data");
        }
    }

    @Test
    void theArenaGrowsOnlyWithTheBlocksStagedAtOnce() throws IOException {
        try (MappedData data = production((byte) 0)) {
            MappedData.Cursor c = data.cursor();
            Overlay o = new Overlay(BLOCKS, BS, 256L << 20);
            assertEquals((256 << 20) / BS, o.capacity());
            assertEquals(0, o.allocatedBytes());
            Overlay.View v = o.view();
            stage(o, c, v, 0, BS, (byte) 1);
            assertEquals(Overlay.CHUNK_BYTES, o.allocatedBytes());
            o.applyStaged(c, v, o.stagedSnapshot());
            // Freed slots are reused lowest first: staging again allocates nothing more.
            for (int i = 0; i < 8; i++) {
                stage(o, c, v, (long) i * BS, BS, (byte) 2);
            }
            assertEquals(Overlay.CHUNK_BYTES, o.allocatedBytes());
        }
    }

    @Test
    void theCommitterDoesNotWaitForABatchWhenAWriterFoundNoRoom() throws Exception {
        try (MappedData data = production((byte) 0)) {
            MappedData.Cursor c = data.cursor();
            Overlay o = new Overlay(BLOCKS, BS, 16L * BS);     // 16 slots, batch target 4
            Overlay.View v = o.view();
            stage(o, c, v, 0, BS, (byte) 1);
            // Below the batch target and nobody waiting: a committer allowed to wait "forever" would wait.
            // Filling the overlay until a reservation fails makes it go at once, whatever the batch time.
            for (int i = 1; i < 16; i++) {
                stage(o, c, v, (long) i * BS, BS, (byte) 1);
            }
            assertFalse(o.reserve(20, 20, 20L * BS, 21L * BS, c, v, new int[1]));
            assertEquals(16, o.awaitBatch(0, Long.MAX_VALUE / 4));
        }
    }

    @Test
    void theCommitterDoesNotWaitOnceTheBatchTargetIsReached() throws Exception {
        try (MappedData data = production((byte) 0)) {
            MappedData.Cursor c = data.cursor();
            Overlay o = new Overlay(BLOCKS, BS, 16L * BS);     // batch target: a quarter of 16 slots
            Overlay.View v = o.view();
            for (int i = 0; i < 4; i++) {
                stage(o, c, v, (long) i * BS, BS, (byte) 1);
            }
            assertEquals(4, o.awaitBatch(0, Long.MAX_VALUE / 4));
        }
    }

    @Test
    void aWholeBlockRewriteOfAStagedBlockReplacesItsSlotAndFreesTheOldOne() throws IOException {
        try (MappedData data = production((byte) 0)) {
            MappedData.Cursor c = data.cursor();
            Overlay o = new Overlay(BLOCKS, BS, 16L * BS);     // 16 slots
            Overlay.View v = o.view();
            // Far more rewrites than slots, nothing applied: each one must give its old slot back.
            for (int i = 1; i <= 40; i++) {
                stage(o, c, v, 3L * BS, BS, (byte) i);
                assertEquals(1, o.staged(), "the block keeps one place in the queue");
            }
            byte[] forty = new byte[BS];
            java.util.Arrays.fill(forty, (byte) 40);
            assertArrayEquals(forty, readThrough(o, 3, c, v));
            assertArrayEquals(new byte[BS], readProduction(c, 3L * BS, BS), "production untouched until applied");
            assertEquals(15, o.freeSlots());
            assertEquals(1, o.applyStaged(c, v, o.stagedSnapshot()));
            assertArrayEquals(forty, readProduction(c, 3L * BS, BS));
            assertEquals(16, o.freeSlots());
        }
    }

    @Test
    void rewritesRacingTheCommitterLandTheLastValueAndLeakNoSlot() throws Exception {
        try (MappedData data = production((byte) 0)) {
            Overlay o = new Overlay(BLOCKS, BS, 32L * BS);
            java.util.concurrent.atomic.AtomicBoolean done = new java.util.concurrent.atomic.AtomicBoolean();
            java.util.concurrent.atomic.AtomicReference<Throwable> failure = new java.util.concurrent.atomic.AtomicReference<>();
            Thread committer = new Thread(() -> {
                MappedData.Cursor cc = data.cursor();
                Overlay.View cv = o.view();
                try {
                    while (!done.get() || o.staged() > 0) {
                        int n = o.awaitBatch(1, 0);
                        if (n > 0) {
                            o.applyStaged(cc, cv, n);
                        }
                    }
                } catch (Throwable t) {
                    failure.set(t);
                }
            });
            committer.start();
            MappedData.Cursor c = data.cursor();
            Overlay.View v = o.view();
            byte[] last = new byte[8];
            java.util.Random r = new java.util.Random(7);
            for (int i = 1; i <= 20_000; i++) {
                int b = r.nextInt(8);
                byte value = (byte) (1 + i % 250);
                int[] slots = new int[1];
                while (!o.reserve(b, b, (long) b * BS, (long) (b + 1) * BS, c, v, slots)) {
                    Thread.onSpinWait();
                }
                ByteBuffer s = v.slot(slots[0], 0, BS);
                while (s.hasRemaining()) {
                    s.put(value);
                }
                o.publish(b, b, slots);
                last[b] = value;
                byte[] seen = readThrough(o, b, c, v);
                assertEquals(value, seen[0]);
                assertEquals(value, seen[BS - 1]);
            }
            done.set(true);
            committer.join();
            assertEquals(null, failure.get());
            assertEquals(0, o.staged());
            assertEquals(32, o.freeSlots(), "every replaced or applied slot came back");
            for (int b = 0; b < 8; b++) {
                byte[] want = new byte[BS];
                java.util.Arrays.fill(want, last[b]);
                assertArrayEquals(want, readProduction(c, (long) b * BS, BS), "block " + b);
            }
        }
    }

    /** Ranges longer than an int-counted run (2^20 blocks) are scanned in runs: a block staged anywhere is found. */
    @Test
    void anyStagedFindsABlockBeyondTheFirstRunOfALongRange() throws IOException {
        long blocks = 3L << 20;
        long far = (5L << 19) + 3;              // in the third run
        try (MappedData data = production((byte) 1)) {
            MappedData.Cursor c = data.cursor();
            Overlay o = new Overlay(blocks, BS, 1 << 20);
            Overlay.View v = o.view();
            int[] slots = new int[1];
            assertTrue(o.reserve(far, far, far * BS, (far + 1) * BS, c, v, slots));   // whole block: no edge copies
            o.publish(far, far, slots);
            assertTrue(o.anyStaged(0, blocks - 1));
            assertTrue(o.anyStaged(far - (1L << 20) + 1, far), "the last block of a run");
            assertTrue(o.anyStaged(far, far + (1L << 20)), "the first block of a run");
            assertFalse(o.anyStaged(0, far - 1));
            assertFalse(o.anyStaged(far + 1, blocks - 1));
        }
    }

    @Test
    void theCommitterIsWaitedForOnceAQuarterOfTheSlotsAreStaged() throws IOException {
        try (MappedData data = production((byte) 1)) {
            MappedData.Cursor c = data.cursor();
            Overlay o = new Overlay(BLOCKS, BS, 32L * BS);      // 32 slots: a quarter is 8
            Overlay.View v = o.view();
            for (int b = 0; b < 7; b++) {
                stage(o, c, v, (long) b * BS, BS, (byte) 2);
            }
            assertFalse(o.waitedFor(), "7 of 32 slots staged, nobody waits");
            stage(o, c, v, 7L * BS, BS, (byte) 2);
            assertTrue(o.waitedFor(), "8 of 32 slots staged");
            o.applyStaged(c, v, o.stagedSnapshot());
            assertFalse(o.waitedFor(), "everything applied");
        }
    }
}
