package io.snapbd.server.export;

import io.snapbd.server.protocol.Nbd;

import java.util.concurrent.atomic.AtomicLongArray;
import java.util.concurrent.atomic.LongAdder;

/**
 * Per-export request statistics for the metrics endpoint: bytes read and written, and a latency histogram per
 * request type, from the moment the request header was read to the moment its reply was sent (for FLUSH, FUA
 * writes and writes waiting for copy-on-write, the reply comes from another thread, later).
 */
public final class ExportStats {

    /** Request types as shown in metrics ({@code op} label). */
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

    /** Upper bounds of the latency buckets, in seconds (Prometheus {@code le}); the last bucket is +Inf. */
    public static final double[] BUCKET_SECONDS = {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
            0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
    private static final long[] BUCKET_NANOS = new long[BUCKET_SECONDS.length];

    static {
        for (int i = 0; i < BUCKET_SECONDS.length; i++) {
            BUCKET_NANOS[i] = Math.round(BUCKET_SECONDS[i] * 1e9);
        }
    }

    private final LongAdder bytesRead = new LongAdder();
    private final LongAdder bytesWritten = new LongAdder();
    private final Histogram[] latency = new Histogram[Op.values().length];

    public ExportStats() {
        for (int i = 0; i < latency.length; i++) {
            latency[i] = new Histogram();
        }
    }

    /** One answered request: {@code cmd} an NBD_CMD_ value, {@code ok} false when it was answered with an error. */
    public void record(int cmd, long length, long nanos, boolean ok) {
        Op op = Op.of(cmd);
        if (ok && op == Op.READ) {
            bytesRead.add(length);
        } else if (ok && op == Op.WRITE) {
            bytesWritten.add(length);
        }
        latency[op.ordinal()].record(nanos);
    }

    public long bytesRead() {
        return bytesRead.sum();
    }

    public long bytesWritten() {
        return bytesWritten.sum();
    }

    public Histogram latency(Op op) {
        return latency[op.ordinal()];
    }

    /** Fixed buckets; counts are per bucket (not cumulative) and read without a lock, so a scrape may be off by one. */
    public static final class Histogram {
        private final AtomicLongArray buckets = new AtomicLongArray(BUCKET_NANOS.length + 1);
        private final LongAdder sumNanos = new LongAdder();

        void record(long nanos) {
            int i = 0;
            while (i < BUCKET_NANOS.length && nanos > BUCKET_NANOS[i]) {
                i++;
            }
            buckets.incrementAndGet(i);
            sumNanos.add(Math.max(0, nanos));
        }

        /** Cumulative counts for each bound of {@link #BUCKET_SECONDS}, then +Inf (= the total count). */
        public long[] cumulative() {
            long[] c = new long[BUCKET_NANOS.length + 1];
            long run = 0;
            for (int i = 0; i < c.length; i++) {
                run += buckets.get(i);
                c[i] = run;
            }
            return c;
        }

        public double sumSeconds() {
            return sumNanos.sum() / 1e9;
        }
    }
}
