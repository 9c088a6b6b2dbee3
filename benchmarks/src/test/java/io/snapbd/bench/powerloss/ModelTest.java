package io.snapbd.bench.powerloss;

import io.snapbd.bench.powerloss.Workload.Kind;
import io.snapbd.bench.powerloss.Workload.Op;
import org.junit.jupiter.api.Test;

import java.util.Arrays;
import java.util.HashSet;
import java.util.Set;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The power-loss checker's model of legitimate block values, and the workload's determinism. */
class ModelTest {

    private static Op write(long i, int block, int count, boolean fua) {
        return new Op(i, Kind.WRITE, block, count, fua, null);
    }

    private static Op op(long i, Kind k, String snap) {
        return new Op(i, k, 0, 0, false, snap);
    }

    private static Set<Long> set(long[] a) {
        Set<Long> s = new HashSet<>();
        for (long x : a) {
            s.add(x);
        }
        return s;
    }

    @Test
    void unflushedWritesMayBeLostAndFlushOrFuaMakesThemTheOnlyValue() {
        Model m = new Model(8);
        m.acknowledged(write(1, 0, 2, false));          // value 2 on blocks 0-1, not durable
        assertEquals(Set.of(0L, 2L), set(m.may[0]));
        m.acknowledged(op(2, Kind.FLUSH, null));
        assertEquals(Set.of(2L), set(m.may[0]));
        m.acknowledged(write(3, 1, 1, false));          // value 4 on block 1
        assertEquals(Set.of(2L, 4L), set(m.may[1]));
        m.acknowledged(write(4, 1, 1, true));           // FUA: value 5 is durable
        assertEquals(Set.of(5L), set(m.may[1]));
        m.acknowledged(new Op(5, Kind.TRIM, 1, 2, false, null));
        assertEquals(Set.of(5L, 0L), set(m.may[1]));
        assertEquals(Set.of(0L), set(m.may[2]));         // never written: zeros only
        assertEquals(Set.of(0L), set(m.may[7]));
    }

    @Test
    void snapshotsHoldTheLatestValuesAndRestoreMakesThemProductions() {
        Model m = new Model(4);
        m.acknowledged(write(1, 0, 1, false));
        m.acknowledged(op(2, Kind.SNAP_CREATE, "a"));    // create flushes production first
        assertArrayEquals(new long[]{2, 0, 0, 0}, m.snapshots.get("a"));
        assertEquals(Set.of(2L), set(m.may[0]));
        m.acknowledged(write(3, 0, 2, false));
        m.acknowledged(op(4, Kind.RESTORE, "a"));
        assertArrayEquals(new long[]{2, 0, 0, 0}, m.latest);
        assertEquals(Set.of(2L), set(m.may[0]));
        assertEquals(Set.of(0L), set(m.may[1]));
        m.acknowledged(op(5, Kind.SNAP_DELETE, "a"));
        assertFalse(m.snapshots.containsKey("a"));
    }

    @Test
    void theOperationInFlightMayHaveHappened() {
        Model m = new Model(4);
        m.acknowledged(write(1, 0, 1, true));
        m.acknowledged(op(2, Kind.SNAP_CREATE, "a"));
        m.acknowledged(write(3, 0, 1, true));
        m.inFlight(op(4, Kind.RESTORE, "a"));             // production is its old content or a's, per block
        assertEquals(Set.of(4L, 2L), set(m.may[0]));
        Model n = new Model(4);
        n.inFlight(op(0, Kind.SNAP_CREATE, "b"));
        assertEquals("b", n.maybeCreated);
        assertNull(n.maybeDeleted);
        n.inFlight(write(5, 3, 1, false));
        assertEquals(Set.of(0L, 6L), set(n.may[3]));
    }

    @Test
    void theWorkloadIsAFunctionOfTheSeedAndNamesOnlyLiveSnapshots() {
        Workload a = new Workload(42, 4096);
        Workload b = new Workload(42, 4096);
        Set<Kind> seen = new HashSet<>();
        for (int i = 0; i < 5000; i++) {
            Op x = a.next();
            Op y = b.next();
            assertEquals(x, y);
            seen.add(x.kind());
            if (x.kind() == Kind.SNAP_DELETE || x.kind() == Kind.RESTORE) {
                assertTrue(a.live().contains(x.snapshot()), x.describe());
            }
            if (x.kind() == Kind.WRITE) {
                assertTrue(x.block() + x.count() <= 4096);
            }
            a.acknowledged(x);
            b.acknowledged(y);
            assertTrue(a.live().size() <= Workload.MAX_SNAPSHOTS);
        }
        assertEquals(Set.of(Kind.values()), seen);
    }

    @Test
    void blockContentsNameTheirWriteAndDiffer() {
        byte[] x = new byte[4096];
        byte[] y = new byte[4096];
        Workload.fill(x, 0, 4096, 7, 5, 1);
        Workload.fill(y, 0, 4096, 7, 5, 2);
        assertEquals(5, Workload.claimedValue(x, 0));
        assertFalse(Arrays.equals(x, y));
        Workload.fill(y, 0, 4096, 7, 0, 2);
        assertArrayEquals(new byte[4096], y);
    }
}
