package io.snapbd.engine.snapshot;

import io.snapbd.engine.bitmap.PagedBitMap;
import io.snapbd.engine.io.MappedData;

import java.io.IOException;
import java.nio.file.Path;
import java.util.concurrent.atomic.AtomicLong;

/**
 * The preallocated, memory-mapped file holding before-images, one chunk per block, shared by every snapshot
 * of a volume. Which chunks are in use is not stored: it is rebuilt at open from the snapshots' block maps,
 * so a crash can neither leak a chunk nor hand one out twice.
 */
final class SaveVolume implements AutoCloseable {

    private final MappedData data;
    private final int chunkSize;
    private final long chunks;
    private final PagedBitMap used;
    private final AtomicLong usedCount = new AtomicLong();
    private final AtomicLong hint = new AtomicLong();

    SaveVolume(Path file, long size, int chunkSize) throws IOException {
        this.data = size > 0 ? new MappedData(file, size) : null;
        this.chunkSize = chunkSize;
        this.chunks = size / chunkSize;
        this.used = new PagedBitMap(chunks);
    }

    long capacity() {
        return chunks;
    }

    long used() {
        return usedCount.get();
    }

    int chunkSize() {
        return chunkSize;
    }

    MappedData data() {
        return data;
    }

    /** Claims a free chunk; -1 when the save volume is full. Lock-free. */
    int allocate() {
        if (chunks == 0) {
            return -1;
        }
        long start = hint.get();
        long c = used.next(start, chunks, false);
        if (c >= chunks) {
            c = used.next(0, start, false);
            if (c >= start) {
                return -1;
            }
        }
        while (!used.set(c)) {      // lost a race for c: look further
            long next = used.next(c + 1, chunks, false);
            if (next >= chunks) {
                next = used.next(0, chunks, false);
                if (next >= chunks) {
                    return -1;
                }
            }
            c = next;
        }
        usedCount.incrementAndGet();
        hint.set(c + 1 < chunks ? c + 1 : 0);
        return (int) c;
    }

    /** Marks a chunk used while rebuilding at open; false if it was already used (a doubly used chunk). */
    boolean claim(int chunk) {
        if (chunk < 0 || chunk >= chunks) {
            return false;
        }
        if (used.set(chunk)) {
            usedCount.incrementAndGet();
            return true;
        }
        return false;
    }

    void free(int chunk) {
        if (used.clear(chunk)) {
            usedCount.decrementAndGet();
        }
    }

    boolean isUsed(int chunk) {
        return used.get(chunk);
    }

    long offset(int chunk) {
        return (long) chunk * chunkSize;
    }

    void force() throws IOException {
        if (data != null) {
            data.forceAll();
        }
    }

    @Override
    public void close() throws IOException {
        if (data != null) {
            data.close();
        }
    }
}
