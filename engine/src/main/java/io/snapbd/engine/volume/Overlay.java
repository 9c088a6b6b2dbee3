package io.snapbd.engine.volume;

import io.snapbd.engine.BlockRuns;
import io.snapbd.engine.bitmap.PagedIntArray;
import io.snapbd.engine.io.MappedData;

import java.io.IOException;
import java.io.InterruptedIOException;
import java.nio.ByteBuffer;
import java.util.concurrent.atomic.AtomicReferenceArray;
import java.util.concurrent.locks.StampedLock;
import java.util.function.BooleanSupplier;

/**
 * New data of blocks whose before-images are not durable yet (docs/snapshots.md, rule 5). Instead of making the
 * writer wait for the force of the save volume, its blocks are staged here and the write is answered at
 * once; a committer forces the before-images of everything staged in one go, then copies the staged blocks
 * into the production mapping. Until then every reader of production (any connection) is served from the
 * staged copy. A whole-block rewrite of a staged block is staged again: its new slot replaces the old one
 * (the block's before-image was claimed by the first write and production has not changed since), so it
 * never waits for the committer; a partial rewrite waits for the staged block to be applied, so order is kept.
 *
 * <p>Slots live in an arena of direct buffers of {@link #CHUNK_BYTES} each, allocated the first time one of
 * their slots is handed out (slots are handed out lowest first, so the arena grows only to the peak number of
 * blocks staged at once); block → slot is a paged int array, so staging allocates nothing. Each thread reaches
 * the arena through its own {@link View}, which reuses one duplicate per chunk. A slot is applied, replaced
 * or released under its stripe's write lock; readers copy under an optimistic read.
 *
 * <p>With an {@link OverlayFile} the arena and a slot index live in a file on a RAM file system instead of the
 * process's memory: a block staged and answered outlives a {@code kill -9}, and the next open writes it again.
 *
 * <p>The committer does not force after every write: it lets a batch build up for at most
 * {@code batchNanos} (or until a quarter of the slots are in use), unless somebody waits for staged blocks
 * (FLUSH, FUA, a rewrite of a staged block, a writer that found no room): then it goes at once. Fewer, larger
 * forces cost the machine less CPU and disk-cache flushes per write; the writers do not wait for them.
 */
final class Overlay {

    private static final int STRIPES = 256;
    static final int CHUNK_BYTES = 1 << 20;

    private final int blockSize;
    private final int blockShift;
    private final int slots;
    private final int slotsPerChunkShift;
    private final AtomicReferenceArray<ByteBuffer> chunks;   // allocated on first use of one of their slots
    private final PagedIntArray slotOf;
    private final int[] freeSlots;
    private int freeCount;                  // guarded by this
    private final long[] stagedBlocks;      // in staging order; guarded by this (entries below stagedCount are stable until applied)
    private final int[] appliedSlots;       // committer's scratch
    private int stagedCount;                // guarded by this
    private volatile int staged;            // = stagedCount, readable without the lock
    private int waiters;                    // threads waiting for staged blocks to be applied; guarded by this
    private boolean starved;                // a writer found no room since the last apply; guarded by this
    private final int batchTarget;
    private final StampedLock[] stripes = new StampedLock[STRIPES];
    private final OverlayFile file;         // null: the arena is the process's own memory
    private long published;                 // publication order of staged slots (the file's entries); guarded by this

    Overlay(long blocks, int blockSize, long capacityBytes) {
        this(blocks, blockSize, capacityBytes, null);
    }

    /** Slots for {@code capacityBytes}; the arena in {@code file} if not null (see {@link OverlayFile}). */
    Overlay(long blocks, int blockSize, long capacityBytes, OverlayFile file) {
        this.file = file;
        this.blockSize = blockSize;
        this.blockShift = Integer.numberOfTrailingZeros(blockSize);
        int perChunk = Math.max(1, CHUNK_BYTES / blockSize);
        this.slotsPerChunkShift = Integer.numberOfTrailingZeros(perChunk);
        this.slots = slotsFor(capacityBytes, blockSize);
        this.chunks = new AtomicReferenceArray<>((slots + perChunk - 1) >>> slotsPerChunkShift);
        this.slotOf = new PagedIntArray(blocks);
        this.freeSlots = new int[slots];
        for (int i = 0; i < slots; i++) {
            freeSlots[i] = slots - 1 - i;       // popped from the end: slot 0 first
        }
        this.freeCount = slots;
        this.stagedBlocks = new long[slots];
        this.appliedSlots = new int[slots];
        this.batchTarget = Math.max(1, slots / 4);
        for (int i = 0; i < STRIPES; i++) {
            stripes[i] = new StampedLock();
        }
    }

