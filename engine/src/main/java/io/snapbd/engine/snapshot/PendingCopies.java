package io.snapbd.engine.snapshot;

import io.snapbd.engine.bitmap.PagedIntArray;
import io.snapbd.engine.io.GroupCommit;
import io.snapbd.engine.io.MappedData;

import java.io.IOException;
import java.lang.invoke.VarHandle;
import java.nio.ByteBuffer;
import java.util.Arrays;

/**
 * Copies registered by writers, not yet durable. A writer only claims the chunk and sets the snapshot's bit
 * (under the block's stripe lock) and registers the copy here; the before-image itself is copied by the next
 * force, which batches the copies of many writers into few system calls and keeps page faults on the save
 * volume off the writers. Until the force has finished, production still holds the before-image (rule 5:
 * nobody changes a pending block before {@link #force} returns), so a snapshot read of a pending block reads
 * production.
 */
final class PendingCopies {

    private static final int FILL_BYTES = 1 << 20;

    private final SaveVolume save;
    private final ExceptionLog log;
    private final SnapshotSet.Production production;
    private final int blockSize;
    private final int blockShift;
    private final GroupCommit commit = new GroupCommit();
    private final PagedIntArray pending;        // block -> chunk + 1 while its copy is pending, else 0 or -1
    private final Object pendingLock = new Object();
    private long[] pendingBlocks = new long[1024];  // in registration order; guarded by pendingLock
    private int[] pendingChunks = new int[1024];
    private long[] pendingSeqs = new long[1024];
    private int pendingCount;
    /** The forcing thread's scratch (guarded by the group commit): before-images of a run of chunks. */
    private ByteBuffer fillBuffer;
    private MappedData.Cursor fillCursor;
    /** Pending entries [0, logged) already appended to the log by a force that then failed (guarded by the group commit). */
    private int logged;

    PendingCopies(long blocks, int blockSize, SnapshotSet.Production production, SaveVolume save, ExceptionLog log) {
        this.save = save;
        this.log = log;
        this.production = production;
        this.blockSize = blockSize;
        this.blockShift = Integer.numberOfTrailingZeros(blockSize);
        this.pending = new PagedIntArray(blocks);
    }

    /** Registers the copy of block b into {@code chunk} for snapshot seq; call before setting the snapshot's bit. */
    void add(long b, int chunk, long seq) {
        pending.set(b, chunk + 1);
        synchronized (pendingLock) {
            if (pendingCount == pendingBlocks.length) {
                int n = pendingCount * 2;
                pendingBlocks = Arrays.copyOf(pendingBlocks, n);
                pendingChunks = Arrays.copyOf(pendingChunks, n);
                pendingSeqs = Arrays.copyOf(pendingSeqs, n);
            }
            pendingBlocks[pendingCount] = b;
            pendingChunks[pendingCount] = chunk;
            pendingSeqs[pendingCount] = seq;
            pendingCount++;
        }
    }

    /** True while some copy of block b is not durable. */
    boolean isPending(long b) {
        return pending.get(b) > 0;
    }

    /** True while the copy of block b into {@code chunk} is not durable (the chunk may not hold it yet). */
    boolean isPending(long b, int chunk) {
        return pending.get(b) == chunk + 1;
    }

    /**
     * Makes every copy registered so far durable: one group force for all concurrent writers. The forcing thread
     * fills the registered chunks from production (runs of consecutive chunks in one write each), forces the
     * save volume, then appends and forces their log records, so a record never reaches disk before its chunk.
     */
    void force() throws IOException {
        commit.sync(this::complete);
    }

    /** Run by one thread at a time (inside the group commit). */
    private void complete() throws IOException {
        int n;
        long[] blocksOf;
        int[] chunksOf;
        long[] seqsOf;
        synchronized (pendingLock) {
            n = pendingCount;
            blocksOf = pendingBlocks;       // entries below n never change until this method removes them
            chunksOf = pendingChunks;
            seqsOf = pendingSeqs;
        }
        if (n > 0) {
            fill(blocksOf, chunksOf, n);
        }
        save.force();
        // Entries a failed force appended already stay in the log's buffer (ExceptionLog keeps them when the
        // file cannot grow): append only the others, so a retry after a full file system adds no duplicates.
        for (int i = logged; i < n; i++) {
            log.append(seqsOf[i], blocksOf[i], chunksOf[i]);
        }
        logged = n;
        log.force();
        if (n == 0) {
            return;
        }
        // Durable: snapshot reads may use the chunks from now on. The full fence orders these stores before
        // any change of production the caller makes next (readers re-check the marker after copying production).
        for (int i = 0; i < n; i++) {
            if (pending.get(blocksOf[i]) == chunksOf[i] + 1) {
                pending.set(blocksOf[i], 0);
            }
        }
        VarHandle.fullFence();
        synchronized (pendingLock) {
            System.arraycopy(pendingBlocks, n, pendingBlocks, 0, pendingCount - n);
            System.arraycopy(pendingChunks, n, pendingChunks, 0, pendingCount - n);
            System.arraycopy(pendingSeqs, n, pendingSeqs, 0, pendingCount - n);
            pendingCount -= n;
        }
        logged = 0;
    }

    /** Copies the before-images of pending entries [0, n) from production into their chunks. */
    private void fill(long[] blocksOf, int[] chunksOf, int n) throws IOException {
        if (fillBuffer == null) {
            fillBuffer = ByteBuffer.allocateDirect(Math.max(FILL_BYTES, blockSize));
            fillCursor = production.data().cursor();
        }
        ByteBuffer buf = fillBuffer;
        int perRun = buf.capacity() / blockSize;
        int i = 0;
        while (i < n) {
            // A run: consecutive chunks (the allocator hands them out in order), at most one buffer full.
            int runStart = i;
            buf.clear();
            do {
                copyProductionBlock(blocksOf[i], buf);
                i++;
            } while (i < n && i - runStart < perRun && chunksOf[i] == chunksOf[i - 1] + 1);
            buf.flip();
            save.data().write(buf, save.offset(chunksOf[runStart]));
        }
    }

    private void copyProductionBlock(long b, ByteBuffer dst) throws IOException {
        long src = b << blockShift;
        int done = 0;
        while (done < blockSize) {
            ByteBuffer from = fillCursor.view(src + done, blockSize - done);
            done += from.remaining();
            dst.put(from);
        }
    }
}
