package io.snapbd.engine.snapshot;

import io.snapbd.engine.bitmap.PagedBitMap;
import io.snapbd.engine.bitmap.PagedIntArray;

import java.util.ArrayList;
import java.util.BitSet;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;

/**
 * One snapshot in memory: its record, its bit map (bit B set ⇔ a before-image of B is in the save volume
 * for this snapshot), its block map (B → chunk) and its meta bit map (production's, frozen at creation;
 * pages shared copy-on-write with production and older snapshots).
 */
final class Snapshot {

    volatile SnapshotRecord record;
    final PagedBitMap bits;
    final PagedIntArray map;
    final PagedBitMap meta;
    /** Frozen meta pages persisted in this snapshot's file (kept on disk for the read chain of older snapshots). */
    final SnapshotMetaFile metaFile;
    /** Meta pages frozen while this snapshot was the tail and not yet written to {@link #metaFile}. */
    final List<FrozenPage> pendingPages = new ArrayList<>();
    /** Pages this snapshot holds itself (in its file or pending); guarded by {@link #pendingPages}. */
    final BitSet ownedPages = new BitSet();
    /** Chunks in use on behalf of this snapshot (= cardinality of bits), for status. */
    final AtomicLong chunks = new AtomicLong();
    /** Read requests in flight on this snapshot ({@link SnapshotReads#pin}); delete and terminate wait for them. */
    final AtomicInteger readers = new AtomicInteger();
    /**
     * Null while the snapshot may be pinned; once delete or terminate has started, why it is going (what a
     * refused read is told). Set before the remover looks at {@link #readers}, so a pin either sees it or is seen.
     */
    volatile String leaving;

    record FrozenPage(int page, long[] words) {
    }

    Snapshot(SnapshotRecord record, long blocks, PagedBitMap meta, SnapshotMetaFile metaFile) {
        this.record = record;
        this.bits = new PagedBitMap(blocks);
        this.map = new PagedIntArray(blocks);
        this.meta = meta;
        this.metaFile = metaFile;
    }

    long seq() {
        return record.seq();
    }

    String name() {
        return record.name();
    }

    /** Records B → chunk: the map entry is published before the bit, so a reader that sees the bit finds the chunk. */
    void put(long block, int chunk) {
        map.set(block, chunk);
        if (bits.set(block)) {
            chunks.incrementAndGet();
        }
    }

    void remove(long block) {
        if (bits.clear(block)) {
            chunks.decrementAndGet();
        }
        map.set(block, -1);
    }
}
