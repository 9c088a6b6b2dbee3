package io.snapbd.engine.snapshot;

import io.snapbd.engine.bitmap.PagedBitMap;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

/**
 * The snapshot queue of one volume as data: the active snapshots oldest (head) first, the terminated ones
 * kept for listing, and the lookups over them — which snapshot a block's before-image is saved for, where a
 * block of a snapshot reads from, what an older snapshot still needs (docs/snapshots.md, rules 1-6 and the
 * read chain). The active array is replaced, never mutated, so readers and copy-on-write take it once and
 * walk it without locks; the static lookups work on such a taken array. {@link SnapshotSet} decides when
 * the queue changes.
 */
final class SnapshotChain {

    /** Where block b of a snapshot reads from: a chunk (≥ 0), production (-1) or zeros (-2). */
    static final int FROM_PRODUCTION = -1;
    static final int ZERO = -2;

    private final long blocks;
    /** Active snapshots, oldest first. Replaced, never mutated, so readers can walk it without locks. */
    private volatile Snapshot[] active = new Snapshot[0];
    /** Terminated snapshots kept for listing (no content). */
    private final List<SnapshotRecord> invalid = Collections.synchronizedList(new ArrayList<>());

    SnapshotChain(long blocks) {
        this.blocks = blocks;
    }

    /** The active snapshots now, oldest first; the caller must not change the array. */
    Snapshot[] active() {
        return active;
    }

    /** Replaces the active snapshots (with writers paused or every stripe lock held). */
    void replace(Snapshot[] next) {
        active = next;
    }

    void addInvalid(SnapshotRecord r) {
        invalid.add(r);
    }

    void removeInvalid(long seq) {
        synchronized (invalid) {
            invalid.removeIf(r -> r.seq() == seq);
        }
    }

    /** The records of the table: active, invalid and {@code adding} (if not null), by sequence. */
    List<SnapshotRecord> records(SnapshotRecord adding) {
        List<SnapshotRecord> records = new ArrayList<>();
        for (Snapshot x : active) {
            records.add(x.record);
        }
        if (adding != null) {
            records.add(adding);
        }
        synchronized (invalid) {
            records.addAll(invalid);
        }
        records.sort((a, b) -> Long.compare(a.seq(), b.seq()));
        return records;
    }

    List<SnapshotSet.Info> list() {
        List<SnapshotSet.Info> out = new ArrayList<>();
        for (Snapshot s : active) {
            out.add(new SnapshotSet.Info(s.record, s.chunks.get(), true));
        }
        synchronized (invalid) {
            for (SnapshotRecord r : invalid) {
                out.add(new SnapshotSet.Info(r, 0, false));
            }
        }
        out.sort((a, b) -> Long.compare(a.record().seq(), b.record().seq()));
        return out;
    }

    /** The record of the named snapshot, active or invalid, or null. */
    SnapshotRecord record(String name) {
        for (SnapshotSet.Info i : list()) {
            if (i.record().name().equals(name)) {
                return i.record();
            }
        }
        return null;
    }

    /** The active snapshot with sequence seq, or null. */
    Snapshot find(long seq) {
        return find(active, seq);
    }

    static Snapshot find(Snapshot[] c, long seq) {
        int i = indexOf(c, seq);
        return i < 0 ? null : c[i];
    }

    /** Position of snapshot seq in {@code c}, or -1. */
    static int indexOf(Snapshot[] c, long seq) {
        for (int i = 0; i < c.length; i++) {
            if (c[i].seq() == seq) {
                return i;
            }
        }
        return -1;
    }

    /** The youngest snapshot of {@code c} older than seq, or null. */
    static Snapshot olderThan(Snapshot[] c, long seq) {
        Snapshot best = null;
        for (Snapshot s : c) {
            if (s.seq() < seq) {
                best = s;
            }
        }
        return best;
    }

    /** Names of the active snapshots older than {@code name}, oldest first (none if it is not active). */
    List<String> olderThan(String name) {
        List<String> out = new ArrayList<>();
        for (Snapshot s : active) {
            if (s.name().equals(name)) {
                return out;
            }
            out.add(s.name());
        }
        return List.of();
    }

