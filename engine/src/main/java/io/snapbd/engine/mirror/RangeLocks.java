package io.snapbd.engine.mirror;

import java.util.concurrent.locks.ReentrantLock;

/**
 * The range locks of a {@link MirrorSet}: one lock per {@code 2^STRIPE_SHIFT}-byte stripe of the volume (modulo
 * {@link #STRIPES}), so overlapping changes reach every leg in the same order. A change locks its stripes in
 * ascending index order and unlocks them in descending order; its stripe span lives in its {@link MirrorOp}, so
 * locking allocates nothing.
 */
final class RangeLocks {
    /** Bytes of the volume per range lock region. */
    static final int STRIPE_SHIFT = 20;
    static final int STRIPES = 256;

    private final ReentrantLock[] stripes = new ReentrantLock[STRIPES];

    RangeLocks() {
        for (int i = 0; i < STRIPES; i++) {
            stripes[i] = new ReentrantLock();
        }
    }

    /** Locks the stripes of [offset, offset+length) in ascending index order (all of them for a long range). */
    void lock(MirrorOp op, long offset, long length) {
        long first = offset >>> STRIPE_SHIFT;
        long last = (offset + Math.max(1, length) - 1) >>> STRIPE_SHIFT;
        if (last - first + 1 >= STRIPES) {
            op.stripeLo = 0;
            op.stripeHi = STRIPES - 1;
        } else {
            op.stripeLo = (int) (first % STRIPES);
            op.stripeHi = (int) (last % STRIPES);
        }
        if (op.stripeLo <= op.stripeHi) {
            for (int i = op.stripeLo; i <= op.stripeHi; i++) {
                stripes[i].lock();
            }
        } else {            // wraps: 0 … hi, then lo … end
            for (int i = 0; i <= op.stripeHi; i++) {
                stripes[i].lock();
            }
            for (int i = op.stripeLo; i < STRIPES; i++) {
                stripes[i].lock();
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
                stripes[i].unlock();
            }
        } else {
            for (int i = STRIPES - 1; i >= op.stripeLo; i--) {
                stripes[i].unlock();
            }
            for (int i = op.stripeHi; i >= 0; i--) {
                stripes[i].unlock();
            }
        }
    }
}
