package io.snapbd.engine.volume;

import io.snapbd.engine.bitmap.PagedIntArray;
import io.snapbd.engine.io.MappedData;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.concurrent.locks.StampedLock;

/**
 * New data of blocks whose before-images are not durable yet (DESIGN.md rule 5). Instead of making the
 * writer wait for the force of the save volume, its blocks are staged here and the write is answered at
 * once; a committer forces the before-images of everything staged in one go, then copies the staged blocks
 * into the production mapping. Until then every reader of production (any connection) is served from the
 * staged copy, and a writer of a staged block waits for it to be applied, so order is kept.
 *
 * <p>Slots live in one preallocated direct buffer; block → slot is a paged int array, so staging allocates
 * nothing. A slot is released under its stripe's write lock; readers copy under an optimistic read.
 */
final class Overlay {

    private static final int STRIPES = 256;

    private final int blockSize;
    private final int blockShift;
    private volatile ByteBuffer arena;      // allocated on first use: volumes without snapshots never pay for it
    private final int slots;
    private final PagedIntArray slotOf;
    private final int[] freeSlots;
    private int freeCount;                  // guarded by this
    private final long[] stagedBlocks;      // in staging order; guarded by this
    private final int[] appliedSlots;       // committer's scratch
    private int stagedCount;                // guarded by this
    private volatile int staged;            // = stagedCount, readable without the lock
    private final StampedLock[] stripes = new StampedLock[STRIPES];

    Overlay(long blocks, int blockSize, long capacityBytes) {
        this.blockSize = blockSize;
        this.blockShift = Integer.numberOfTrailingZeros(blockSize);
        this.slots = (int) Math.max(16, capacityBytes / blockSize);
        this.slotOf = new PagedIntArray(blocks);
        this.freeSlots = new int[slots];
        for (int i = 0; i < slots; i++) {
            freeSlots[i] = slots - 1 - i;
        }
        this.freeCount = slots;
        this.stagedBlocks = new long[slots];
        this.appliedSlots = new int[slots];
        for (int i = 0; i < STRIPES; i++) {
            stripes[i] = new StampedLock();
        }
    }

    /** Blocks staged and not yet applied; 0 means readers and writers can ignore the overlay. */
    int staged() {
        return staged;
    }

    boolean isStaged(long block) {
        return staged > 0 && slotOf.get(block) >= 0;
    }

    /** True if any block of [first, last] is staged. */
    boolean anyStaged(long first, long last) {
        if (staged == 0) {
            return false;
        }
        for (long b = first; b <= last; b++) {
            if (slotOf.get(b) >= 0) {
                return true;
            }
        }
        return false;
    }

    /**
     * Reserves slots for blocks [first, last] (none of them staged), each filled with the block's current
     * production content; false if there is no room (the caller then forces and writes directly).
     */
    synchronized boolean reserve(long first, long last, MappedData.Cursor production, int[] out) throws IOException {
        if (arena == null) {
            arena = ByteBuffer.allocateDirect(slots * blockSize);
        }
        int n = (int) (last - first + 1);
        if (n > freeCount) {
            return false;
        }
        for (int i = 0; i < n; i++) {
            int slot = freeSlots[--freeCount];
            out[i] = slot;
            copy(production, (first + i) << blockShift, slot);
        }
        return true;
    }

    private void copy(MappedData.Cursor production, long offset, int slot) throws IOException {
        long done = 0;
        while (done < blockSize) {
            ByteBuffer from = production.view(offset + done, blockSize - done);
            int n = from.remaining();
            ByteBuffer to = arena.duplicate();
            to.limit(slot * blockSize + (int) done + n).position(slot * blockSize + (int) done);
            to.put(from);
            done += n;
        }
    }

    /** The arena region of {@code slot} from byte {@code from} to {@code to} of the block, for filling. */
    ByteBuffer slotView(int slot, int from, int to) {
        ByteBuffer v = arena.duplicate();
        v.limit(slot * blockSize + to).position(slot * blockSize + from);
        return v;
    }

