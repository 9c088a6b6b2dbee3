package io.snapbd.engine.snapshot;

import io.snapbd.engine.BlockDevice;
import io.snapbd.engine.io.JavaFileSpace;
import io.snapbd.engine.volume.Volume;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Snapshots against an in-memory reference: EMC's a–h example, the meta bit map cases, and a model-based
 * run of random writes, trims, zero-writes, creates, deletes (head, middle, tail), restores and reopens.
 */
class SnapshotModelTest {

    static final int BS = 512;

    @TempDir
    Path dir;

    private Volume create(long blocks, long saveChunks) throws IOException {
        Path d = dir.resolve("v");
        Volume.create(d, "v", blocks * BS, BS, saveChunks * BS, false, new JavaFileSpace());
        return Volume.open(d, new JavaFileSpace());
    }

    private Volume reopen(Volume v, boolean crash) throws IOException {
        if (crash) {
            v.awaitStagedApplied();     // the model keeps acknowledged writes; staged ones die with the process
            v.abandon();
        } else {
            v.close();
        }
        return Volume.open(dir.resolve("v"), new JavaFileSpace());
    }

    static void write(BlockDevice d, BlockDevice.Session s, long off, byte[] data) throws IOException {
        ByteBuffer src = ByteBuffer.wrap(data);
        d.write(s, off, data.length, dst -> {
            int n = dst.remaining();
            ByteBuffer part = src.slice().limit(n);
            dst.put(part);
            src.position(src.position() + n);
        }, false);
    }

    static byte[] read(BlockDevice d, long off, int len) throws IOException {
        byte[] out = new byte[len];
        ByteBuffer dst = ByteBuffer.wrap(out);
        try (BlockDevice.Session s = d.openSession()) {
            d.read(s, off, len, dst::put);
        }
        return out;
    }

    static byte[] block(char c) {
        byte[] b = new byte[BS];
        Arrays.fill(b, (byte) c);
        return b;
    }

    @Test
    void emcExampleAtoH() throws IOException {
        Volume v = create(8, 8);
        try (BlockDevice.Session s = v.openSession()) {
            for (int i = 0; i < 8; i++) {
                write(v, s, (long) i * BS, block((char) ('a' + i)));      // a0..h0
            }
            v.createSnapshot("s");
            write(v, s, 0, block('A'));      // a1
            write(v, s, BS, block('B'));     // b1
        }
        BlockDevice snap = v.snapshotView("s");
        for (int i = 0; i < 8; i++) {
            assertArrayEquals(block((char) ('a' + i)), read(snap, (long) i * BS, BS), "snapshot block " + i);
        }
        assertArrayEquals(block('A'), read(v, 0, BS));
        assertArrayEquals(block('B'), read(v, BS, BS));
        for (int i = 2; i < 8; i++) {
            assertArrayEquals(block((char) ('a' + i)), read(v, (long) i * BS, BS));
        }
        assertEquals(2, v.snapshots().saveChunksUsed(), "save volume holds a0 and b0");
        v.close();
    }

    @Test
    void writeToNeverUsedBlockCopiesNothing() throws IOException {
        Volume v = create(64, 16);
        try (BlockDevice.Session s = v.openSession()) {
            write(v, s, 0, block('x'));
            v.createSnapshot("s");
            write(v, s, 10 * BS, block('y'));          // block 10 was not in use at the snapshot
            assertEquals(0, v.snapshots().saveChunksUsed());
            assertArrayEquals(new byte[BS], read(v.snapshotView("s"), 10 * BS, BS), "not in use when taken: zeros");
            write(v, s, 0, block('z'));
            assertEquals(1, v.snapshots().saveChunksUsed());
        }
        v.close();
    }

    @Test
    void blockInUseOnlyInOlderSnapshotIsSavedIntoTheTail() throws IOException {
        // Rule 3 (docs/snapshots.md): B in use at s1, trimmed before s2, rewritten after s2: saved on behalf of s1 into s2's area.
        Volume v = create(64, 16);
        try (BlockDevice.Session s = v.openSession()) {
            write(v, s, 5 * BS, block('p'));
            v.createSnapshot("s1");
            v.trim(s, 5 * BS, BS, false);                 // saves 'p' for s1 (tail = s1)
            assertEquals(1, v.snapshots().saveChunksUsed());
            v.createSnapshot("s2");
            write(v, s, 5 * BS, block('q'));              // not in use at s2, in use at s1 but s1 already has it
            assertEquals(1, v.snapshots().saveChunksUsed());
            assertArrayEquals(block('p'), read(v.snapshotView("s1"), 5 * BS, BS));
            assertArrayEquals(new byte[BS], read(v.snapshotView("s2"), 5 * BS, BS));
            // Now a block in use at s1, untouched until after s2... and not in use at s2 because of a trim
            // done while s1 already held a copy: write 6 before s1, trim after s2 is taken is different; use
            // a fresh block 7: in use at s1 and s2, written after s3 -> saved into s3 on behalf of s2.
            write(v, s, 7 * BS, block('r'));
            v.createSnapshot("s3");
            write(v, s, 7 * BS, block('t'));
            assertArrayEquals(block('r'), read(v.snapshotView("s3"), 7 * BS, BS));
            assertArrayEquals(block('t'), read(v, 7 * BS, BS));
        }
        v.close();
    }