    /** Seq of the named active snapshot, or -1. */
    long seqOf(String name) {
        for (Snapshot s : active) {
            if (s.name().equals(name)) {
                return s.seq();
            }
        }
        return -1;
    }

    /** True if any snapshot from {@code seq} to the tail holds a before-image of b. */
    boolean savedAtOrAfter(long seq, long b) {
        for (Snapshot s : active) {
            if (s.seq() >= seq && s.bits.get(b)) {
                return true;
            }
        }
        return false;
    }

    /** The snapshot on whose behalf B must be saved (rule 3), or null when B may be overwritten in place. */
    static Snapshot needsCopy(Snapshot[] c, long b) {
        for (int i = c.length - 1; i >= 0; i--) {
            Snapshot s = c[i];
            if (s.bits.get(b)) {
                return null;            // rule 2: the before-image is already safe
            }
            if (s.meta.get(b)) {
                return s;               // rule 3: B was in use when s was taken
            }
        }
        return null;                    // rule 4: past the head, nothing in use needs saving
    }

    /**
     * Whether some snapshot at or older than {@code c[from]} would read block b through the chain past
     * {@code c[from]}: walking toward the head, a snapshot that had b in use comes before one that holds its
     * own before-image. If not, a before-image leaving the queue above {@code from} is freed, not moved (a
     * snapshot with b not in use reads zeros, and the differential already counts it as changed).
     */
    static boolean neededByOlder(Snapshot[] c, int from, long b) {
        for (int i = from; i >= 0; i--) {
            if (c[i].bits.get(b)) {
                return false;
            }
            if (c[i].meta.get(b)) {
                return true;
            }
        }
        return false;
    }

    /** Where block b of snapshot {@code c[index]} reads from: a chunk, {@link #FROM_PRODUCTION} or {@link #ZERO}. */
    static int source(Snapshot[] c, int index, long b) {
        if (!c[index].meta.get(b)) {
            return ZERO;                // not in use when the snapshot was taken
        }
        for (int i = index; i < c.length; i++) {
            if (c[i].bits.get(b)) {
                int chunk = c[i].map.get(b);
                if (chunk >= 0) {
                    return chunk;
                }
            }
        }
        return FROM_PRODUCTION;
    }

    /** Every block map entry of the active snapshots (what the exception log is rewritten with). */
    List<ExceptionLog.Entry> entries() {
        return entries(active, blocks);
    }

    static List<ExceptionLog.Entry> entries(Snapshot[] c, long blocks) {
        List<ExceptionLog.Entry> out = new ArrayList<>();
        for (Snapshot s : c) {
            for (long b = s.bits.next(0, blocks, true); b < blocks; b = s.bits.next(b + 1, blocks, true)) {
                out.add(new ExceptionLog.Entry(s.seq(), b, s.map.get(b)));
            }
        }
        return out;
    }

    /**
     * The difference from active snapshot {@code older} to the younger active snapshot {@code younger}, over
     * the queue as it is now (snapshots deleted between them have been merged into older ones).
     */
    Differential differential(String older, String younger) {
        Snapshot[] c = active;
        int l = -1;
        int m = -1;
        for (int i = 0; i < c.length; i++) {
            if (c[i].name().equals(older)) {
                l = i;
            }
            if (c[i].name().equals(younger)) {
                m = i;
            }
        }
        if (l < 0 || m < 0) {
            String missing = l < 0 ? older : younger;
            SnapshotRecord r = record(missing);
            throw new IllegalArgumentException(r == null ? "no snapshot named " + missing
                    : "snapshot " + missing + " is invalid (" + r.reason() + ")");
        }
        if (m <= l) {
            throw new IllegalArgumentException("snapshot " + younger + " (sequence " + c[m].seq()
                    + ") is not younger than " + older + " (sequence " + c[l].seq() + ")");
        }
        PagedBitMap[] bits = new PagedBitMap[m - l];
        PagedBitMap[] metas = new PagedBitMap[m - l];
        for (int i = l; i < m; i++) {
            bits[i - l] = c[i].bits;
            metas[i - l] = c[i].meta;
        }
        return new Differential(bits, metas, c[m].meta, blocks);
    }
}
