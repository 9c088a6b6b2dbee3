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
 * <li>every other entry is <em>unmatched</em>: its range is copied from a leg that holds it (one where it is
 *     DONE when there is one, else the lowest-numbered holder) to every other leg (behaviours 17, 21: roll forward);</li>
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

    /** One copied range: {@code length} bytes at {@code offset} from leg {@code from} to every other leg, for {@code tag}. */
    public record Copy(long tag, long offset, long length, int from) {
    }

    /** The outcome: entries matched and retired, ranges and bytes copied, and each copy with its direction. */
    public record Report(long entriesMatched, long entriesUnmatched, long rangesCopied, long bytesCopied, List<Copy> copies) {
        /** Bytes copied from {@code from} to {@code to}. */
        public long bytes(int from, int to) {
            return from == to ? 0 : copies.stream().filter(c -> c.from() == from).mapToLong(Copy::length).sum();
        }

        @Override
        public String toString() {
            return "entries matched " + entriesMatched + ", unmatched " + entriesUnmatched + ", ranges copied "
                    + rangesCopied + ", bytes copied " + bytesCopied;
        }
    }

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
        List<Copy> copies = new ArrayList<>();
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
                copies.add(new Copy(it.tag(), pos, pieceEnd - pos, it.source()));
                pos = pieceEnd;
            }
            addCovered(covered, it.offset(), end);
        }
        copies.sort(Comparator.comparingLong(Copy::offset));

        ByteBuffer buf = ByteBuffer.allocateDirect((int) Math.min(COPY_BUFFER, Math.max(1, size)));
        long total = 0;
        for (Copy c : copies) {
            total += c.length();
        }
        progress.copied(0, total);
        long bytes = 0;
        for (Copy c : copies) {
            long pos = c.offset();
            long end = c.offset() + c.length();
            while (pos < end) {
                int len = (int) Math.min(buf.capacity(), end - pos);
                buf.clear().limit(len);
                legs.get(c.from()).read(buf, pos);
                for (int i = 0; i < n; i++) {
                    if (i != c.from()) {
                        buf.flip();
                        legs.get(i).write(buf, pos);
                    }
                }
                pos += len;
                progress.copied(bytes + (pos - c.offset()), total);
            }
            bytes += c.length();
        }
        // Copies durable on every leg before any entry goes.
        for (LegIo l : legs) {
            l.force();
        }
        for (int i = 0; i < n; i++) {
            tables.get(i).retireAll(byLeg.get(i).keySet());
        }
        return new Report(matched, tags.size() - matched, copies.size(), bytes, List.copyOf(copies));
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
