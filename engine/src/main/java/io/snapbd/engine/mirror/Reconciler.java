package io.snapbd.engine.mirror;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;

/**
 * Brings the legs of a mirrored volume back in line after an unclean stop by comparing their tag tables
 * (docs/glossary.md: Symantec behaviours 13–21; rules in docs/mirrors.md, "Reconciliation"):
 * <ul>
 * <li>an entry present on every leg with the same tag and range and marked DONE on every leg is
 *     <em>matched</em>: no data moves (behaviours 16, 23);</li>
 * <li>every other entry is <em>unmatched</em>: its range is reconciled from a leg that holds it (one where it is
 *     DONE when there is one, else the lowest-numbered holder) to every other leg (behaviours 17, 21: roll forward):
 *     the range is <em>compared</em> first, block by block ({@link #BLOCK} bytes, aligned), and only the blocks
 *     where a leg differs from the source are copied, to that leg (as DRBD's checksum-based resync does): after
 *     a process crash the page cache holds an answered change identically on every leg, so nothing is copied
 *     for it; the result is the same bytes as a full copy;</li>
 * <li>overlapping unmatched entries: the higher tag wins. Each unmatched entry is cut down to the bytes no
 *     higher-tagged unmatched entry covers, so the pieces are disjoint and no copy reads bytes another copy
 *     writes;</li>
 * <li>only those ranges are copied (behaviour 19); the copies are forced on every leg before any entry is
 *     retired, so a crash during reconciliation loses nothing and the next run redoes the same copies
 *     (behaviour 14: restartable, idempotent).</li>
 * </ul>
 * The caller must keep clients from writing (and from reading unmatched ranges) until it returns (behaviour 26).
 */
public final class Reconciler {

    /**
     * One copied range: {@code length} bytes at {@code offset} from leg {@code from} to each leg whose bit is set in
     * {@code to} (the legs that differed there from {@code from}), for {@code tag}.
     */
    public record Copy(long tag, long offset, long length, int from, long to) {
        /** Copied to leg {@code leg}. */
        public boolean into(int leg) {
            return (to & (1L << leg)) != 0;
        }
    }

    /**
     * The outcome: entries matched and retired, ranges and bytes copied (each byte of the volume once, whatever
     * the number of legs it went to), bytes compared (the unmatched ranges, each byte once), and each copy with its
     * direction.
     */
    public record Report(long entriesMatched, long entriesUnmatched, long rangesCopied, long bytesCopied,
                         long bytesCompared, List<Copy> copies) {
        /** Bytes copied from {@code from} to {@code to}. */
        public long bytes(int from, int to) {
            return copies.stream().filter(c -> c.from() == from && c.into(to)).mapToLong(Copy::length).sum();
        }

        @Override
        public String toString() {
            return "entries matched " + entriesMatched + ", unmatched " + entriesUnmatched + ", bytes compared "
                    + bytesCompared + ", ranges copied " + rangesCopied + ", bytes copied " + bytesCopied;
        }
    }

    /** Comparison granularity: a block that differs on a leg is copied to it whole (within the range). */
    static final int BLOCK = 4096;

    static final int COPY_BUFFER = 1 << 20;

    /** Told how many bytes of the copies are done, of how many in all (a resync's progress bar). */
    @FunctionalInterface
    public interface Progress {
        Progress NONE = (done, total) -> {
        };

        void copied(long done, long total);
    }

    private Reconciler() {
    }

    /** An unmatched item: one leg's view of one tag (legs that agree on the range share one item). */
    private record Item(long tag, long offset, long length, int source) {
    }

    /**
     * Reconciles {@code legs} using their {@code tables} (same order, at least two). On return every leg holds
     * the same bytes in every range any entry named, and every table is empty.
     */
    public static Report reconcile(List<TagTable> tables, List<LegIo> legs) throws IOException {
        return reconcile(tables, legs, new boolean[legs.size()], List.of(), Progress.NONE);
    }

