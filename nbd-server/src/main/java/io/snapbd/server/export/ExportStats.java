package io.snapbd.server.export;

import io.snapbd.server.protocol.Nbd;
import org.HdrHistogram.Histogram;
import org.HdrHistogram.SingleWriterRecorder;

import java.lang.ref.WeakReference;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.concurrent.atomic.AtomicLongArray;
import java.util.concurrent.atomic.AtomicReferenceArray;
import java.util.function.Function;

/**
 * Per-export request statistics: per request type the requests answered, those answered with an error, their
 * bytes, and the latency from the moment the request header was read to the moment its reply was sent (for
 * FLUSH, FUA writes and writes waiting for copy-on-write the reply comes from another thread, later).
 * <p>
 * <b>Recording</b> ({@link #record}) is wait-free, takes no lock and allocates nothing in steady state. Each
 * recording thread owns a {@link Slot} of this export (found through a {@link ThreadLocal}), or a connection does
 * ({@link #openSlot}: its reader threads one at a time): plain counters only that writer writes, and, while latency histograms are on, one HdrHistogram {@link SingleWriterRecorder} per
 * request type it has seen (nanoseconds, {@value #LOWEST_NANOS} ns to one hour, {@value #DIGITS} significant
 * digits, fixed range so that recording never resizes). The first request of a thread on an export registers
 * its slot and the first request of each type creates that recorder: those allocate, once.
 * <p>
 * <b>Reading</b> ({@link #snapshot}, {@link #cumulative}) happens under this object's lock, which only readers and
 * slot registration take: every slot's recorders hand over their interval histogram, which is added to the
 * cumulative histograms kept since the start. A slot whose thread has ended is handed to the next thread that
 * registers (its recorders and counters keep their content); the slots of the other ended threads are retired
 * (their last interval and counters folded into the export's totals, their recorders dropped) at that
 * registration and at every read. So the slots follow the threads alive, not the most ever alive at once: a
 * burst of FLUSH/FUA work runs on as many pool threads as requests in flight (hundreds for 16 clients at
 * depth 32), and their recorders, about 150 MB, were otherwise kept for the server's lifetime
 * (benchmarks/soak.sh found it).
 * <p>
 * Memory: one recorder holds two histograms of about 270 KB (the second from the first reading on); a connection
 * doing reads and writes holds two recorders, about 1.1 MB, however many reader threads it has (a slot per thread
 * made it 1.6 MB with two readers: 1,100 connections no longer fitted in a 1 GiB heap). {@code latency-histograms = off} saves it (counters remain).
 */
public final class ExportStats {

    /** Request types as shown in metrics ({@code op} label) and stats. */
    public enum Op {
        READ("read"), WRITE("write"), FLUSH("flush"), TRIM("trim"), WRITE_ZEROES("write_zeroes"), CACHE("cache"),
        BLOCK_STATUS("block_status"), OTHER("other");

        public final String label;

        Op(String label) {
            this.label = label;
        }

        static Op of(int cmd) {
            return switch (cmd) {
                case Nbd.CMD_READ -> READ;
                case Nbd.CMD_WRITE -> WRITE;
                case Nbd.CMD_FLUSH -> FLUSH;
                case Nbd.CMD_TRIM -> TRIM;
                case Nbd.CMD_WRITE_ZEROES -> WRITE_ZEROES;
                case Nbd.CMD_CACHE -> CACHE;
                case Nbd.CMD_BLOCK_STATUS -> BLOCK_STATUS;
                default -> OTHER;
            };
        }
    }

    private static final Op[] OPS = Op.values();
    private static final int NOPS = OPS.length;

    /** Histogram range: 1 ns to one hour (longer requests are recorded as one hour), 3 significant digits. */
    public static final long LOWEST_NANOS = 1;
    public static final long HIGHEST_NANOS = 3_600_000_000_000L;
    public static final int DIGITS = 3;

    // Counter layout in a slot: [op * FIELDS + field]
    private static final int REQUESTS = 0;
    private static final int ERRORS = 1;
    private static final int BYTES = 2;
    private static final int SUM_NANOS = 3;
    private static final int FIELDS = 4;

    /**
     * What one writer records on this export: a thread (found through {@link #local}), or a connection whose
     * reader threads take turns writing it ({@link #openSlot}). Only that writer writes it (a later owner once it
     * has ended).
     */
    public final class Slot implements AutoCloseable {
        private volatile WeakReference<Thread> owner;   // null: owned by a connection until close()
        private volatile boolean closed;
        final AtomicLongArray counters = new AtomicLongArray(NOPS * FIELDS);
        final AtomicReferenceArray<SingleWriterRecorder> recorders = new AtomicReferenceArray<>(NOPS);
        final Histogram[] interval = new Histogram[NOPS];       // readers only: recycled interval histograms

