package io.snapbd.engine.mirror;

import io.snapbd.engine.io.WriteGate;
import org.junit.jupiter.api.Test;

import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The range locks (docs/mirrors.md, "Range lock"): only changes that touch a common 4 KiB page wait for each other,
 * and those in arrival order; disjoint pages of one MiB and ranges that alias in the book never wait.
 */
class RangeLocksTest {

    private final WriteGate gate = new WriteGate(30_000);
    private final RangeLocks locks = new RangeLocks();

    private MirrorOp op() {
        return new MirrorOp(null, gate, 2);
    }

    /** Runs {@code lock} on a new thread and tells whether it parked (waits) or returned (took the range). */
    private static boolean parks(Thread t) throws InterruptedException {
        t.start();
        while (true) {
            Thread.State s = t.getState();
            if (s == Thread.State.TERMINATED) {
                return false;
            }
            if (s == Thread.State.WAITING) {
                return true;
            }
            Thread.onSpinWait();
        }
    }

    private Thread locker(MirrorOp op, long offset, long length, List<String> order, String name) {
        return new Thread(() -> {
            locks.lock(op, offset, length);
            if (order != null) {
                order.add(name);
            }
        });
    }

    @Test
    void aChangeToAnotherPageOfTheSameMiBDoesNotWait() throws Exception {
        MirrorOp a = op();
        locks.lock(a, 0, 4096);             // held, as by a change still writing the other legs
        MirrorOp b = op();
        assertFalse(parks(locker(b, 4096, 4096, null, "b")), "a change of the next page waited for the first");
        MirrorOp c = op();
        assertFalse(parks(locker(c, 8192 + 100, 512, null, "c")), "a sub-page change of another page waited");
        locks.unlock(b);
        locks.unlock(c);
        locks.unlock(a);
    }

    @Test
    void rangesThatAliasInTheBookDoNotWait() throws Exception {
        MirrorOp a = op();
        locks.lock(a, 0, 4096);
        MirrorOp b = op();
        long alias = (long) RangeLocks.STRIPES << RangeLocks.STRIPE_SHIFT;      // the same stripe of the book
        assertFalse(parks(locker(b, alias, 4096, null, "b")), "a change 256 MiB further waited");
        locks.unlock(b);
        locks.unlock(a);
    }

    @Test
    void overlappingChangesTakeTheRangeInArrivalOrder() throws Exception {
        List<String> order = new CopyOnWriteArrayList<>();
        MirrorOp a = op();
        locks.lock(a, 1000, 100);           // inside page 0
        MirrorOp b = op();
        Thread tb = locker(b, 0, 2 << 20, order, "b");      // 2 MiB over two stripes, page 0 among them
        assertTrue(parks(tb), "a change sharing page 0 took it while held");
        MirrorOp c = op();
        Thread tc = locker(c, 8192, 4096, order, "c");     // not A's page but B's, and B came first
        assertTrue(parks(tc), "a later change overtook an earlier overlapping one that was waiting");
        MirrorOp d = op();
        assertFalse(parks(locker(d, 3 << 20, 4096, order, "d")), "a change past B's range waited");
        locks.unlock(a);
        tb.join();
        assertEquals(List.of("d", "b"), order);
        locks.unlock(b);
        tc.join();
        assertEquals(List.of("d", "b", "c"), order);
        locks.unlock(c);
        locks.unlock(d);
    }

    @Test
    void aRangeOverTheWholeBookAndOneThatWrapsTakeEveryStripeInOrder() throws Exception {
        MirrorOp big = op();
        locks.lock(big, 4096, 512L << 20);      // over STRIPES stripes: lists itself in all of them
        MirrorOp wrap = op();
        long last = (long) (RangeLocks.STRIPES - 1) << RangeLocks.STRIPE_SHIFT;
        Thread t = locker(wrap, last + (1 << 20) - 4096, 8192, null, "wrap");   // stripes 255 and 0 (256 MiB)
        assertTrue(parks(t), "a wrapping range inside the big one took it while held");
        locks.unlock(big);
        t.join();
        locks.unlock(wrap);
        MirrorOp again = op();
        locks.lock(again, 0, 1L << 40);     // everything free again
        locks.unlock(again);
    }
}
