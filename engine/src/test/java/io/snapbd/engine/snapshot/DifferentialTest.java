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
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The differential (docs/snapshots.md): for every pair L older than M, applying diff(L, M) to a copy of L gives M on
 * every in-use block of M, no block that differs is reported unchanged, and deleting snapshots (any
 * position) never loses a change.
 */
class DifferentialTest {

    static final int BS = 512;

    @TempDir
    Path dir;

    @Test
    void propertyOverRandomWorkloads() throws IOException {
        for (long seed = 1; seed <= 6; seed++) {
            run(seed);
        }
    }

    private void run(long seed) throws IOException {
        int blocks = 300;                           // not a multiple of 64: exercises the last word
        Path d = dir.resolve("v" + seed);
        Volume.create(d, "v", (long) blocks * BS, BS, (long) blocks * 16 * BS, false, new JavaFileSpace());
        Volume v = Volume.open(d, new JavaFileSpace());
        Random rnd = new Random(seed);
        byte[] prod = new byte[blocks * BS];
        Map<String, byte[]> content = new HashMap<>();
        List<String> live = new ArrayList<>();
        int n = 0;
        try (BlockDevice.Session s = v.openSession()) {
            for (int step = 0; step < 600; step++) {
                int op = rnd.nextInt(100);
                if (op < 60) {
                    int b = rnd.nextInt(blocks);
                    int len = BS * (1 + rnd.nextInt(3));
                    len = Math.min(len, (blocks - b) * BS);
                    byte[] data = new byte[len];
                    rnd.nextBytes(data);
                    SnapshotModelTest.write(v, s, (long) b * BS, data);
                    System.arraycopy(data, 0, prod, b * BS, len);
                } else if (op < 75) {
                    int b = rnd.nextInt(blocks);
                    int cnt = 1 + rnd.nextInt(Math.min(5, blocks - b));
                    if (rnd.nextBoolean()) {
                        v.trim(s, (long) b * BS, (long) cnt * BS, false);
                    } else {
                        v.writeZeroes(s, (long) b * BS, (long) cnt * BS, rnd.nextBoolean(), false, false);
                    }
                    Arrays.fill(prod, b * BS, (b + cnt) * BS, (byte) 0);
                } else if (op < 85 && live.size() < 8) {
                    String name = "s" + n++;
                    v.createSnapshot(name);
                    live.add(name);
                    content.put(name, prod.clone());
                } else if (op < 90 && live.size() > 2) {
                    String victim = live.remove(rnd.nextInt(live.size()));
                    v.deleteSnapshot(victim);
                    content.remove(victim);
                }
            }
        }
        for (int i = 0; i < live.size(); i++) {
            for (int j = i + 1; j < live.size(); j++) {
                check(v, live.get(i), live.get(j), content, blocks, seed);
            }
        }
        String a = live.get(0);
        String b = live.get(live.size() - 1);
        assertThrows(IllegalArgumentException.class, () -> v.snapshots().differential(b, a), "younger first is an error");
        assertThrows(IllegalArgumentException.class, () -> v.snapshots().differential(a, "nope"));
        v.close();
    }

    private static void check(Volume v, String older, String younger, Map<String, byte[]> content, int blocks, long seed) throws IOException {
        byte[] l = content.get(older);
        byte[] m = content.get(younger);
        byte[] applied = l.clone();
        boolean[] reported = new boolean[blocks];
        BlockDevice ym = v.snapshotView(younger);
        byte[] ymData = SnapshotModelTest.read(ym, 0, blocks * BS);
        assertArrayEquals(m, ymData, "snapshot " + younger + " content (seed " + seed + ")");
        v.snapshots().differential(older, younger).scan(0, blocks, (first, count, state) -> {
            for (long b = first; b < first + count; b++) {
                int o = (int) b * BS;
                if (state == Differential.State.CHANGED) {
                    System.arraycopy(ymData, o, applied, o, BS);
                    reported[(int) b] = true;
                } else if (state == Differential.State.UNUSED) {
                    Arrays.fill(applied, o, o + BS, (byte) 0);
                    reported[(int) b] = true;
                }
            }
            return true;
        });
        assertArrayEquals(m, applied, "diff(" + older + ", " + younger + ") applied to " + older + " (seed " + seed + ")");
        for (int b = 0; b < blocks; b++) {
            if (!Arrays.equals(l, b * BS, (b + 1) * BS, m, b * BS, (b + 1) * BS)) {
                assertTrue(reported[b], "block " + b + " differs but was not reported (seed " + seed + ")");
            }
        }
    }

    @Test
    void reportsRunsInAscendingOrderCoveringTheRange() throws IOException {
        Path d = dir.resolve("w");
        Volume.create(d, "w", 200L * BS, BS, 200L * BS, false, new JavaFileSpace());
        Volume v = Volume.open(d, new JavaFileSpace());
        try (BlockDevice.Session s = v.openSession()) {
            SnapshotModelTest.write(v, s, 0, new byte[]{1});
            SnapshotModelTest.write(v, s, 70L * BS, new byte[]{2});
            v.createSnapshot("a");
            SnapshotModelTest.write(v, s, 70L * BS, new byte[]{3});
            v.createSnapshot("b");
        }
        List<long[]> runs = new ArrayList<>();
        v.snapshots().differential("a", "b").scan(0, 200, (first, count, state) -> {
            runs.add(new long[]{first, count, state.ordinal()});
            return true;
        });
        long pos = 0;
        for (long[] r : runs) {
            assertEquals(pos, r[0]);
            pos += r[1];
        }
        assertEquals(200, pos);
        assertTrue(runs.stream().anyMatch(r -> r[0] == 70 && r[1] == 1 && r[2] == Differential.State.CHANGED.ordinal()));
        assertTrue(runs.stream().anyMatch(r -> r[0] == 0 && r[2] == Differential.State.UNCHANGED.ordinal()));
        v.close();
    }
}
