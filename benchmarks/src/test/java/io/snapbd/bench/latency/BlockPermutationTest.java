package io.snapbd.bench.latency;

import org.junit.jupiter.api.Test;

import java.util.BitSet;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

class BlockPermutationTest {

    @Test
    void visitsEveryBlockOnceBeforeRepeating() {
        for (long n : new long[]{1, 2, 3, 5, 17, 1000, 4096, 4097, 100_003}) {
            BlockPermutation p = new BlockPermutation(n, 42);
            BitSet seen = new BitSet();
            for (long i = 0; i < n; i++) {
                long b = p.block(i);
                assertTrue(b >= 0 && b < n, "block " + b + " outside [0," + n + ")");
                assertTrue(!seen.get((int) b), "block " + b + " visited twice in the first " + n + " positions");
                seen.set((int) b);
            }
            assertEquals(n, seen.cardinality());
            assertEquals(p.block(0), p.block(n), "positions wrap around modulo n");
        }
    }

    @Test
    void connectionsTakingEveryNthPositionShareTheRangeWithoutOverlap() {
        long n = 10_000;
        int connections = 3;
        BlockPermutation p = new BlockPermutation(n, 7);
        BitSet seen = new BitSet();
        for (int c = 0; c < connections; c++) {
            for (long i = c; i < n; i += connections) {
                long b = p.block(i);
                assertTrue(!seen.get((int) b));
                seen.set((int) b);
            }
        }
        assertEquals(n, seen.cardinality());
    }

    @Test
    void orderIsScatteredAndDependsOnTheSeed() {
        long n = 1 << 18;
        BlockPermutation a = new BlockPermutation(n, 1);
        BlockPermutation b = new BlockPermutation(n, 2);
        int sequential = 0, same = 0;
        for (long i = 0; i < 10_000; i++) {
            if (a.block(i + 1) == a.block(i) + 1) {
                sequential++;
            }
            if (a.block(i) == b.block(i)) {
                same++;
            }
        }
        assertTrue(sequential < 100, "too many sequential neighbours: " + sequential);
        assertTrue(same < 100, "seeds give the same order: " + same);
        assertNotEquals(a.block(0), b.block(0));
    }
}
