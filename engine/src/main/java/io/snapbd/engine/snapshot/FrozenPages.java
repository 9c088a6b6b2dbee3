package io.snapbd.engine.snapshot;

import io.snapbd.engine.bitmap.PagedBitMap;

import java.io.IOException;
import java.util.ArrayList;
import java.util.List;

/**
 * Production meta pages frozen by copy-on-write (docs/snapshots.md, snapshot creation): when production is
 * about to change a page the snapshots share, the tail keeps the old content; such pages wait in the
 * snapshot's {@link Snapshot#pendingPages} until {@link #persist} writes them to its meta file. A snapshot
 * leaving the queue hands the pages of its file its older neighbour lacks to that neighbour
 * ({@link #handOver}), since they serve the neighbour's read chain.
 *
 * <p>{@link #persist} and {@link #handOver} run one at a time (this object's monitor): a FLUSH persists from
 * the flush path while a snapshot's removal (a delete, or a full save volume ending a snapshot on another
 * connection's write) persists and hands over under the stripe locks. Two persists working from copies of the
 * same pending list would write a page twice, the second after the first had committed it (a page is written
 * once: {@link SnapshotMetaFile#writeWords}). Neither path takes a stripe or flush lock inside, so the monitor
 * adds no lock-order edge.
 */
final class FrozenPages {

    private final SnapshotChain chain;

    FrozenPages(SnapshotChain chain) {
        this.chain = chain;
    }

    /** Production is about to change a page some snapshots share: the tail keeps the old content. */
    void pageCopied(int page, long[] frozen) {
        Snapshot[] c = chain.active();
        if (c.length == 0) {
            return;
        }
        Snapshot tail = c[c.length - 1];
        synchronized (tail.pendingPages) {
            if (tail.ownedPages.get(page)) {
                return;     // the tail has its own copy: production's page was not shared with it
            }
            tail.ownedPages.set(page);
            tail.pendingPages.add(new Snapshot.FrozenPage(page, frozen));
        }
    }

    /** Writes frozen meta pages to their snapshots' files and forces them; runs before production's meta is persisted. */
    synchronized void persist() throws IOException {
        for (Snapshot s : chain.active()) {
            List<Snapshot.FrozenPage> todo;
            synchronized (s.pendingPages) {
                if (s.pendingPages.isEmpty()) {
                    continue;
                }
                todo = new ArrayList<>(s.pendingPages);
            }
            for (Snapshot.FrozenPage fp : todo) {
                s.metaFile.writeWords(fp.page(), fp.words());
            }
            s.metaFile.commit();        // pages forced, then their entries: a crash leaves a page absent, never torn
            synchronized (s.pendingPages) {
                s.pendingPages.removeAll(todo);
            }
        }
    }

    /** Writes to {@code older}'s file the frozen meta pages {@code victim}'s file has and it lacks, and forces them. */
    synchronized void handOver(Snapshot victim, Snapshot older) throws IOException {
        long[] words = new long[PagedBitMap.PAGE_LONGS];
        long[] olderWords = new long[PagedBitMap.PAGE_LONGS];
        boolean wrote = false;
        for (int p = 0; p < victim.metaFile.pageCount(); p++) {
            if (victim.metaFile.readPage(p, words) == SnapshotMetaFile.PageState.PRESENT
                    && older.metaFile.readPage(p, olderWords) == SnapshotMetaFile.PageState.ABSENT) {
                older.metaFile.writeWords(p, words);
                synchronized (older.pendingPages) {
                    older.ownedPages.set(p);
                }
                wrote = true;
            }
        }
        if (wrote) {
            older.metaFile.commit();
        }
    }
}
