package io.snapbd.engine.snapshot;

import io.snapbd.engine.BlockDevice;
import io.snapbd.engine.io.JavaFileSpace;
import io.snapbd.engine.volume.Volume;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.BitSet;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * qemu's dirty-bitmap rule ({@link Differential#scanDirty}) against a model, over random writes, trims,
 * zero-writes (with and without NO_HOLE), snapshot creates, deletes at any position, restores and reopens.
 * For every pair L older than M: sound (a block whose content differs between L and M is dirty, so patching a
 * copy of L with only M's dirty blocks gives M), precise as far as the maps allow (a dirty block was touched
 * by some request after L and before M, and is in use in L or in M), and exactly EMC's changed blocks plus
 * the blocks in use in L and not in M.
 */
class DirtyBitmapTest {

    static final int BS = 512;

    @TempDir
    Path dir;

    @Test
    void soundAndPreciseOverRandomWorkloads() throws IOException {
        for (long seed = 1; seed <= 8; seed++) {
            run(seed);
        }
    }

    private void run(long seed) throws IOException {
        int blocks = 333;                           // not a multiple of 64: exercises the last word
        Path d = dir.resolve("v" + seed);
        Volume.create(d, "v", (long) blocks * BS, BS, (long) blocks * 16 * BS, false, new JavaFileSpace());
        Volume v = Volume.open(d, new JavaFileSpace());
        Random rnd = new Random(seed);
        byte[] prod = new byte[blocks * BS];
        Map<String, byte[]> content = new HashMap<>();
        Map<String, BitSet> touchedSince = new HashMap<>();         // blocks touched since the snapshot was taken
        Map<String, BitSet> touchedBetween = new HashMap<>();       // "L>M": touched after L and before M
        List<String> live = new ArrayList<>();
        int n = 0;
        BlockDevice.Session s = v.openSession();
        try {
            for (int step = 0; step < 700; step++) {
                int op = rnd.nextInt(100);
                int b = rnd.nextInt(blocks);
                int cnt = 1 + rnd.nextInt(Math.min(6, blocks - b));
                if (op < 45) {
                    byte[] data = new byte[cnt * BS - (rnd.nextBoolean() ? 0 : rnd.nextInt(BS))];
                    rnd.nextBytes(data);
                    if (rnd.nextInt(4) == 0) {
                        Arrays.fill(data, (byte) 0);        // zeros written as data: in use, content unchanged or not
                    }
                    SnapshotModelTest.write(v, s, (long) b * BS, data);
                    System.arraycopy(data, 0, prod, b * BS, data.length);
                    touch(touchedSince, b, (data.length + BS - 1) / BS);
                } else if (op < 70) {
                    switch (rnd.nextInt(3)) {
                        case 0 -> v.trim(s, (long) b * BS, (long) cnt * BS, false);
                        case 1 -> v.writeZeroes(s, (long) b * BS, (long) cnt * BS, false, false, false);
                        default -> v.writeZeroes(s, (long) b * BS, (long) cnt * BS, true, false, false);
                    }
                    Arrays.fill(prod, b * BS, (b + cnt) * BS, (byte) 0);
                    touch(touchedSince, b, cnt);
                } else if (op < 82 && live.size() < 7) {
                    String name = "s" + n++;
                    v.createSnapshot(name);
                    for (String l : live) {
                        touchedBetween.put(l + ">" + name, (BitSet) touchedSince.get(l).clone());
                    }
                    live.add(name);
                    content.put(name, prod.clone());
                    touchedSince.put(name, new BitSet());
                } else if (op < 88 && live.size() > 2) {
                    String victim = live.remove(rnd.nextInt(live.size()));
                    v.deleteSnapshot(victim);
                    content.remove(victim);
                    touchedSince.remove(victim);
                } else if (op < 91 && !live.isEmpty()) {
                    String from = live.get(rnd.nextInt(live.size()));
                    s.close();
                    v.restore(from);
                    s = v.openSession();
                    System.arraycopy(content.get(from), 0, prod, 0, prod.length);
                    touch(touchedSince, 0, blocks);         // a bound: restore may rewrite any block
                } else if (op < 93) {
                    s.close();
                    v.close();
                    v = Volume.open(d, new JavaFileSpace());
                    s = v.openSession();
                }
            }
        } finally {
            s.close();
        }
        assertTrue(live.size() >= 2, "the workload leaves pairs to compare (seed " + seed + ")");
        for (int i = 0; i < live.size(); i++) {
            for (int j = i + 1; j < live.size(); j++) {
                String l = live.get(i);
                String m = live.get(j);
                check(v, l, m, content, touchedBetween.get(l + ">" + m), blocks, seed);
            }
        }
        v.close();
    }

    private static void touch(Map<String, BitSet> touchedSince, int first, int count) {
        for (BitSet t : touchedSince.values()) {
            t.set(first, first + count);
        }
    }

    private static boolean[] used(Volume v, String snap, int blocks) throws IOException {
        boolean[] u = new boolean[blocks];
        v.snapshotView(snap).extents(0, (long) blocks * BS, (off, len, inUse) -> {
            for (long b = off / BS; b < (off + len) / BS; b++) {
                u[(int) b] = inUse;
            }
            return true;
        });
        return u;
    }

