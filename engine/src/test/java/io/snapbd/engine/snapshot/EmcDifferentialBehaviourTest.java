package io.snapbd.engine.snapshot;

import io.snapbd.engine.BlockDevice;
import io.snapbd.engine.io.JavaFileSpace;
import io.snapbd.engine.volume.Volume;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** EMC behaviours 21–31 and 33 of the snapshot differential (docs/glossary.md), one test each. */
class EmcDifferentialBehaviourTest {

    static final int BS = 512;
    static final int BLOCKS = 16;

    @TempDir
    Path dir;
    Volume v;
    BlockDevice.Session s;

    @BeforeEach
    void open() throws IOException {
        Volume.create(dir.resolve("v"), "v", (long) BLOCKS * BS, BS, 64L * BS, false, new JavaFileSpace());
        v = Volume.open(dir.resolve("v"), new JavaFileSpace());
        s = v.openSession();
    }

    @AfterEach
    void close() throws IOException {
        s.close();
        v.close();
    }

    private void put(int block, char c) throws IOException {
        SnapshotModelTest.write(v, s, (long) block * BS, SnapshotModelTest.block(c));
    }

    private Differential.State[] states(String l, String m) throws IOException {
        Differential.State[] out = new Differential.State[BLOCKS];
        v.snapshots().differential(l, m).scan(0, BLOCKS, (first, count, st) -> {
            for (long b = first; b < first + count; b++) {
                out[(int) b] = st;
            }
            return true;
        });
        return out;
    }

    private List<Integer> changed(String l, String m) throws IOException {
        List<Integer> out = new ArrayList<>();
        Differential.State[] st = states(l, m);
        for (int b = 0; b < BLOCKS; b++) {
            if (st[b] == Differential.State.CHANGED) {
                out.add(b);
            }
        }
        return out;
    }

    @Test
    void b21_youngerNotAfterOlderIsAnError() throws IOException {
        v.createSnapshot("l");
        v.createSnapshot("m");
        assertThrows(IllegalArgumentException.class, () -> v.snapshots().differential("m", "l"));
        assertThrows(IllegalArgumentException.class, () -> v.snapshots().differential("l", "l"));
    }

    @Test
    void b22_ascendingOrderCoveringTheWholeVolume() throws IOException {
        put(3, 'a');
        v.createSnapshot("l");
        put(3, 'b');
        put(9, 'c');
        v.createSnapshot("m");
        long[] next = {0};
        v.snapshots().differential("l", "m").scan(0, BLOCKS, (first, count, st) -> {
            assertEquals(next[0], first, "runs are consecutive and ascending");
            next[0] = first + count;
            return true;
        });
        assertEquals(BLOCKS, next[0]);
    }

    @Test
    void b24_adjacentSnapshotsConsultOnlyL() throws IOException {
        for (int b = 0; b < 4; b++) {
            put(b, 'a');
        }
        v.createSnapshot("l");
        put(0, 'b');                 // saved in l
        v.createSnapshot("m");
        put(1, 'c');                 // saved in m: after M, must not count for (l, m)
        assertEquals(List.of(0), changed("l", "m"));
    }

    @Test
    void b25_changeAfterMIsNotReturned() throws IOException {
        put(2, 'a');
        v.createSnapshot("l");
        v.createSnapshot("m");
        put(2, 'b');
        v.createSnapshot("n");
        assertEquals(List.of(), changed("l", "m"));
        assertEquals(List.of(2), changed("m", "n"));
    }

    @Test
    void b26_changedInSeveralIntervalsIsReturnedOnceWithMsContent() throws IOException {
        put(5, 'a');
        v.createSnapshot("l");
        put(5, 'b');
        v.createSnapshot("x");
        put(5, 'c');
        v.createSnapshot("m");
        put(5, 'd');
        assertEquals(List.of(5), changed("l", "m"));
        assertArrayEquals(SnapshotModelTest.block('c'), SnapshotModelTest.read(v.snapshotView("m"), 5L * BS, BS));
    }

