package io.snapbd.engine.volume;

import io.snapbd.engine.bitmap.PagedBitMap;
import io.snapbd.engine.io.FileSpace;
import io.snapbd.engine.io.MappedData;

import java.io.IOException;
import java.nio.ByteBuffer;

/**
 * TRIM and WRITE_ZEROES on production: which blocks leave the in-use set and how their data becomes zero.
 * Blocks leave the in-use set only here, and only by clearing the bit and then zeroing the block
 * (FALLOC_FL_ZERO_RANGE when the file system has it, probed once at open, else through the mapping), so that
 * a clear bit always means zero data. Callers hold the write gate and have saved the before-images.
 */
final class Zeroing {

    private static final ByteBuffer ZEROS = ByteBuffer.allocateDirect(1 << 16).asReadOnlyBuffer();

    private final FileSpace.Zeroer zeroer;
    private final boolean fast;
    private final PagedBitMap meta;
    private final WriteIntents intents;
    private final int blockShift;
    private final int blockSize;

    Zeroing(FileSpace.Zeroer zeroer, PagedBitMap meta, WriteIntents intents, int blockSize) {
        this.zeroer = zeroer;
        this.fast = probe(zeroer);
        this.meta = meta;
        this.intents = intents;
        this.blockShift = Integer.numberOfTrailingZeros(blockSize);
        this.blockSize = blockSize;
    }

    private static boolean probe(FileSpace.Zeroer zeroer) {
        try {
            return zeroer.zeroRange(0, 0);
        } catch (IOException e) {
            return false;
        }
    }

    /** True when the file system zeroes ranges without writing them (FALLOC_FL_ZERO_RANGE). */
    boolean fast() {
        return fast;
    }

    /** Zeroes bytes [offset, offset+length); whole blocks are discarded unless {@code noHole} keeps them in use. */
    void zeroRange(MappedData.Cursor c, long offset, long length, boolean noHole) throws IOException {
        long end = offset + length;
        long firstWhole = (offset + blockSize - 1) >>> blockShift;
        long endWhole = end >>> blockShift;
        if (firstWhole >= endWhole) {
            // Inside one block (or straddling two partial blocks): zero through the mapping where in use.
            zeroPartial(c, offset, end);
        } else {
            zeroPartial(c, offset, firstWhole << blockShift);
            zeroPartial(c, endWhole << blockShift, end);
            if (noHole) {
                zeroInUseRuns(c, firstWhole, endWhole, false);
                intents.markInUse(firstWhole, endWhole - 1);
            } else {
                discard(c, firstWhole, endWhole);
            }
        }
    }

    /** Zeroes bytes [from, to) that lie in blocks in use; blocks not in use are already zero. */
    private void zeroPartial(MappedData.Cursor c, long from, long to) throws IOException {
        long pos = from;
        while (pos < to) {
            long block = pos >>> blockShift;
            long blockEnd = Math.min(to, (block + 1) << blockShift);
            if (meta.get(block)) {
                fillZero(c, pos, blockEnd - pos);
            }
            pos = blockEnd;
        }
    }

    /** Blocks [first, end) become not in use: clear the bits, then zero what was in use. */
    void discard(MappedData.Cursor c, long first, long end) throws IOException {
        zeroInUseRuns(c, first, end, true);
    }

    private void zeroInUseRuns(MappedData.Cursor c, long first, long end, boolean clearBits) throws IOException {
        long b = meta.next(first, end, true);
        while (b < end) {
            long runEnd = meta.next(b, end, false);
            // Intent first, so that after a crash this region is re-derived from the data.
            intents.ensureBlocks(b, runEnd - 1);
            if (clearBits) {
                for (long i = b; i < runEnd; i++) {
                    meta.clear(i);
                }
            }
            zeroData(c, b << blockShift, (runEnd - b) << blockShift);
            b = meta.next(runEnd, end, true);
        }
    }

    private void zeroData(MappedData.Cursor c, long offset, long length) throws IOException {
        if (fast && zeroer.zeroRange(offset, length)) {
            return;
        }
        fillZero(c, offset, length);
    }

    private static void fillZero(MappedData.Cursor c, long offset, long length) throws IOException {
        long pos = offset;
        long end = offset + length;
        ByteBuffer zeros = ZEROS.duplicate();
        while (pos < end) {
            ByteBuffer v = c.view(pos, end - pos);
            int n = v.remaining();
            while (v.hasRemaining()) {
                zeros.clear().limit(Math.min(zeros.capacity(), v.remaining()));
                v.put(zeros);
            }
            pos += n;
        }
    }

    void close() throws IOException {
        zeroer.close();
    }
}
