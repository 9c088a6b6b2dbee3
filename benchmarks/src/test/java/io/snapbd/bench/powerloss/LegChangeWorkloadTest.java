package io.snapbd.bench.powerloss;

import io.snapbd.bench.powerloss.PowerLossCommand.Rec;
import io.snapbd.bench.powerloss.PowerLossCommand.Replay;
import io.snapbd.bench.powerloss.Workload.Feature;
import io.snapbd.bench.powerloss.Workload.Kind;
import io.snapbd.bench.powerloss.Workload.LegKind;
import io.snapbd.bench.powerloss.Workload.Op;
import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.EnumSet;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The mirrored rounds' second leg (a file or an NBD export, by the seed) and the online leg changes: how the
 * workload sends them and how the checker replays a log in which one was in flight at the cut.
 */
class LegChangeWorkloadTest {

    private static final int BLOCKS = 4096;

    @Test
    void halfOfTheSeedsPickAnNbdLegAndBothKindsMeetEveryFeatureCombination() {
        int nbd = 0;
        Map<Set<Feature>, Set<LegKind>> seen = new HashMap<>();
        for (long seed = 5000; seed < 5032; seed++) {
            nbd += Workload.legKind(seed) == LegKind.NBD ? 1 : 0;
            seen.computeIfAbsent(Workload.mixed(seed), f -> EnumSet.noneOf(LegKind.class)).add(Workload.legKind(seed));
        }
        assertEquals(16, nbd);
        assertEquals(16, seen.size());
        seen.values().forEach(k -> assertEquals(EnumSet.allOf(LegKind.class), k));
        // power-loss-guest.sh starts the leg server by the same rule: (seed + seed / 16) odd.
        for (long seed = 0; seed < 1000; seed++) {
            assertEquals((seed + seed / 16) % 2 == 1, Workload.legKind(seed) == LegKind.NBD, "seed " + seed);
        }
    }

    @Test
    void legChangesAlternateAddAndRemoveOnlyInMirroredRoundsAndDataOperationsFollowEach() {
        int rounds = 0;
        for (long seed = 7000; seed < 7016; seed++) {
            Workload plain = new Workload(seed, BLOCKS, EnumSet.of(Feature.CLONE, Feature.CONCURRENT, Feature.FULL));
            for (int i = 0; i < 2000; i++) {
                Op op = plain.next();
                assertFalse(op.leg(), "seed " + seed + ": a leg change in a round without a mirror: " + op.describe());
                plain.acknowledged(op);
            }
            Workload w = new Workload(seed, BLOCKS, EnumSet.of(Feature.MIRROR));
            assertEquals(Workload.legChanges(seed), w.legChanges());
            List<Op> ops = new ArrayList<>();
            for (int i = 0; i < 2000; i++) {
                Op op = w.next();
                ops.add(op);
                w.acknowledged(op);
            }
            Kind expect = Kind.MIRROR_ADD;
            int changes = 0;
            for (int i = 0; i < ops.size(); i++) {
                Op op = ops.get(i);
                if (!op.leg()) {
                    continue;
                }
                assertTrue(w.legChanges(), "seed " + seed + ": leg change in a round without leg changes");
                assertEquals(expect, op.kind(), "seed " + seed + " op " + i);
                expect = expect == Kind.MIRROR_ADD ? Kind.MIRROR_REMOVE : Kind.MIRROR_ADD;
                changes++;
                for (int j = i + 1; j < Math.min(ops.size(), i + 1 + Workload.LEG_WINDOW); j++) {
                    assertTrue(ops.get(j).data(), "seed " + seed + ": " + ops.get(j).describe() + " within the leg change's window");
                }
            }
            if (w.legChanges()) {
                assertTrue(changes >= 4, "seed " + seed + ": only " + changes + " leg changes in 2000 operations");
                // The first add comes early: a round with an NBD leg acknowledges few operations before the cut.
                long first = ops.stream().filter(Op::leg).findFirst().orElseThrow().index();
                assertTrue(first <= 12, "seed " + seed + ": first mirror add at operation " + first);
                rounds++;
            }
        }
        assertEquals(12, rounds, "three mirrored rounds in four change legs");
    }

    /** A log of the mirrored workload {@code seed}: every operation below {@code end} logged except those in {@code missing}. */
    private static Map<Long, Rec> log(long seed, long end, Set<Long> missing) {
        Workload w = new Workload(seed, BLOCKS, EnumSet.of(Feature.MIRROR));
        Map<Long, Rec> recs = new HashMap<>();
        long p = 0;
        for (long i = 0; i < end; i++) {
            Op op = w.next();
            w.acknowledged(op);
            if (!missing.contains(i)) {
                p++;
                String text = op.describe() + (op.kind() == Kind.LUN_ENABLE || op.kind() == Kind.LUN_GET ? " counter=" + p : "");
                recs.put(i, new Rec("ACK", i, p - 1, p, text, "ACK " + i + " s=" + (p - 1) + " " + text));
            }
        }
        return recs;
    }

    private static long firstAdd(long seed) {
        Workload w = new Workload(seed, BLOCKS, EnumSet.of(Feature.MIRROR));
        for (long i = 0; ; i++) {
            Op op = w.next();
            w.acknowledged(op);
            if (op.kind() == Kind.MIRROR_ADD) {
                return i;
            }
        }
    }

    @Test
    void anAddNotYetAnsweredIsInFlightWhileTheWritesSentAfterItAreLogged() {
        long seed = 1;      // NBD leg, leg changes
        assertTrue(Workload.legChanges(seed));
        long add = firstAdd(seed);
        long last = add + 10;       // ten data operations logged after the add, which never was
        Replay r = PowerLossCommand.replay(new Workload(seed, BLOCKS, EnumSet.of(Feature.MIRROR)),
                log(seed, last + 1, Set.of(add)), last, false);
        assertNull(r.violation());
        assertNotNull(r.legInFlight());
        assertEquals(add, r.legInFlight().index());
        for (long i = add + 1; i <= last; i++) {
            assertTrue(r.ops().containsKey(i), "logged operation " + i + " after the add in flight");
        }
        Set<Long> flying = new HashSet<>();
        r.inFlight().forEach(o -> flying.add(o.index()));
        assertEquals(Set.of(add, last + 1), flying, "the add and the next data operation may have been in flight");
    }

    @Test
    void anAddSentLastLetsOneMoreDataOperationBeInFlight() {
        long seed = 1;
        long add = firstAdd(seed);
        Replay r = PowerLossCommand.replay(new Workload(seed, BLOCKS, EnumSet.of(Feature.MIRROR)),
                log(seed, add, Set.of()), add - 1, false);
        assertNull(r.violation());
        Set<Long> flying = new HashSet<>();
        r.inFlight().forEach(o -> flying.add(o.index()));
        assertEquals(Set.of(add, add + 1), flying);
    }

    @Test
    void anAdministrativeOperationLoggedWhileALegChangeWasNotIsAViolation() {
        long seed = 1;
        Workload w = new Workload(seed, BLOCKS, EnumSet.of(Feature.MIRROR));
        long add = firstAdd(seed);
        long admin = -1;
        for (long i = 0; admin < 0; i++) {
            Op op = w.next();
            w.acknowledged(op);
            if (i > add && !op.data()) {
                admin = i;
            }
        }
        Replay r = PowerLossCommand.replay(new Workload(seed, BLOCKS, EnumSet.of(Feature.MIRROR)),
                log(seed, admin + 1, Set.of(add)), admin, false);
        assertNotNull(r.violation());
        assertTrue(r.violation().contains("leg change"), r.violation());
    }
}
