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
        assertArrayEquals(new long[][]{{2}, {0}, {0}, {0}}, m.snapshots.get("a"));
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
        assertTrue(n.maybeCreated.containsKey("b"));
        assertTrue(n.maybeDeleted.isEmpty());
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
        assertEquals(java.util.EnumSet.complementOf(java.util.EnumSet.of(Kind.CLONE, Kind.MIRROR_ADD, Kind.MIRROR_REMOVE)), seen);   // no clone, no mirror feature
    }

    @Test
    void aFlushOnAnyConnectionMakesWritesLoggedBeforeItWasSentDurable() {
        Model m = new Model(4);
        // Two connections: write A (op 1) sent at s=0, logged as record 1; write B (op 2, same block) sent at
        // s=0 too, so in flight alongside A, logged as record 2.
        m.acknowledged(write(1, 0, 1, false), 0, 1);
        m.acknowledged(write(2, 0, 1, false), 0, 2);
        assertEquals(Set.of(0L, 2L, 3L), set(m.may[0]));
        // A FLUSH on the other connection sent after record 1 only: A is durable (zeros are ruled out), B, which
        // may have landed before or after A, is not yet.
        m.acknowledged(op(3, Kind.FLUSH, null), 1, 3);
        assertEquals(Set.of(2L, 3L), set(m.may[0]));
        // A FLUSH sent after both were logged: both durable, and since they overlapped either may be last.
        m.acknowledged(op(4, Kind.FLUSH, null), 3, 4);
        assertEquals(Set.of(2L, 3L), set(m.may[0]));
        // A write sent after both were logged, then made durable by FUA: it is the only value.
        m.acknowledged(write(5, 0, 1, true), 4, 5);
        assertEquals(Set.of(6L), set(m.may[0]));
        // A write logged after a FLUSH was sent is not covered by it.
        m.acknowledged(write(6, 1, 1, false), 5, 7);
        m.acknowledged(op(7, Kind.FLUSH, null), 5, 6);
        assertEquals(Set.of(0L, 7L), set(m.may[1]));
    }

    @Test
    void aSnapshotOfWritesInFlightTogetherHoldsEitherAndAFuaWriteOrderedAfterBothRulesThemOut() {
        Model m = new Model(2);
        m.acknowledged(write(1, 0, 1, false), 0, 1);
        m.acknowledged(write(2, 0, 1, false), 0, 2);
        m.acknowledged(op(3, Kind.SNAP_CREATE, "a"), 2, 3);
        assertEquals(Set.of(2L, 3L), set(m.snapshots.get("a")[0]));
        m.acknowledged(write(4, 0, 1, true), 3, 4);
        assertEquals(Set.of(5L), set(m.may[0]));
        Model clone = new Model(2, m.snapshots.get("a"));
        assertEquals(Set.of(2L, 3L), set(clone.may[0]));
        clone.acknowledged(write(9, 0, 1, false), 0, 1);
        assertEquals(Set.of(2L, 3L, 10L), set(clone.may[0]));
        clone.acknowledged(op(10, Kind.FLUSH, null), 1, 2);
        assertEquals(Set.of(10L), set(clone.may[0]));
    }

    @Test
    void featuresMixAcrossSixteenSeedsAndParse() {
        Set<Set<Workload.Feature>> seen = new HashSet<>();
        for (long seed = 5000; seed < 5016; seed++) {
            seen.add(Workload.mixed(seed));
        }
        assertEquals(16, seen.size());
        assertEquals(Set.of(Workload.Feature.CLONE, Workload.Feature.FULL), Workload.parse("clone, full", 1));
        assertEquals("clone,full", Workload.format(Workload.parse("full,clone", 1)));
        assertTrue(Workload.parse("none", 1).isEmpty());
        assertEquals(Workload.mixed(7), Workload.parse("mix", 7));
    }

    @Test
    void withClonesDataOperationsGoToTheNewestCloneAndCloneOnlyLiveSnapshots() {
        Workload w = new Workload(3, 4096, Set.of(Workload.Feature.CLONE));
        int toClones = 0;
        int clonesMade = 0;
        for (int i = 0; i < 5000; i++) {
            Op x = w.next();
            if (x.kind() == Kind.CLONE) {
                assertTrue(w.live().contains(x.snapshot()), x.describe());
                clonesMade++;
            } else if (x.target() != null) {
                assertTrue(x.data(), x.describe());
                assertEquals(w.clones().get(w.clones().size() - 1), x.target());
                toClones++;
            }
            w.acknowledged(x);
        }
        assertEquals(Workload.MAX_CLONES, clonesMade);
        assertTrue(toClones > 1000, "data operations on clones: " + toClones);
        // Without the feature, no clone and no target.
        Workload plain = new Workload(3, 4096);
        for (int i = 0; i < 2000; i++) {
            Op x = plain.next();
            assertTrue(x.kind() != Kind.CLONE && x.target() == null, x.describe());
            plain.acknowledged(x);
        }
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