    /** Reference model of one volume with snapshots. */
    static final class Model {
        byte[] prod;
        boolean[] used;
        final Map<String, byte[]> snaps = new LinkedHashMap<>();
        final Map<String, boolean[]> snapUsed = new LinkedHashMap<>();

        Model(int bytes, int blocks) {
            prod = new byte[bytes];
            used = new boolean[blocks];
        }
    }

    @Test
    void modelBasedRandomOperations() throws IOException {
        int blocks = 256;
        Volume v = create(blocks, blocks * 8L);
        Model m = new Model(blocks * BS, blocks);
        Random rnd = new Random(42);
        List<String> names = new ArrayList<>();
        int counter = 0;
        BlockDevice.Session s = v.openSession();
        for (int step = 0; step < 3000; step++) {
            int op = rnd.nextInt(100);
            if (op < 45) {
                int off = rnd.nextInt(blocks * BS - 1);
                int len = 1 + rnd.nextInt(Math.min(3 * BS, blocks * BS - off));
                byte[] data = new byte[len];
                rnd.nextBytes(data);
                write(v, s, off, data);
                System.arraycopy(data, 0, m.prod, off, len);
                for (int b = off / BS; b <= (off + len - 1) / BS; b++) {
                    m.used[b] = true;
                }
            } else if (op < 55) {
                int b0 = rnd.nextInt(blocks);
                int n = 1 + rnd.nextInt(Math.min(8, blocks - b0));
                v.trim(s, (long) b0 * BS, (long) n * BS, false);
                Arrays.fill(m.prod, b0 * BS, (b0 + n) * BS, (byte) 0);
                Arrays.fill(m.used, b0, b0 + n, false);
            } else if (op < 62) {
                int b0 = rnd.nextInt(blocks);
                int n = 1 + rnd.nextInt(Math.min(8, blocks - b0));
                boolean noHole = rnd.nextBoolean();
                v.writeZeroes(s, (long) b0 * BS, (long) n * BS, noHole, false, false);
                Arrays.fill(m.prod, b0 * BS, (b0 + n) * BS, (byte) 0);
                Arrays.fill(m.used, b0, b0 + n, noHole);
            } else if (op < 70 && names.size() < 6) {
                String name = "s" + counter++;
                v.createSnapshot(name);
                names.add(name);
                m.snaps.put(name, m.prod.clone());
                m.snapUsed.put(name, m.used.clone());
            } else if (op < 76 && !names.isEmpty()) {
                int i = rnd.nextInt(names.size());    // head, middle or tail
                String name = names.remove(i);
                v.deleteSnapshot(name);
                m.snaps.remove(name);
                m.snapUsed.remove(name);
            } else if (op < 79 && !names.isEmpty()) {
                String name = names.get(rnd.nextInt(names.size()));
                s.close();
                v.restore(name);
                s = v.openSession();
                m.prod = m.snaps.get(name).clone();
                m.used = m.snapUsed.get(name).clone();
            } else if (op < 82) {
                s.close();
                boolean crash = rnd.nextBoolean();
                if (!crash) {
                    v.flush();
                }
                v = reopen(v, crash);
                s = v.openSession();
            } else if (op < 85) {
                v.flush();
            } else {
                continue;
            }
            if (step % 50 == 0 || op >= 62) {
                verify(v, m, names, blocks, step);
            }
        }
        verify(v, m, names, blocks, -1);
        s.close();
        v.close();
        v = Volume.open(dir.resolve("v"), new JavaFileSpace());
        verify(v, m, names, blocks, -2);
        v.close();
    }

    private static boolean allZero(byte[] a, int off, int len) {
        for (int i = off; i < off + len; i++) {
            if (a[i] != 0) {
                return false;
            }
        }
        return true;
    }

    private static void verify(Volume v, Model m, List<String> names, int blocks, int step) throws IOException {
        assertArrayEquals(m.prod, read(v, 0, blocks * BS), "production at step " + step);
        for (int b = 0; b < blocks; b++) {
            // A block of zeros written with NO_HOLE may come back as a hole after a crash (recovery derives
            // in-use from the data); a block with data never may.
            if (m.used[b] && !allZero(m.prod, b * BS, BS)) {
                assertTrue(v.inUse(b), "block " + b + " must be in use at step " + step);
            }
        }
        long chunks = 0;
        for (SnapshotSet.Info i : v.snapshots().list()) {
            chunks += i.chunksUsed();
        }
        assertEquals(chunks, v.snapshots().saveChunksUsed(), "used chunks = map entries at step " + step);
        for (String n : names) {
            BlockDevice view = v.snapshotView(n);
            assertArrayEquals(m.snaps.get(n), read(view, 0, blocks * BS), "snapshot " + n + " at step " + step);
            boolean[] used = m.snapUsed.get(n);
            List<long[]> ext = new ArrayList<>();
            view.extents(0, (long) blocks * BS, (off, len, inUse) -> {
                for (long b = off / BS; b < (off + len) / BS; b++) {
                    if (used[(int) b] && !inUse && !allZero(m.snaps.get(n), (int) b * BS, BS)) {
                        ext.add(new long[]{b});
                    }
                }
                return true;
            });
            assertTrue(ext.isEmpty(), "snapshot " + n + " reports in-use blocks as holes at step " + step);
        }
        assertFalse(v.snapshots().list().stream().anyMatch(i -> !i.active()), "nothing terminated in this run");
    }
}
