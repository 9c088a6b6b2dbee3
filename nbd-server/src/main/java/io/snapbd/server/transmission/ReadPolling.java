package io.snapbd.server.transmission;

import io.snapbd.nativeio.ReadNow;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.ReadableByteChannel;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * A connection's reader polls its socket for a while before it blocks in read(): a client with one request in
 * flight sends the next one a few tens of microseconds after its answer, and a request caught by polling costs no
 * wake-up (a context switch plus the scheduler's latency: tens of microseconds on a busy or virtual machine, the
 * larger part of a small request's round trip). The rules, and why:
 * <ul>
 * <li>only with more than one CPU: on one (User-Mode Linux) a poll only keeps the client from running;
 * <li>only while this process serves a single connection, none of whose requests is being served or answered by
 * another thread, and by one reader at a time ({@link #POLLING}): then a CPU would otherwise sit idle; with more
 * connections, or a FLUSH in the sync pool, other threads have work, and a poll would take their CPU;
 * <li>a poll that catches nothing makes the next ones rarer: skipped for 1, 3, 7 ... up to {@value #MAX_SKIP} reads,
 * so a client that sends seldom, or from far away, costs almost no polling; a catch polls every read again.
 * </ul>
 * {@value #SPIN_PROPERTY} sets the poll's length in microseconds (default {@value #DEFAULT_SPIN_MICROS}, 0 turns
 * polling off). One instance per connection, used by whoever holds its reading role.
 */
final class ReadPolling {

    static final String SPIN_PROPERTY = "snapbd.read.spinMicros";
    static final long DEFAULT_SPIN_MICROS = 50;
    private static final long SPIN_NANOS = Runtime.getRuntime().availableProcessors() > 1
            ? Math.max(0, Long.getLong(SPIN_PROPERTY, DEFAULT_SPIN_MICROS)) * 1000 : 0;
    /** Readers of this process polling now: at most one. */
    private static final AtomicInteger POLLING = new AtomicInteger();
    private static final int MAX_MISSES = 6;
    static final int MAX_SKIP = (1 << MAX_MISSES) - 1;

    private final long spinNanos;
    private final AtomicInteger gate;
    /** Polls that caught nothing in a row (capped), and reads left before the next poll. */
    private int misses;
    private int skip;

    ReadPolling() {
        this(SPIN_NANOS, POLLING);
    }

    /** {@code gate}: taken (0 to 1) for the length of a poll; a poll is skipped while it is taken. */
    ReadPolling(long spinNanos, AtomicInteger gate) {
        this.spinNanos = spinNanos;
        this.gate = gate;
    }

    /**
     * One read into {@code dst} as {@link java.nio.channels.ReadableByteChannel#read} does it, polling first when the
     * rules allow. {@code idle}: this is the process's only connection and no other thread works for it.
     * {@code boundary}: the read waits for the next request's header. Only those polls back off: the rest of a
     * request (a WRITE's payload, often sent apart from its header) is on its way, and a catch there must not undo the
     * backoff of a client whose next requests come too late for a poll (1 MiB writes at depth 1).
     */
    int read(ReadableByteChannel channel, ByteBuffer dst, boolean idle, boolean boundary) throws IOException {
        if (spinNanos > 0 && idle && channel instanceof ReadNow now && dst.hasRemaining() && (!boundary || pollDue())
                && gate.compareAndSet(0, 1)) {
            int n;
            try {
                n = poll(now, dst);
            } finally {
                gate.set(0);
            }
            if (n != 0) {
                if (boundary) {
                    caught();
                }
                return n;
            }
            if (boundary) {
                missed();
            }
        }
        return channel.read(dst);
    }

    private int poll(ReadNow now, ByteBuffer dst) throws IOException {
        long deadline = System.nanoTime() + spinNanos;
        do {
            int n = now.readNow(dst);
            if (n != 0) {
                return n;
            }
            Thread.onSpinWait();
        } while (System.nanoTime() - deadline < 0);
        return 0;
    }

    /** True when this read should poll; counts down the reads skipped after a miss. */
    boolean pollDue() {
        if (skip > 0) {
            skip--;
            return false;
        }
        return true;
    }

    void caught() {
        misses = 0;
    }

    void missed() {
        misses = Math.min(misses + 1, MAX_MISSES);
        skip = (1 << misses) - 1;
    }

    /** Reads to skip before the next poll (for tests). */
    int skip() {
        return skip;
    }
}