        private Slot(Thread t) {
            owner = t == null ? null : new WeakReference<>(t);
        }

        boolean ownerGone() {
            if (closed) {
                return true;
            }
            WeakReference<Thread> o = owner;
            if (o == null) {
                return false;       // a connection's, still open
            }
            Thread t = o.get();
            return t == null || !t.isAlive();
        }

        /** Single writer: a plain read of its own value, then an ordered store. No CAS, no allocation. */
        void add(int index, long delta) {
            counters.lazySet(index, counters.get(index) + delta);
        }

        /**
         * One answered request: {@code cmd} an NBD_CMD_ value, {@code length} its length field, {@code nanos} from
         * reading it to sending its reply, {@code ok} false when it was answered with an error (its bytes do not
         * count). Only this slot's writer calls it.
         */
        public void record(int cmd, long length, long nanos, boolean ok) {
            int op = Op.of(cmd).ordinal();
            int base = op * FIELDS;
            long n = nanos < 0 ? 0 : Math.min(nanos, HIGHEST_NANOS);
            add(base + REQUESTS, 1);
            if (ok) {
                add(base + BYTES, length);
            } else {
                add(base + ERRORS, 1);
            }
            if (histograms) {
                add(base + SUM_NANOS, n);
                SingleWriterRecorder r = recorders.get(op);
                if (r == null) {
                    r = new SingleWriterRecorder(LOWEST_NANOS, HIGHEST_NANOS, DIGITS);    // once per writer and type
                    recorders.set(op, r);
                }
                r.recordValue(n);
            }
        }

        /** A connection's slot: its writer is done (everything recorded is visible to the next reading). */
        @Override
        public void close() {
            closed = true;
        }
    }

    private volatile boolean histograms = true;
    private final ThreadLocal<Slot> local = ThreadLocal.withInitial(this::register);
    // Guarded by this: the slots, the cumulative histograms and the reset baseline.
    private final List<Slot> slots = new ArrayList<>();
    private final Histogram[] sinceStart = new Histogram[NOPS];
    private final Histogram[] sinceReset = new Histogram[NOPS];    // after the first reset; null: nothing since
    private boolean resetDone;
    private final long[] baseline = new long[NOPS * FIELDS];
    private final long[] retired = new long[NOPS * FIELDS];     // counters of the slots retired so far
    private long resetMillis = System.currentTimeMillis();
    private final long startMillis = resetMillis;

    public ExportStats() {
    }

    /** Latency histograms on (the default) or off; counters are kept either way. */
    public void setHistograms(boolean on) {
        histograms = on;
    }

    public boolean histograms() {
        return histograms;
    }

    /**
     * One answered request, recorded in the calling thread's slot: {@code cmd} an NBD_CMD_ value, {@code length}
     * its length field, {@code nanos} from reading it to sending its reply, {@code ok} false when it was answered
     * with an error (its bytes do not count).
     */
    public void record(int cmd, long length, long nanos, boolean ok) {
        local.get().record(cmd, length, nanos, ok);
    }

    /**
     * A slot owned by one connection instead of one thread: the connection's reader threads write it one at a time
     * (the caller orders them, e.g. under the slot's monitor), so a connection with two readers holds one set of
     * recorders, not two (a recorder is about 270 KB per histogram). Close it when the connection ends; its numbers
     * stay in the export's totals.
     */
    public synchronized Slot openSlot() {
        retireEnded();
        Slot s = new Slot(null);
        slots.add(s);
        return s;
    }

    /** First request of a thread on this export: reuse the slot of a thread that has ended, else a new one. */
    private synchronized Slot register() {
        Thread me = Thread.currentThread();
        Slot reuse = null;
        for (Slot s : slots) {
            if (s.ownerGone()) {
                reuse = s;
                break;
            }
        }
        if (reuse != null) {
            reuse.owner = new WeakReference<>(me);      // its counters and recorders keep their content
            reuse.closed = false;
            retireEnded();
            return reuse;
        }
        retireEnded();
        Slot s = new Slot(me);
        slots.add(s);
        return s;
    }

    /**
     * Drops the slots of threads that have ended (a thread's end happens-before isAlive() answering false, so
     * everything it recorded is visible): their last interval goes into the cumulative histograms, their
     * counters into {@link #retired}. Caller holds the lock.
     */
    private void retireEnded() {
        for (Iterator<Slot> it = slots.iterator(); it.hasNext(); ) {
            Slot s = it.next();
            if (s.ownerGone()) {
                harvest(s);
                for (int i = 0; i < retired.length; i++) {
                    retired[i] += s.counters.get(i);
                }
                it.remove();
            }
        }
    }

    /** Slots registered so far (threads that recorded at the same time): for tests. */
    synchronized int slotCount() {
        return slots.size();
    }