    private static void check(Volume v, String older, String younger, Map<String, byte[]> content, BitSet touched,
                              int blocks, long seed) throws IOException {
        String what = "dirty(" + older + ", " + younger + ") seed " + seed;
        byte[] l = content.get(older);
        byte[] m = content.get(younger);
        byte[] ymData = SnapshotModelTest.read(v.snapshotView(younger), 0, blocks * BS);
        assertArrayEquals(m, ymData, "snapshot " + younger + " content (seed " + seed + ")");
        assertArrayEquals(l, SnapshotModelTest.read(v.snapshotView(older), 0, blocks * BS), "snapshot " + older + " content");
        boolean[] usedL = used(v, older, blocks);
        boolean[] usedM = used(v, younger, blocks);

        Differential diff = v.snapshots().differential(older, younger);
        boolean[] dirty = new boolean[blocks];
        long[] pos = {0};
        Boolean[] last = {null};
        diff.scanDirty(0, blocks, (first, count, isDirty) -> {
            assertEquals(pos[0], first, "runs are contiguous and ascending: " + what);
            assertTrue(count > 0, what);
            assertTrue(last[0] == null || last[0] != isDirty, "runs are maximal: " + what);
            last[0] = isDirty;
            for (long b = first; b < first + count; b++) {
                dirty[(int) b] = isDirty;
            }
            pos[0] += count;
            return true;
        });
        assertEquals(blocks, pos[0], "runs cover every block: " + what);

        boolean[] changed = new boolean[blocks];
        diff.scan(0, blocks, (first, count, state) -> {
            for (long b = first; b < first + count; b++) {
                changed[(int) b] = state == Differential.State.CHANGED;
            }
            return true;
        });

        // Sound, the way an incremental backup uses it: a copy of L patched with M's dirty blocks only is M.
        byte[] applied = l.clone();
        for (int b = 0; b < blocks; b++) {
            if (dirty[b]) {
                System.arraycopy(ymData, b * BS, applied, b * BS, BS);
            }
        }
        for (int b = 0; b < blocks; b++) {
            boolean differs = !Arrays.equals(l, b * BS, (b + 1) * BS, m, b * BS, (b + 1) * BS);
            assertFalse(differs && !dirty[b], "block " + b + " differs but is clean: " + what);
            // Precise: only blocks some request touched between L and M, and never one unused in both.
            if (dirty[b]) {
                assertTrue(touched.get(b), "block " + b + " is dirty but nothing touched it between the snapshots: " + what);
                assertTrue(usedL[b] || usedM[b], "block " + b + " is dirty but reads as zeros in both: " + what);
            }
            // Exactly EMC's changed blocks plus those that left use.
            assertEquals(changed[b] || (usedL[b] && !usedM[b]), dirty[b], "block " + b + ": " + what);
        }
        assertArrayEquals(m, applied, "copy of " + older + " patched with the dirty blocks of " + younger + ": " + what);

        // Any sub-range gives the same answers, clipped.
        Random rnd = new Random(seed * 31 + older.hashCode() + younger.hashCode());
        for (int k = 0; k < 5; k++) {
            int first = rnd.nextInt(blocks);
            int end = first + 1 + rnd.nextInt(blocks - first);
            long[] p = {first};
            diff.scanDirty(first, end, (f, c, isDirty) -> {
                assertEquals(p[0], f, what);
                for (long b = f; b < f + c; b++) {
                    assertEquals(dirty[(int) b], isDirty, "block " + b + " in [" + first + ", " + end + "): " + what);
                }
                p[0] += c;
                return true;
            });
            assertEquals(end, p[0], what);
        }
    }

    /** The case the rule exists for: a block in use at L and trimmed (or punched) before M is dirty, not changed. */
    @Test
    void blocksThatLeftUseAreDirtyButNotChanged() throws IOException {
        Path d = dir.resolve("w");
        Volume.create(d, "w", 200L * BS, BS, 200L * BS, false, new JavaFileSpace());
        Volume v = Volume.open(d, new JavaFileSpace());
        try (BlockDevice.Session s = v.openSession()) {
            SnapshotModelTest.write(v, s, 0, new byte[100 * BS]);
            SnapshotModelTest.write(v, s, 10L * BS, SnapshotModelTest.block('a'));
            SnapshotModelTest.write(v, s, 70L * BS, SnapshotModelTest.block('b'));
            v.createSnapshot("older");
            v.trim(s, 10L * BS, BS, false);                             // in use at older: left use
            v.writeZeroes(s, 70L * BS, BS, false, false, false);        // punched: left use
            SnapshotModelTest.write(v, s, 150L * BS, SnapshotModelTest.block('c'));
            v.trim(s, 150L * BS, BS, false);                            // written and trimmed: zeros in both
            v.createSnapshot("younger");
        }
        Differential diff = v.snapshots().differential("older", "younger");
        List<long[]> runs = new ArrayList<>();
        diff.scanDirty(0, 200, (first, count, dirty) -> {
            runs.add(new long[]{first, count, dirty ? 1 : 0});
            return true;
        });
        assertEquals(List.of("0+10:0", "10+1:1", "11+59:0", "70+1:1", "71+129:0"),
                runs.stream().map(r -> r[0] + "+" + r[1] + ":" + r[2]).toList());
        List<String> emc = new ArrayList<>();
        diff.scan(0, 200, (first, count, state) -> {
            if (state == Differential.State.CHANGED) {
                emc.add(first + "+" + count);
            }
            return true;
        });
        assertEquals(List.of(), emc, "EMC: a block not in use in the younger snapshot is not changed");
        v.close();
    }
}
