package io.snapbd.engine.volume;

import io.snapbd.engine.bitmap.BitMapFile;
import io.snapbd.engine.bitmap.PagedBitMap;
import io.snapbd.engine.io.MappedData;
import io.snapbd.engine.snapshot.SnapshotSet;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.BitSet;

/**
 * Crash recovery of the production meta bit map at open. After an unclean stop only the regions whose intent
 * bit was durable ({@link WriteIntents}) can disagree with the persisted map; each of their blocks whose data is
 * non-zero is marked in use, so a block whose data may have reached the disk is never reported as a hole (a
 * clear bit always has zero data beneath it). Regions under a damaged intent or meta page are rebuilt the same way.
 */
final class VolumeRecovery {

    private VolumeRecovery() {
    }

    /**
     * Rebuilds {@code meta} if the last stop was unclean or a page was damaged, persists it (snapshots' frozen
     * pages first), and reports what it did. Production's meta pages are changed copy-on-write, so the snapshots
     * keep the pages they were frozen with.
     */
    static RecoveryReport recover(VolumeHeader h, MappedData data, PagedBitMap meta, BitMapFile metaFile,
                                  PagedBitMap intentsOnDisk, BitSet damagedMeta, BitSet damagedIntent,
                                  SnapshotSet snapshots) throws IOException {
        long blocks = h.blocks();
        long regionCount = WriteIntents.regions(blocks, h.regionShift());
        long scanned = 0;
        long marked = 0;
        if (!h.clean() || !damagedMeta.isEmpty() || !damagedIntent.isEmpty()) {
            // Regions to rebuild: every intent region, every region under a damaged intent page (we cannot know
            // which), every region covered by a damaged meta page (loaded as all clear).
            BitSet suspect = new BitSet();
            for (long r = intentsOnDisk.next(0, regionCount, true); r < regionCount; r = intentsOnDisk.next(r + 1, regionCount, true)) {
                suspect.set((int) r);
            }
            for (int p = damagedIntent.nextSetBit(0); p >= 0; p = damagedIntent.nextSetBit(p + 1)) {
                long first = (long) p << PagedBitMap.PAGE_SHIFT;
                suspect.set((int) first, (int) Math.min(regionCount, first + PagedBitMap.PAGE_BITS));
            }
            for (int p = damagedMeta.nextSetBit(0); p >= 0; p = damagedMeta.nextSetBit(p + 1)) {
                long firstBlock = (long) p << PagedBitMap.PAGE_SHIFT;
                long lastBlock = Math.min(blocks, firstBlock + PagedBitMap.PAGE_BITS) - 1;
                suspect.set((int) (firstBlock >>> h.regionShift()), (int) (lastBlock >>> h.regionShift()) + 1);
            }
            MappedData.Cursor c = data.cursor();
            try {
                for (int r = suspect.nextSetBit(0); r >= 0; r = suspect.nextSetBit(r + 1)) {
                    long first = (long) r << h.regionShift();
                    long end = Math.min(blocks, first + (1L << h.regionShift()));
                    for (long b = first; b < end; b++) {
                        if (!meta.get(b) && !isZero(c, b * h.blockSize(), h.blockSize())) {
                            meta.set(b);
                            marked++;
                        }
                    }
                    scanned++;
                }
            } catch (InternalError e) {
                throw data.fault(e);
            }
            snapshots.persistFrozenPages();
            metaFile.writeAll(meta);
            metaFile.force();
        }
        return new RecoveryReport(h.clean(), scanned, marked,
                damagedMeta.cardinality() + damagedIntent.cardinality(), h.openCount() + 1);
    }

    private static boolean isZero(MappedData.Cursor c, long offset, int length) throws IOException {
        long pos = offset;
        long end = offset + length;
        while (pos < end) {
            ByteBuffer v = c.view(pos, end - pos);
            int p = v.position();
            int lim = v.limit();
            while (p + 8 <= lim) {
                if (v.getLong(p) != 0) {
                    return false;
                }
                p += 8;
            }
            while (p < lim) {
                if (v.get(p++) != 0) {
                    return false;
                }
            }
            pos += v.remaining();
        }
        return true;
    }
}
