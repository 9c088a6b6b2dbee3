package io.snapbd.bench.powerloss;

import io.snapbd.bench.powerloss.Workload.Op;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * What each block of one volume (the round's volume or a clone) and of each of its snapshots may legitimately
 * hold after a power loss, given the operations acknowledged on it and those that may have been in flight.
 * <p>
 * Operations are ordered by the log: each record has a position {@code p} (1, 2, ... in log order) and says
 * how many records were logged when its request was sent ({@code s}). Operation X certainly took effect
 * before Y when X was logged before Y was sent ({@code X.p <= Y.s}); otherwise (two connections) they may have
 * overlapped, in either order. With one operation at a time, {@code s} of each is {@code p} of the one
 * before, and the order is total.
 * <p>
 * Per block the model keeps the writes that may still be what the block holds ({@link #values}): a write is
 * <em>durable</em> when it was FUA, or when a FLUSH (on any connection of the volume) was sent after it was
 * logged ({@code p <= flush.s}); a snapshot create and a restore count as such a FLUSH. A durable write W
 * rules out every write that certainly took effect before it ({@code p <= W.s}), and the initial zeros. What
 * is left is the set of values a power loss may leave: the newest durable write, the writes that may have
 * come after it, and those in flight. Where the set has several values a byte-wise mix of them is accepted
 * (snapbd makes no promise of sector atomicity for writes not yet durable, docs/engine.md). A snapshot holds,
 * per block, the set left right after its create's flush (one value, unless writes were in flight together).
 */
final class Model {

    /** A write that may still be what a block holds. */
    private static final class Entry {
        final long value;
        final long s;
        final long p;
        boolean durable;

        Entry(long value, long s, long p, boolean durable) {
            this.value = value;
            this.s = s;
            this.p = p;
            this.durable = durable;
        }
    }

    /** Position of an operation in flight: after everything logged. */
    private static final long IN_FLIGHT = Long.MAX_VALUE;

    final int blocks;
    /** Per block: the value the operation logged last left (0 = zeros); for reports and the kept/lost counts. */
    final long[] latest;
    /** Per block: the values a power loss may leave (computed from the entries after each change). */
    final long[][] may;
    private final List<Entry>[] entries;
    /** Snapshots acknowledged created and not acknowledged deleted → per block, their legitimate values. */
    final Map<String, long[][]> snapshots = new LinkedHashMap<>();
    /** Snapshots an in-flight or failed create may have made → their content then. */
    final Map<String, long[][]> maybeCreated = new LinkedHashMap<>();
    /** Snapshots an in-flight or failed delete may have removed. */
    final List<String> maybeDeleted = new ArrayList<>();
    /** Positions for the one-at-a-time form of {@link #acknowledged(Op)}. */
    private long logged;

    /** A volume that starts as zeros. */
    Model(int blocks) {
        this(blocks, null);
    }

    /** A volume that starts durably holding {@code content} (a clone of a snapshot), or zeros if null. */
    @SuppressWarnings("unchecked")
    Model(int blocks, long[][] content) {
        this.blocks = blocks;
        this.latest = new long[blocks];
        this.may = new long[blocks][];
        this.entries = new List[blocks];
        for (int b = 0; b < blocks; b++) {
            entries[b] = new ArrayList<>(4);
            long[] c = content == null ? new long[]{0} : content[b];
            for (long v : c) {
                entries[b].add(new Entry(v, -1, 0, true));
            }
            latest[b] = c[0];
            refresh(b);
        }
    }

    /** The legitimate values of block {@code b} after a power loss now (the model's view, for tests). */
    long[] values(int b) {
        return may[b];
    }

    /** An operation acknowledged when nothing else was in flight: logged next, sent after the one before. */
    void acknowledged(Op op) {
        acknowledged(op, logged, logged + 1);
    }

    /**
     * An operation acknowledged: sent when {@code s} records were logged, logged as record {@code p}.
     * Records must come in log order.
     */
    void acknowledged(Op op, long s, long p) {
        logged = Math.max(logged, p);
        switch (op.kind()) {
            case WRITE, TRIM, ZERO -> {
                long v = op.kind() == Workload.Kind.WRITE ? op.value() : 0;
                for (int b = op.block(); b < op.block() + op.count(); b++) {
                    latest[b] = v;
                    entries[b].add(new Entry(v, s, p, op.fua()));
                    if (op.fua()) {
                        prune(b);
                    }
                    refresh(b);
                }
            }
            case FLUSH -> flush(s);
            case SNAP_CREATE -> {
                flush(s);
                snapshots.put(op.snapshot(), may.clone());
            }
            case SNAP_DELETE -> snapshots.remove(op.snapshot());
            case RESTORE -> {
                long[][] content = snapshots.get(op.snapshot());
                for (int b = 0; b < blocks; b++) {
                    entries[b].clear();
                    for (long v : content[b]) {
                        entries[b].add(new Entry(v, s, p, true));
                    }
                    latest[b] = content[b][0];
                    refresh(b);
                }
            }
            default -> {
            }
        }
    }

    /**
     * The operation that may have been in flight when the power went, or that failed: it may have happened, in
     * part or whole.
     */
    void inFlight(Op op) {
        switch (op.kind()) {
            case WRITE, TRIM, ZERO -> {
                long v = op.kind() == Workload.Kind.WRITE ? op.value() : 0;
                for (int b = op.block(); b < op.block() + op.count(); b++) {
                    entries[b].add(new Entry(v, IN_FLIGHT, IN_FLIGHT, false));
                    refresh(b);
                }
            }
            case SNAP_CREATE -> maybeCreated.put(op.snapshot(), may.clone());
            case SNAP_DELETE -> maybeDeleted.add(op.snapshot());
            case RESTORE -> {
                long[][] content = snapshots.get(op.snapshot());
                for (int b = 0; b < blocks; b++) {
                    for (long v : content[b]) {
                        entries[b].add(new Entry(v, IN_FLIGHT, IN_FLIGHT, false));
                    }
                    refresh(b);
                }
            }
            default -> {
            }
        }
    }

    /** A FLUSH sent when {@code s} records were logged: every write logged by then is durable. */
    private void flush(long s) {
        for (int b = 0; b < blocks; b++) {
            boolean changed = false;
            for (Entry e : entries[b]) {
                if (!e.durable && e.p <= s) {
                    e.durable = true;
                    changed = true;
                }
            }
            if (changed) {
                prune(b);
                refresh(b);
            }
        }
    }

    /** Drops the writes that certainly took effect before a durable one. */
    private void prune(int b) {
        long cut = Long.MIN_VALUE;
        for (Entry e : entries[b]) {
            if (e.durable) {
                cut = Math.max(cut, e.s);
            }
        }
        final long c = cut;
        entries[b].removeIf(e -> e.p <= c);
    }

    private void refresh(int b) {
        List<Entry> l = entries[b];
        long[] set = new long[l.size()];
        int n = 0;
        outer:
        for (Entry e : l) {
            for (int i = 0; i < n; i++) {
                if (set[i] == e.value) {
                    continue outer;
                }
            }
            set[n++] = e.value;
        }
        may[b] = n == set.length ? set : java.util.Arrays.copyOf(set, n);
    }
}