    /** The number of slots an overlay of {@code capacityBytes} has (the file's index is sized by it). */
    static int slotsFor(long capacityBytes, int blockSize) {
        return (int) Math.min(Math.max(16, capacityBytes / blockSize), Integer.MAX_VALUE / 2);
    }

    /** Number of slots (capacity in blocks). */
    int capacity() {
        return slots;
    }

    /**
     * Allocates (and so zeroes and faults in) the arena's first pieces up to {@code bytes}, outside the lock the
     * writers stage under: a snapshot is about to make every first write stage a block, and growing the arena
     * then would put a 1 MiB allocation, a page fault per 4 KiB, on a writer's request.
     */
    void preallocate(long bytes) {
        int n = (int) Math.min(chunks.length(), (bytes + CHUNK_BYTES - 1) / CHUNK_BYTES);
        for (int c = 0; c < n; c++) {
            if (chunks.get(c) == null) {
                synchronized (this) {
                    if (!allocateChunk(c)) {
                        return;     // a full RAM file system: writers will find no room and force first
                    }
                }
            }
        }
    }

    /**
     * Allocates chunk {@code c} if it is missing (caller holds the monitor); false if the overlay file's RAM file
     * system is full, which the caller treats as no room.
     */
    private boolean allocateChunk(int c) {
        if (chunks.get(c) != null) {
            return true;
        }
        if (file == null) {
            chunks.set(c, ByteBuffer.allocateDirect(CHUNK_BYTES));
            return true;
        }
        try {
            ByteBuffer b = file.chunk(c, CHUNK_BYTES);
            for (int i = 0; i < CHUNK_BYTES; i += 4096) {
                b.put(i, (byte) 0);         // fault the pages in now, not on a writer's request
            }
            chunks.set(c, b);
            return true;
        } catch (IOException e) {
            return false;
        }
    }

    /** Bytes of arena allocated so far. */
    long allocatedBytes() {
        long n = 0;
        for (int i = 0; i < chunks.length(); i++) {
            ByteBuffer c = chunks.get(i);
            if (c != null) {
                n += c.capacity();
            }
        }
        return n;
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
        long from = first;
        // Int-counted runs (see BlockRuns): a TRIM or a force may cover millions of blocks.
        for (; last - from >= BlockRuns.MAX_BLOCKS; from += BlockRuns.MAX_BLOCKS) {
            if (anyStagedIn(from, BlockRuns.MAX_BLOCKS)) {
                return true;
            }
        }
        return anyStagedIn(from, (int) (last - from + 1));
    }

    private boolean anyStagedIn(long first, int n) {
        for (int i = 0; i < n; i++) {
            if (slotOf.get(first + i) >= 0) {
                return true;
            }
        }
        return false;
    }

    /** A thread's window onto the arena: one reusable duplicate per chunk. Not thread-safe. */
    final class View {
        private final ByteBuffer[] views = new ByteBuffer[chunks.length()];

        /** The arena region of {@code slot} from byte {@code from} to {@code to} of the block. Valid until the next call. */
        ByteBuffer slot(int slot, int from, int to) {
            int c = slot >>> slotsPerChunkShift;
            ByteBuffer v = views[c];
            if (v == null) {
                v = chunks.get(c).duplicate();
                views[c] = v;
            }
            int base = (slot & ((1 << slotsPerChunkShift) - 1)) * blockSize;
            v.limit(base + to).position(base + from);
            return v;
        }
    }

    View view() {
        return new View();
    }

    /**
     * Reserves slots for blocks [first, last] for a write of bytes [offset, end); the parts of the edge blocks
     * the write does not cover are filled with the blocks' current production content, so an edge block that
     * is partly covered must not be staged (the caller waits for it first). False if there is no room (the
     * caller then forces and writes directly).
     */
    synchronized boolean reserve(long first, long last, long offset, long end, MappedData.Cursor production,
                                 View view, int[] out) throws IOException {
        int n = (int) (last - first + 1);
        if (n > freeCount) {
            starved = true;
            notifyAll();            // the committer goes now instead of waiting for a bigger batch
            return false;
        }
        for (int i = 0; i < n; i++) {
            int slot = freeSlots[--freeCount];
            if (!allocateChunk(slot >>> slotsPerChunkShift)) {
                freeSlots[freeCount++] = slot;
                release(i, out);
                starved = true;
                notifyAll();
                return false;
            }
            out[i] = slot;
        }
        long mask = blockSize - 1;
        if ((offset & mask) != 0) {
            copy(production, view, first, out[0], 0, (int) (offset & mask));
        }
        if ((end & mask) != 0) {
            copy(production, view, last, out[n - 1], (int) (end & mask), blockSize);
        }
        return true;
    }

