package io.snapbd.engine.volume;

import io.snapbd.engine.bitmap.BitMapFile;
import io.snapbd.engine.bitmap.PagedBitMap;

import java.io.IOException;

/**
 * The production meta bit map's write-intent log ({@code intent.map}): before the first bit of a region is set
 * (or cleared) in memory, the region's intent bit is forced to disk, so that after an unclean stop only those
 * regions can disagree with the persisted map (see {@link VolumeRecovery}). A region is 2 MiB of data.
 */
final class WriteIntents {

    /** Intent region: 2 MiB of data, whatever the block size. */
    static final int REGION_BYTES_SHIFT = 21;

    private final PagedBitMap meta;
    private final PagedBitMap durable;          // regions whose intent bit is durable
    private final BitMapFile file;
    private final int regionShift;              // blocks per region = 1 << regionShift
    private final Object lock = new Object();

    /** Over {@code meta} with no intent durable yet ({@code file} was cleared by the open). */
    WriteIntents(PagedBitMap meta, BitMapFile file, long regionCount, int regionShift) {
        this.meta = meta;
        this.durable = new PagedBitMap(regionCount);
        this.file = file;
        this.regionShift = regionShift;
    }

    /** Regions of {@code 1 << regionShift} blocks that cover {@code blocks}. */
    static long regions(long blocks, int regionShift) {
        return (blocks + (1L << regionShift) - 1) >>> regionShift;
    }

    /** Region shift for a block size: blocks per region = 1 << shift. */
    static int regionShift(int blockSize) {
        return Math.max(0, REGION_BYTES_SHIFT - Integer.numberOfTrailingZeros(blockSize));
    }

    /** Sets the meta bits of blocks [first, last], forcing their regions' intents first where a bit changes. */
    void markInUse(long first, long last) throws IOException {
        for (long b = first; b <= last; b++) {
            if (!meta.get(b)) {
                ensureBlocks(b, last);
                for (; b <= last; b++) {
                    meta.set(b);
                }
                return;
            }
        }
    }

    /** Forces the intent bits of the regions of blocks [firstBlock, lastBlock] unless they are already durable. */
    void ensureBlocks(long firstBlock, long lastBlock) throws IOException {
        ensure(firstBlock >>> regionShift, lastBlock >>> regionShift);
    }

    /** Forces the intent bits of regions [firstRegion, lastRegion] unless they are already durable. */
    private void ensure(long firstRegion, long lastRegion) throws IOException {
        if (durable.next(firstRegion, lastRegion + 1, false) > lastRegion) {
            return;
        }
        synchronized (lock) {
            boolean changed = false;
            PagedBitMap staged = durable;
            for (long r = firstRegion; r <= lastRegion; r++) {
                if (!staged.get(r)) {
                    changed = true;
                }
            }
            if (!changed) {
                return;
            }
            // Write the pages with the new bits set, force, and only then publish them as durable.
            PagedBitMap next = new PagedBitMap(durable.size());
            int firstPage = (int) (firstRegion >>> PagedBitMap.PAGE_SHIFT);
            int lastPage = (int) (lastRegion >>> PagedBitMap.PAGE_SHIFT);
            long[] words = new long[PagedBitMap.PAGE_LONGS];
            for (int p = firstPage; p <= lastPage; p++) {
                durable.copyPage(p, words);
                next.loadPage(p, words);
            }
            for (long r = firstRegion; r <= lastRegion; r++) {
                next.set(r);
            }
            for (int p = firstPage; p <= lastPage; p++) {
                file.writePage(next, p);
            }
            file.force();
            for (long r = firstRegion; r <= lastRegion; r++) {
                durable.set(r);
            }
        }
    }

    /** Clears every intent on disk (a clean close: the meta bit map is durable). */
    void clearOnDisk() throws IOException {
        synchronized (lock) {
            file.writeAll(new PagedBitMap(durable.size()));
            file.force();
        }
    }

    void close() throws IOException {
        file.close();
    }
}