    // ---- reading ------------------------------------------------------------------------------------------

    /**
     * Moves every recorder's interval into the cumulative histograms and retires the slots of ended threads.
     * Caller holds the lock.
     */
    private void harvest() {
        for (Slot s : slots) {
            harvest(s);
        }
        retireEnded();
    }

    private void harvest(Slot s) {
        for (int op = 0; op < NOPS; op++) {
            SingleWriterRecorder r = s.recorders.get(op);
            if (r == null) {
                continue;
            }
            Histogram h = r.getIntervalHistogram(s.interval[op]);
            s.interval[op] = h;
            if (h.getTotalCount() == 0) {
                continue;
            }
            if (sinceStart[op] == null) {
                sinceStart[op] = newHistogram();
            }
            sinceStart[op].add(h);
            if (resetDone) {
                if (sinceReset[op] == null) {
                    sinceReset[op] = newHistogram();
                }
                sinceReset[op].add(h);
            }
        }
    }

    private static Histogram newHistogram() {
        return new Histogram(LOWEST_NANOS, HIGHEST_NANOS, DIGITS);
    }

    private long[] counterTotals() {
        long[] t = retired.clone();
        for (Slot s : slots) {
            for (int i = 0; i < t.length; i++) {
                t[i] += s.counters.get(i);
            }
        }
        return t;
    }

    /** One request type's numbers, since the start or the last reset. */
    public record OpStats(Op op, long requests, long errors, long bytes, long sumNanos, Histogram latency) {
    }

    /** Every request type's numbers; latencies null when histograms are off or nothing was recorded. */
    public record Snapshot(long sinceMillis, boolean histograms, List<OpStats> ops) {
        public OpStats op(Op op) {
            return ops.get(op.ordinal());
        }
    }

    /**
     * The numbers since the start ({@code sinceReset} false) or since the last {@link #reset} (true), the
     * histograms as copies. With {@code thenReset}, starts a new period right after taking them.
     */
    public synchronized Snapshot snapshot(boolean sinceReset, boolean thenReset) {
        harvest();
        long[] t = counterTotals();
        List<OpStats> ops = new ArrayList<>(NOPS);
        for (int op = 0; op < NOPS; op++) {
            int b = op * FIELDS;
            long[] base = sinceReset ? baseline : new long[NOPS * FIELDS];
            Histogram h = sinceReset && resetDone ? this.sinceReset[op] : sinceStart[op];
            boolean none = h == null || h.getTotalCount() == 0 || !histograms;
            ops.add(new OpStats(OPS[op], t[b + REQUESTS] - base[b + REQUESTS], t[b + ERRORS] - base[b + ERRORS],
                    t[b + BYTES] - base[b + BYTES], t[b + SUM_NANOS] - base[b + SUM_NANOS], none ? null : h.copy()));
        }
        Snapshot snap = new Snapshot(sinceReset ? resetMillis : startMillis, histograms, List.copyOf(ops));
        if (thenReset) {
            resetNow(t);
        }
        return snap;
    }

    /** Starts a new period for {@link #snapshot snapshot(true, …)}; the since-start numbers (metrics) go on. */
    public synchronized void reset() {
        harvest();
        resetNow(counterTotals());
    }

    private void resetNow(long[] totals) {
        System.arraycopy(totals, 0, baseline, 0, totals.length);
        for (Histogram h : sinceReset) {
            if (h != null) {
                h.reset();      // kept: allocated again only for a type first seen after this reset
            }
        }
        resetMillis = System.currentTimeMillis();
        resetDone = true;
    }

    /** Since-start latency of one type, a copy (for metrics); null when nothing was recorded. */
    public synchronized Histogram cumulative(Op op) {
        harvest();
        Histogram h = sinceStart[op.ordinal()];
        return h == null ? null : h.copy();
    }

    /**
     * Applies {@code f} to the since-start latency of one type under the lock, without copying the histogram
     * (f must not keep it); null when nothing was recorded.
     */
    public synchronized <T> T withCumulative(Op op, Function<Histogram, T> f) {
        harvest();
        Histogram h = sinceStart[op.ordinal()];
        return h == null ? null : f.apply(h);
    }

    /** Since-start counters of one type: requests, errors, bytes, sum of recorded nanoseconds. */
    public synchronized long[] counters(Op op) {
        long[] t = counterTotals();
        int b = op.ordinal() * FIELDS;
        return new long[] {t[b + REQUESTS], t[b + ERRORS], t[b + BYTES], t[b + SUM_NANOS]};
    }

    public long bytesRead() {
        return counters(Op.READ)[BYTES];
    }

    public long bytesWritten() {
        return counters(Op.WRITE)[BYTES];
    }
}