    /** Copies bytes [from, to) of production block b into the same bytes of {@code slot}. */
    private void copy(MappedData.Cursor production, View view, long b, int slot, int from, int to) throws IOException {
        long offset = (b << blockShift) + from;
        int done = from;
        while (done < to) {
            ByteBuffer src = production.view(offset + (done - from), to - done);
            int n = src.remaining();
            view.slot(slot, done, done + n).put(src);
            done += n;
        }
    }

    /**
     * Publishes filled slots: from now on production reads of these blocks see the staged data. A block still
     * staged keeps its place in the queue and gets the new slot; the old one is freed.
     */
    synchronized void publish(long first, long last, int[] slotsOfRange) {
        int before = stagedCount;
        int n = (int) (last - first + 1);
        // An int-counted loop (see BlockRuns): n is at most one write's blocks.
        for (int i = 0; i < n; i++) {
            long b = first + i;
            int slot = slotsOfRange[i];
            if (file != null) {
                file.staged(slot, b, ++published);      // before an older slot of b is cleared: one always names b
            }
            if (slotOf.get(b) >= 0) {
                StampedLock lock = stripes[(int) (b & (STRIPES - 1))];
                long stamp = lock.writeLock();      // excludes the committer's apply and invalidates optimistic reads
                int old;
                try {
                    old = slotOf.get(b);
                    slotOf.set(b, slot);
                } finally {
                    lock.unlockWrite(stamp);
                }
                if (old >= 0) {
                    if (file != null) {
                        file.cleared(old);
                    }
                    freeSlots[freeCount++] = old;
                    continue;
                }
            } else {
                slotOf.set(b, slot);
            }
            stagedBlocks[stagedCount++] = b;
        }
        staged = stagedCount;
        // Only the committer waits for staged work: wake it when work appears or the batch is big enough, not
        // on every write (a wake-up per write costs a context switch on a busy machine).
        if (before == 0 || (before < batchTarget && stagedCount >= batchTarget)) {
            notifyAll();
        }
    }

    /** Gives back slots reserved but not published (the payload never came). */
    synchronized void release(int count, int[] slotsOfRange) {
        for (int i = 0; i < count; i++) {
            freeSlots[freeCount++] = slotsOfRange[i];
        }
    }

    /**
     * Applies the first {@code upTo} blocks staged to the production mapping and frees their slots. The caller
     * has made the corresponding before-images durable first. Returns the number of blocks applied.
     */
    int applyStaged(MappedData.Cursor production, View view, int upTo) throws IOException {
        return applyStaged(production, view, upTo, NOT_MARKED);
    }

    /** What the committer does with each block once its staged data is in production (see {@link #applyStaged}). */
    @FunctionalInterface
    interface Applied {
        void block(long block) throws IOException;
    }

    private static final Applied NOT_MARKED = b -> { };

    /**
     * As {@link #applyStaged(MappedData.Cursor, View, int)}, calling {@code applied} for each block after its data
     * is in production (outside the stripe lock). The volume marks the block in use there: a TRIM that ran between
     * the write's prepare and its publish saw nothing staged, cleared the block's bit and zeroed it, and the data
     * applied now must not lie under a clear bit ("clear bit => zero data", docs/engine.md "Meta bit map").
     */
    int applyStaged(MappedData.Cursor production, View view, int upTo, Applied applied0) throws IOException {
        int applied = 0;
        for (int i = 0; i < upTo; i++) {
            long b = stagedBlocks[i];       // stable below stagedCount; published under the lock before upTo was read
            if (slotOf.get(b) < 0) {
                continue;           // applied by an earlier, interrupted pass
            }
            // Copy and clear under the stripe's write lock: a rewrite that replaces the slot (publish) must land
            // either before the copy (and be applied) or after the clear (and be staged anew), never in between.
            StampedLock lock = stripes[(int) (b & (STRIPES - 1))];
            long stamp = lock.writeLock();
            try {
                int slot = slotOf.get(b);
                long off = b << blockShift;
                int done = 0;
                while (done < blockSize) {
                    ByteBuffer to = production.view(off + done, blockSize - done);
                    int n = to.remaining();
                    to.put(view.slot(slot, done, done + n));
                    done += n;
                }
                if (file != null) {
                    file.cleared(slot);     // after the data is in production's mapping, which outlives us too
                }
                slotOf.set(b, -1);
                appliedSlots[applied++] = slot;
            } finally {
                lock.unlockWrite(stamp);
            }
            applied0.block(b);      // data first, then the bit: any interleaving with a discard ends consistent
        }
        // Slots come back only now, together with the queue entries, so the queue never outgrows the slots.
        synchronized (this) {
            for (int i = 0; i < applied; i++) {
                freeSlots[freeCount++] = appliedSlots[i];
            }
            System.arraycopy(stagedBlocks, upTo, stagedBlocks, 0, stagedCount - upTo);
            stagedCount -= upTo;
            staged = stagedCount;
            starved = false;
            notifyAll();
        }
        return applied;
    }

