package io.snapbd.bench.latency;

import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.LockSupport;
import java.util.function.BooleanSupplier;

/**
 * Free request slots of one connection: the connection's reader thread gives slots back as replies arrive
 * (one producer), the submitting thread takes them (one consumer). Ints in a ring, nothing allocated.
 */
final class SlotQueue {

    private final int[] ring;
    private final int mask;
    private final AtomicLong tail = new AtomicLong();   // written by the producer only
    private long head;                                  // consumer only
    private volatile Thread waiter;

    SlotQueue(int slots) {
        int capacity = Integer.highestOneBit(Math.max(1, slots - 1)) << 1;
        ring = new int[capacity];
        mask = capacity - 1;
        for (int i = 0; i < slots; i++) {
            ring[i] = i;
        }
        tail.set(slots);
    }

    /** Producer: a slot is free again. */
    void put(int slot) {
        long t = tail.get();
        ring[(int) (t & mask)] = slot;
        tail.lazySet(t + 1);
        Thread w = waiter;
        if (w != null) {
            LockSupport.unpark(w);
        }
    }

    /** Consumer: the next free slot, waiting for one; -1 if {@code stop} turned true while waiting. */
    int take(BooleanSupplier stop) {
        int spins = 0;
        while (head == tail.get()) {
            if (stop.getAsBoolean()) {
                return -1;
            }
            if (++spins < 64) {
                Thread.onSpinWait();
                continue;
            }
            waiter = Thread.currentThread();
            if (head == tail.get()) {
                LockSupport.parkNanos(this, 1_000_000L);
            }
            waiter = null;
        }
        return ring[(int) (head++ & mask)];
    }

    /** Consumer: slots currently free. */
    int free() {
        return (int) (tail.get() - head);
    }
}