    @Test
    void b27_applyingTheDeltaToLGivesM() throws IOException {
        for (int b = 0; b < BLOCKS; b += 2) {
            put(b, 'a');
        }
        v.createSnapshot("l");
        byte[] copy = SnapshotModelTest.read(v.snapshotView("l"), 0, BLOCKS * BS);
        put(1, 'x');
        put(4, 'y');
        v.trim(s, 6L * BS, BS, false);
        v.createSnapshot("m");
        byte[] m = SnapshotModelTest.read(v.snapshotView("m"), 0, BLOCKS * BS);
        Differential.State[] st = states("l", "m");
        for (int b = 0; b < BLOCKS; b++) {
            if (st[b] == Differential.State.CHANGED) {
                System.arraycopy(m, b * BS, copy, b * BS, BS);
            } else if (st[b] == Differential.State.UNUSED) {
                java.util.Arrays.fill(copy, b * BS, (b + 1) * BS, (byte) 0);
            }
        }
        assertArrayEquals(m, copy);
    }

    @Test
    void b28_blockNotInUseInMIsNeverReturnedAsChanged() throws IOException {
        put(7, 'a');
        v.createSnapshot("l");
        put(7, 'b');
        v.trim(s, 7L * BS, BS, false);
        v.createSnapshot("m");
        assertEquals(Differential.State.UNUSED, states("l", "m")[7]);
    }

    @Test
    void b29_notInUseInAnIntermediateSnapshotIsReturned() throws IOException {
        // Block 8 is not in use at l, written after: no before-image anywhere, still returned (¬meta_l).
        v.createSnapshot("l");
        put(8, 'a');
        v.createSnapshot("m");
        assertEquals(List.of(8), changed("l", "m"));
    }

    @Test
    void b30_inUseEverywhereWithNoBeforeImageIsNotReturned() throws IOException {
        put(10, 'a');
        v.createSnapshot("l");
        v.createSnapshot("x");
        v.createSnapshot("m");
        assertEquals(Differential.State.UNCHANGED, states("l", "m")[10]);
    }

    @Test
    void b31_noFalseNegatives() throws IOException {
        java.util.Random rnd = new java.util.Random(31);
        List<String> names = new ArrayList<>();
        List<byte[]> contents = new ArrayList<>();
        for (int k = 0; k < 5; k++) {
            for (int i = 0; i < 6; i++) {
                int b = rnd.nextInt(BLOCKS);
                if (rnd.nextInt(4) == 0) {
                    v.trim(s, (long) b * BS, BS, false);
                } else {
                    put(b, (char) ('a' + rnd.nextInt(26)));
                }
            }
            v.createSnapshot("s" + k);
            names.add("s" + k);
            contents.add(SnapshotModelTest.read(v.snapshotView("s" + k), 0, BLOCKS * BS));
        }
        for (int i = 0; i < names.size(); i++) {
            for (int j = i + 1; j < names.size(); j++) {
                Differential.State[] st = states(names.get(i), names.get(j));
                for (int b = 0; b < BLOCKS; b++) {
                    boolean differs = !java.util.Arrays.equals(contents.get(i), b * BS, (b + 1) * BS, contents.get(j), b * BS, (b + 1) * BS);
                    if (differs) {
                        assertTrue(st[b] != Differential.State.UNCHANGED, "block " + b + " differs between " + names.get(i) + " and " + names.get(j));
                    }
                }
            }
        }
    }

    @Test
    void b33_productionWritesDuringAScanDoNotChangeTheResult() throws IOException {
        put(1, 'a');
        put(2, 'a');
        v.createSnapshot("l");
        put(1, 'b');
        v.createSnapshot("m");          // m is the tail: production writes keep copying into it
        List<Integer> before = changed("l", "m");
        List<Integer> during = new ArrayList<>();
        v.snapshots().differential("l", "m").scan(0, BLOCKS, (first, count, st) -> {
            try {
                put(2, 'z');             // changes block 2 after m: must not appear in (l, m)
            } catch (IOException e) {
                throw new RuntimeException(e);
            }
            for (long b = first; b < first + count; b++) {
                if (st == Differential.State.CHANGED) {
                    during.add((int) b);
                }
            }
            return true;
        });
        assertEquals(before, during);
        assertEquals(List.of(1), during);
    }
}