    /**
     * As {@link #reconcile(List, List)}, with degraded legs (docs/mirrors.md, "Degraded mode"): a leg with
     * {@code stale[i]} missed writes and is never a source, also not of an entry only it holds (that entry's
     * range is copied from the lowest-numbered current leg instead); {@code missed} ranges (a stale leg's region
     * map) are copied from the lowest-numbered current leg too, below every entry (any entry's piece wins).
     */
    public static Report reconcile(List<TagTable> tables, List<LegIo> legs, boolean[] stale, List<long[]> missed,
                                   Progress progress) throws IOException {
        int n = legs.size();
        int current = -1;
        for (int i = n - 1; i >= 0; i--) {
            if (i >= stale.length || !stale[i]) {
                current = i;
            }
        }
        if (current < 0) {
            throw new IllegalArgumentException("every leg is stale: nothing to copy from");
        }
        if (tables.size() != n || n < 2) {
            throw new IllegalArgumentException("need one table per leg and at least two legs: " + tables.size() + " tables, " + n + " legs");
        }
        List<Map<Long, TagTable.Entry>> byLeg = new ArrayList<>();
        Set<Long> tags = new HashSet<>();
        for (TagTable t : tables) {
            Map<Long, TagTable.Entry> m = new TreeMap<>();
            for (TagTable.Entry e : t.live()) {
                m.put(e.tag(), e);
                tags.add(e.tag());
            }
            byLeg.add(m);
        }
        long size = legs.get(0).size();
        for (LegIo l : legs) {
            size = Math.min(size, l.size());
        }

        long matched = 0;
        List<Item> items = new ArrayList<>();
        for (long tag : tags) {
            TagTable.Entry first = null;
            boolean all = true;
            for (int i = 0; i < n; i++) {
                TagTable.Entry e = byLeg.get(i).get(tag);
                if (e == null || !e.done() || (first != null && (e.offset() != first.offset() || e.length() != first.length()))) {
                    all = false;
                }
                if (first == null && e != null) {
                    first = e;
                }
            }
            if (all) {
                matched++;
                continue;
            }
            // One item per distinct range; source: a leg where it is DONE, else the lowest-numbered holder.
            List<long[]> ranges = new ArrayList<>();
            for (int i = 0; i < n; i++) {
                TagTable.Entry e = byLeg.get(i).get(tag);
                if (e == null) {
                    continue;
                }
                long[] found = null;
                for (long[] r : ranges) {
                    if (r[0] == e.offset() && r[1] == e.length()) {
                        found = r;
                    }
                }
                boolean isStale = i < stale.length && stale[i];
                int rank = isStale ? 0 : e.done() ? 2 : 1;     // a stale leg is never a source
                if (found == null) {
                    ranges.add(new long[]{e.offset(), e.length(), isStale ? current : i, rank});
                } else if (rank > found[3]) {
                    found[2] = i;
                    found[3] = rank;
                }
            }
            for (long[] r : ranges) {
                long off = Math.min(r[0], size);
                long end = Math.min(r[0] + r[1], size);
                if (end > off) {
                    items.add(new Item(tag, off, end - off, (int) r[2]));
                }
            }
        }

        for (long[] m : missed) {
            long off = Math.min(m[0], size);
            long end = Math.min(m[0] + m[1], size);
            if (end > off) {
                items.add(new Item(0, off, end - off, current));      // tag 0: below every entry (tags start at 1)
            }
        }

        // Higher tag wins: walk from the highest tag down, keeping only bytes no higher item covered.
        items.sort(Comparator.comparingLong(Item::tag).reversed().thenComparingInt(Item::source));
        TreeMap<Long, Long> covered = new TreeMap<>();   // start -> end, disjoint
        List<Item> pieces = new ArrayList<>();
        for (Item it : items) {
            long pos = it.offset();
            long end = it.offset() + it.length();
            while (pos < end) {
                Map.Entry<Long, Long> c = covered.floorEntry(pos);
                if (c != null && c.getValue() > pos) {
                    pos = c.getValue();
                    continue;
                }
                Long nextStart = covered.higherKey(pos);
                long pieceEnd = nextStart == null ? end : Math.min(end, nextStart);
                pieces.add(new Item(it.tag(), pos, pieceEnd - pos, it.source()));
                pos = pieceEnd;
            }
            addCovered(covered, it.offset(), end);
        }
        pieces.sort(Comparator.comparingLong(Item::offset));

        long total = 0;
        for (Item c : pieces) {
            total += c.length();
        }
        List<Copy> copies = compareAndCopy(pieces, legs, size, total, progress);
        long bytes = 0;
        for (Copy c : copies) {
            bytes += c.length();
        }
        // Copies durable on every leg before any entry goes.
        for (LegIo l : legs) {
            l.force();
        }
        for (int i = 0; i < n; i++) {
            tables.get(i).retireAll(byLeg.get(i).keySet());
        }
        return new Report(matched, tags.size() - matched, copies.size(), bytes, total, List.copyOf(copies));
    }