    /** Slots neither staged nor reserved. */
    synchronized int freeSlots() {
        return freeCount;
    }

    synchronized int stagedSnapshot() {
        return stagedCount;
    }

    /** Waits until no block of [first, last] is staged. */
    synchronized void awaitApplied(long first, long last) throws IOException {
        if (anyStaged(first, last)) {
            awaitWhile(() -> anyStaged(first, last));
        }
    }

    /** Waits until nothing is staged. */
    synchronized void awaitEmpty() throws IOException {
        if (stagedCount > 0) {
            awaitWhile(() -> stagedCount > 0);
        }
    }

    /**
     * The committer could not apply a batch ({@code e}; it keeps the blocks staged and retries): every waiter that
     * was waiting when it happened gets an error instead of waiting for as long as the cause lasts (a full file
     * system a snapshot's exceptions.log cannot grow on).
     */
    synchronized void commitFailed(Throwable e) {
        commitFailures++;
        lastCommitFailure = e;
        notifyAll();
    }

    private long commitFailures;            // guarded by this
    private Throwable lastCommitFailure;

    /** Waits (holding the monitor) while {@code staged}, having woken the committer: somebody waits. */
    private void awaitWhile(BooleanSupplier staged) throws IOException {
        waiters++;
        notifyAll();
        long failuresBefore = commitFailures;
        try {
            while (staged.getAsBoolean()) {
                if (commitFailures != failuresBefore) {
                    Throwable e = lastCommitFailure;
                    throw new IOException("writes staged after a snapshot cannot be applied yet (they stay staged and are "
                            + "retried): " + e.getMessage(), e);
                }
                wait();
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new InterruptedIOException("interrupted while waiting for staged writes");
        } finally {
            waiters--;
        }
    }

    /**
     * The committer's wait: until something is staged (at most {@code idleMillis}), then until the batch is
     * worth a force: {@code batchNanos} have passed since the work was seen, a quarter of the slots are in
     * use, or somebody waits for staged blocks. Returns the number of blocks staged (0 after an idle timeout).
     */
    synchronized int awaitBatch(long idleMillis, long batchNanos) throws InterruptedException {
        if (stagedCount == 0) {
            wait(idleMillis);
            if (stagedCount == 0) {
                return 0;
            }
        }
        if (batchNanos > 0) {
            long deadline = System.nanoTime() + batchNanos;
            while (waiters == 0 && !starved && stagedCount < batchTarget) {
                long left = deadline - System.nanoTime();
                if (left <= 0) {
                    break;
                }
                wait(left / 1_000_000, (int) (left % 1_000_000));
            }
        }
        return stagedCount;
    }

    /**
     * Whether writers wait for the committer: somebody waits for staged blocks, a writer found no room, or a
     * quarter of the slots are staged (the committer falls behind the writers).
     */
    synchronized boolean waitedFor() {
        return waiters > 0 || starved || stagedCount >= batchTarget;
    }

    /**
     * Copies bytes [offset, offset+n) of block b into {@code dst}: the staged copy if b is staged, else
     * production (through {@code production}). Consistent against concurrent apply.
     */
    void readBlock(long b, long offset, int n, ByteBuffer dst, MappedData.Cursor production, View view) throws IOException {
        StampedLock lock = stripes[(int) (b & (STRIPES - 1))];
        int at = dst.position();
        long stamp = lock.tryOptimisticRead();
        if (stamp != 0) {
            copyOut(b, offset, n, dst, production, view);
            if (lock.validate(stamp)) {
                return;
            }
        }
        stamp = lock.readLock();
        try {
            dst.position(at);
            copyOut(b, offset, n, dst, production, view);
        } finally {
            lock.unlockRead(stamp);
        }
    }

    private void copyOut(long b, long offset, int n, ByteBuffer dst, MappedData.Cursor production, View view) throws IOException {
        int slot = slotOf.get(b);
        int inBlock = (int) (offset & (blockSize - 1));
        if (slot >= 0) {
            dst.put(view.slot(slot, inBlock, inBlock + n));
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