    /** Publishes filled slots: from now on production reads of these blocks see the staged data. */
    synchronized void publish(long first, long last, int[] slotsOfRange) {
        for (long b = first; b <= last; b++) {
            slotOf.set(b, slotsOfRange[(int) (b - first)]);
            stagedBlocks[stagedCount++] = b;
        }
        staged = stagedCount;
        notifyAll();
    }

    /** Gives back slots reserved but not published (the payload never came). */
    synchronized void release(int count, int[] slotsOfRange) {
        for (int i = 0; i < count; i++) {
            freeSlots[freeCount++] = slotsOfRange[i];
        }
    }

    /**
     * Applies every block staged before this call to the production mapping and frees its slot. The caller
     * has made the corresponding before-images durable first. Returns the number of blocks applied.
     */
    int applyStaged(MappedData.Cursor production, int upTo) throws IOException {
        int applied = 0;
        for (int i = 0; i < upTo; i++) {
            long b;
            synchronized (this) {
                b = stagedBlocks[i];
            }
            int slot = slotOf.get(b);
            if (slot < 0) {
                continue;           // applied by an earlier, interrupted pass
            }
            long off = b << blockShift;
            long done = 0;
            while (done < blockSize) {
                ByteBuffer to = production.view(off + done, blockSize - done);
                int n = to.remaining();
                to.put(slotView(slot, (int) done, (int) done + n));
                done += n;
            }
            StampedLock lock = stripes[(int) (b & (STRIPES - 1))];
            long stamp = lock.writeLock();
            try {
                slotOf.set(b, -1);
            } finally {
                lock.unlockWrite(stamp);
            }
            appliedSlots[applied++] = slot;
        }
        // Slots come back only now, together with the queue entries, so the queue never outgrows the slots.
        synchronized (this) {
            for (int i = 0; i < applied; i++) {
                freeSlots[freeCount++] = appliedSlots[i];
            }
            System.arraycopy(stagedBlocks, upTo, stagedBlocks, 0, stagedCount - upTo);
            stagedCount -= upTo;
            staged = stagedCount;
            notifyAll();
        }
        return applied;
    }

    synchronized int stagedSnapshot() {
        return stagedCount;
    }

    /** Waits until no block of [first, last] is staged. */
    synchronized void awaitApplied(long first, long last) throws IOException {
        while (anyStaged(first, last)) {
            try {
                wait();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new java.io.InterruptedIOException("interrupted while waiting for staged writes");
            }
        }
    }

    /** Waits until nothing is staged. */
    synchronized void awaitEmpty() throws IOException {
        while (stagedCount > 0) {
            try {
                wait();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new java.io.InterruptedIOException("interrupted while waiting for staged writes");
            }
        }
    }

    /** Waits until something is staged or the timeout passes. */
    synchronized void awaitWork(long millis) throws InterruptedException {
        if (stagedCount == 0) {
            wait(millis);
        }
    }

    /**
     * Copies bytes [offset, offset+n) of block b into {@code dst}: the staged copy if b is staged, else
     * production (through {@code production}). Consistent against concurrent apply.
     */
    void readBlock(long b, long offset, int n, ByteBuffer dst, MappedData.Cursor production) throws IOException {
        StampedLock lock = stripes[(int) (b & (STRIPES - 1))];
        int at = dst.position();
        long stamp = lock.tryOptimisticRead();
        if (stamp != 0) {
            copyOut(b, offset, n, dst, production);
            if (lock.validate(stamp)) {
                return;
            }
        }
        stamp = lock.readLock();
        try {
            dst.position(at);
            copyOut(b, offset, n, dst, production);
        } finally {
            lock.unlockRead(stamp);
        }
    }

    private void copyOut(long b, long offset, int n, ByteBuffer dst, MappedData.Cursor production) throws IOException {
        int slot = slotOf.get(b);
        int inBlock = (int) (offset & (blockSize - 1));
        if (slot >= 0) {
            dst.put(slotView(slot, inBlock, inBlock + n));
            return;
        }
        int done = 0;
        while (done < n) {
            ByteBuffer v = production.view(offset + done, n - done);
            done += v.remaining();
            dst.put(v);
        }
    }
}