    /**
     * Compares every leg with the piece's source over each piece, one chunk at a time, and writes to each leg only
     * the {@link #BLOCK}-aligned blocks (cut to the piece) where it differs from the source. Returns what was
     * copied: runs of blocks with the same source, tag and set of target legs, merged while contiguous.
     */
    private static List<Copy> compareAndCopy(List<Item> pieces, List<LegIo> legs, long size, long total,
                                             Progress progress) throws IOException {
        int n = legs.size();
        int cap = (int) Math.min(COPY_BUFFER, Math.max(BLOCK, size));
        ByteBuffer src = ByteBuffer.allocate(cap);
        ByteBuffer other = ByteBuffer.allocate(cap);
        long[] differs = new long[cap / BLOCK + 2];      // per block of the chunk: the legs that differ there
        List<Copy> copies = new ArrayList<>();
        progress.copied(0, total);
        long done = 0;
        long[] open = null;     // the copy being extended: {tag, offset, length, from, to}
        for (Item c : pieces) {
            long pos = c.offset();
            long end = c.offset() + c.length();
            while (pos < end) {
                int len = (int) Math.min(cap, end - pos);
                src.clear().limit(len);
                legs.get(c.source()).read(src, pos);
                // blocks of this chunk: [pos, pos + len) cut at BLOCK-aligned boundaries
                int blocks = (int) (((pos + len - 1) / BLOCK) - (pos / BLOCK) + 1);
                java.util.Arrays.fill(differs, 0, blocks, 0L);
                for (int i = 0; i < n; i++) {
                    if (i == c.source()) {
                        continue;
                    }
                    other.clear().limit(len);
                    legs.get(i).read(other, pos);
                    byte[] a = src.array();
                    byte[] b = other.array();
                    int runStart = -1;
                    for (int k = 0; k < blocks; k++) {
                        int from = blockStart(pos, k, len);
                        int to = blockStart(pos, k + 1, len);
                        boolean diff = java.util.Arrays.mismatch(a, from, to, b, from, to) >= 0;
                        if (diff) {
                            differs[k] |= 1L << i;
                            if (runStart < 0) {
                                runStart = from;
                            }
                        }
                        if (runStart >= 0 && (!diff || k == blocks - 1)) {
                            int runEnd = diff ? to : from;
                            src.limit(runEnd).position(runStart);
                            legs.get(i).write(src, pos + runStart);
                            runStart = -1;
                        }
                    }
                }
                for (int k = 0; k < blocks; k++) {
                    if (differs[k] == 0) {
                        continue;
                    }
                    long off = pos + blockStart(pos, k, len);
                    long l = blockStart(pos, k + 1, len) - blockStart(pos, k, len);
                    if (open != null && open[0] == c.tag() && open[1] + open[2] == off && open[3] == c.source()
                            && open[4] == differs[k]) {
                        open[2] += l;
                    } else {
                        if (open != null) {
                            copies.add(new Copy(open[0], open[1], open[2], (int) open[3], open[4]));
                        }
                        open = new long[]{c.tag(), off, l, c.source(), differs[k]};
                    }
                }
                pos += len;
                done += len;
                progress.copied(done, total);
            }
        }
        if (open != null) {
            copies.add(new Copy(open[0], open[1], open[2], (int) open[3], open[4]));
        }
        return copies;
    }

    /** Where block {@code k} of the chunk at {@code pos} (length {@code len}) starts in the chunk: aligned, cut to it. */
    private static int blockStart(long pos, int k, int len) {
        if (k == 0) {
            return 0;
        }
        long s = (pos / BLOCK + k) * BLOCK - pos;
        return (int) Math.min(s, len);
    }

    private static void addCovered(TreeMap<Long, Long> covered, long start, long end) {
        Map.Entry<Long, Long> lo = covered.floorEntry(start);
        if (lo != null && lo.getValue() >= start) {
            start = lo.getKey();
            end = Math.max(end, lo.getValue());
        }
        while (true) {
            Map.Entry<Long, Long> hi = covered.ceilingEntry(start);
            if (hi == null || hi.getKey() > end) {
                break;
            }
            end = Math.max(end, hi.getValue());
            covered.remove(hi.getKey());
        }
        covered.put(start, end);
    }
}
