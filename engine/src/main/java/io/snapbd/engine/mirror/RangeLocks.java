package io.snapbd.engine.mirror;

import java.util.Arrays;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.ReentrantLock;

/**
 * The range locks of a {@link MirrorSet}: a change holds the {@link #GRAIN}-byte blocks its range touches, so
 * overlapping changes reach every leg in the same order, while changes of disjoint blocks, even in the same MiB,
 * never wait for each other (a change used to hold its whole 1 MiB stripe while it wrote the other legs, and a slow
 * leg write held back every change near it).
 *
 * <p>The book of held ranges is split into {@link #STRIPES} stripes of {@code 2^STRIPE_SHIFT} bytes of the volume
 * (modulo the count); each lists, in arrival order, the changes that touch it. A change joins the list of each of its
 * stripes in ascending index order and, in each, waits until no change ahead of it in that list overlaps its blocks;
 * so of two overlapping changes the later one waits for the earlier everywhere (they share the stripe of a common
 * block), and waits only point to stripes further on or to earlier arrivals: no cycle, no deadlock, no starvation of
 * a large change by a stream of small ones. A stripe's own lock guards its list only for the few instructions of a
 * join or a leave, never across I/O. Allocates nothing per change once each list has grown to its largest
 * concurrency; the change's stripe span and blocks live in its {@link MirrorOp}.
 */
final class RangeLocks {
    /** Bytes of the volume per stripe of the book (aliased modulo {@link #STRIPES}; aliases never wait on each other). */
    static final int STRIPE_SHIFT = 20;
    static final int STRIPES = 256;
    /**
     * Changes wait for each other only when they touch a common page of this size. A change writes and copies only
     * bytes of its own range, so even byte-disjoint changes could pass each other; whole pages keep the rule simple.
     */
    static final int GRAIN = 4096;

    private final Stripe[] stripes = new Stripe[STRIPES];

    RangeLocks() {
        for (int i = 0; i < STRIPES; i++) {
            stripes[i] = new Stripe();
        }
    }

    /**
     * Takes the blocks of [offset, offset+length): returns once every change that arrived earlier and touches one of
     * them has unlocked.
     */
    void lock(MirrorOp op, long offset, long length) {
        long end = offset + Math.max(1, length);
        op.lockFrom = offset & -GRAIN;
        op.lockTo = (end + GRAIN - 1) & -GRAIN;
        long first = offset >>> STRIPE_SHIFT;
        long last = (end - 1) >>> STRIPE_SHIFT;
        if (last - first + 1 >= STRIPES) {
            op.stripeLo = 0;
            op.stripeHi = STRIPES - 1;
        } else {
            op.stripeLo = (int) (first % STRIPES);
            op.stripeHi = (int) (last % STRIPES);
        }
        if (op.stripeLo <= op.stripeHi) {
            for (int i = op.stripeLo; i <= op.stripeHi; i++) {
                stripes[i].enter(op);
            }
        } else {            // wraps: 0 … hi, then lo … end (ascending all the same)
            for (int i = 0; i <= op.stripeHi; i++) {
                stripes[i].enter(op);
            }
            for (int i = op.stripeLo; i < STRIPES; i++) {
                stripes[i].enter(op);
            }
        }
        op.locked = true;
    }

    void unlock(MirrorOp op) {
        if (!op.locked) {
            return;
        }
        op.locked = false;
        if (op.stripeLo <= op.stripeHi) {
            for (int i = op.stripeHi; i >= op.stripeLo; i--) {
                stripes[i].leave(op);
            }
        } else {
            for (int i = STRIPES - 1; i >= op.stripeLo; i--) {
                stripes[i].leave(op);
            }
            for (int i = op.stripeHi; i >= 0; i--) {
                stripes[i].leave(op);
            }
        }
    }

    /** One stripe's list of the changes that touch it, oldest first, under its own short lock. */
    private static final class Stripe {
        private final ReentrantLock guard = new ReentrantLock();
        private final Condition left = guard.newCondition();
        private MirrorOp[] ops = new MirrorOp[4];
        private int n;
        private int waiting;

        /** Joins the list and waits until no earlier change in it overlaps {@code op}'s blocks. */
        void enter(MirrorOp op) {
            guard.lock();
            try {
                if (n == ops.length) {
                    ops = Arrays.copyOf(ops, 2 * n);     // grows to the stripe's largest concurrency, then reused
                }
                ops[n++] = op;
                while (overlapsEarlier(op)) {
                    waiting++;
                    try {
                        left.awaitUninterruptibly();    // as ReentrantLock.lock(): a change is not cut short halfway
                    } finally {
                        waiting--;
                    }
                }
            } finally {
                guard.unlock();
            }
        }

        private boolean overlapsEarlier(MirrorOp op) {
            for (int i = 0; i < n; i++) {
                MirrorOp o = ops[i];
                if (o == op) {
                    return false;
                }
                if (o.lockFrom < op.lockTo && op.lockFrom < o.lockTo) {
                    return true;
                }
            }
            throw new IllegalStateException("a change waits in a stripe it is not listed in");
        }

        void leave(MirrorOp op) {
            guard.lock();
            try {
                int i = 0;
                while (ops[i] != op) {
                    i++;
                }
                System.arraycopy(ops, i + 1, ops, i, n - i - 1);     // keeps the arrival order
                ops[--n] = null;
                if (waiting > 0) {
                    left.signalAll();
                }
            } finally {
                guard.unlock();
            }
        }
    }
}
