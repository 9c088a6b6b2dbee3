package io.snapbd.bench.latency;

import io.snapbd.server.client.Completion;
import io.snapbd.server.client.NbdClient;
import org.HdrHistogram.Histogram;
import org.HdrHistogram.SingleWriterRecorder;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.SplittableRandom;
import java.util.concurrent.locks.LockSupport;
import java.util.function.BooleanSupplier;

/**
 * Drives one NBD connection. Its thread submits requests; replies come back on the client's reader thread,
 * which records each latency into this connection's recorders (so each recorder has a single writer) and
 * frees the request's slot.
 *
 * <p>Closed loop: {@code depth} requests are kept in flight, latency is reply time − send time. Open loop: a
 * request is due every {@code intervalNanos}; latency is measured from when it was <em>due</em>, not from
 * when it could be sent, so a stalled server is charged for the requests it held up (coordinated omission
 * correction). The time from the actual send is kept separately as service time.
 */
final class ConnectionWorker implements Completion, Runnable {

    /** Latencies are recorded in nanoseconds, up to an hour, 3 significant digits. */
    static final long HIGHEST_NANOS = 3_600_000_000_000L;

    private final NbdClient client;
    private final Workload workload;
    private final int blockSize;
    private final long firstOffset;
    private final long intervalNanos;
    private final long opsLimit;
    private final SlotQueue free;
    private final long[] due;
    private final long[] sent;
    private final boolean[] isRead;
    private final ByteBuffer[] readBuffers;
    private final ByteBuffer writeBuffer;
    private final SplittableRandom random;
    private final BlockPermutation permutation;
    private final long stride;
    private long writeIndex;
    private final long seqFirstBlock;
    private final long seqBlocks;
    private final long rangeBlocks;
    private final long warmOffset;           // warm-up range (0 blocks: the warm-up uses the measured range)
    private final long warmBlocks;
    private final BooleanSupplier stopped = this::stopped;

    final SingleWriterRecorder writeLatency = recorder();
    final SingleWriterRecorder readLatency = recorder();
    final SingleWriterRecorder writeService = recorder();
    final SingleWriterRecorder readService = recorder();

    private volatile boolean stop;
    private volatile long startNanos;
    private volatile long completed;     // reader thread only writes
    private volatile long errors;        // reader thread only writes
    private volatile int lastError;
    private volatile long issued;
    private volatile long measuredIssued;    // requests sent in the measured phase
    /** WARM_UP, then MEASURE; PAUSED in between when the warm-up has its own range (see {@link #pause()}). */
    private volatile int phase = WARM_UP;
    private volatile boolean parked;
    static final int WARM_UP = 0, PAUSED = 1, MEASURE = 2;
    private volatile Throwable failure;
    private Thread thread;

    /**
     * @param index       this connection's number among {@code connections}: it takes every
     *                    {@code connections}-th position of the shared permutation, or its own share of a
     *                    sequential range
     * @param slots       requests that may be in flight (the queue depth in closed loop)
     * @param warmOffset  start of the range the warm-up uses instead of the measured one ({@code warmBytes} 0:
     *                    the measured range, and the warm-up counts against {@code opsLimit}); random offsets
     */
    ConnectionWorker(NbdClient client, Workload workload, int blockSize, long rangeOffset, long rangeBytes,
                     long warmOffset, long warmBytes,
                     int index, int connections, int slots, long intervalNanos, long opsLimit, long seed) {
        this.client = client;
        this.workload = workload;
        this.blockSize = blockSize;
        this.firstOffset = rangeOffset;
        this.intervalNanos = intervalNanos;
        this.opsLimit = opsLimit;
        this.free = new SlotQueue(slots);
        this.due = new long[slots];
        this.sent = new long[slots];
        this.isRead = new boolean[slots];
        this.rangeBlocks = rangeBytes / blockSize;
        this.warmOffset = warmOffset;
        this.warmBlocks = warmBytes / blockSize;
        this.readBuffers = new ByteBuffer[workload.readPercent > 0 ? slots : 0];
        for (int i = 0; i < readBuffers.length; i++) {
            readBuffers[i] = ByteBuffer.allocateDirect(blockSize);
        }
        this.random = new SplittableRandom(seed * 31 + index);
        this.writeBuffer = ByteBuffer.allocateDirect(blockSize);
        byte[] data = new byte[blockSize];
        random.nextBytes(data); // incompressible, and different per connection
        writeBuffer.put(data).flip();
        this.permutation = new BlockPermutation(rangeBlocks, seed);
        this.stride = connections;
        this.writeIndex = index;
        this.seqBlocks = rangeBlocks / connections;
        this.seqFirstBlock = seqBlocks * index;
        if (seqBlocks == 0 && !workload.random) {
            throw new IllegalArgumentException("range too small for " + connections + " sequential writers");
        }
    }

    private static SingleWriterRecorder recorder() {
        return new SingleWriterRecorder(1, HIGHEST_NANOS, 3);
    }

    void start(long startNanos, String name) {
        this.startNanos = startNanos;
        thread = new Thread(this, name);
        thread.setDaemon(true);
        thread.start();
    }

    void stop() {
        stop = true;
        if (thread != null) {
            LockSupport.unpark(thread);
        }
    }

    void join() throws InterruptedException {
        if (thread != null) {
            thread.join();
        }
    }

    boolean stopped() {
        return stop;
    }

    boolean finished() {
        return thread != null && !thread.isAlive();
    }

    long completed() {
        return completed;
    }

    long issued() {
        return issued;
    }

    long errors() {
        return errors;
    }

    int lastError() {
        return lastError;
    }

    Throwable failure() {
        return failure;
    }

    long measuredIssued() {
        return measuredIssued;
    }

    /** Stops sending until {@link #measure()}; {@link #quiet()} tells when nothing is in flight any more. */
    void pause() {
        phase = PAUSED;
    }

    /** True once paused with no request in flight. */
    boolean quiet() {
        return parked && inFlight() == 0;
    }

    /** Ends the warm-up: from now on requests go to the measured range and count against the limit. */
    void measure() {
        phase = MEASURE;
        if (thread != null) {
            LockSupport.unpark(thread);
        }
    }

    /** Requests that have been sent and not answered yet. */
    long inFlight() {
        return issued - completed;
    }

    @Override
    public void run() {
        try {
            long next = startNanos;
            long n = 0;             // requests counted against the limit
            long all = 0;
            while (!stop) {
                boolean warm = warmBlocks > 0 && phase != MEASURE;
                if (!warm && opsLimit > 0 && n >= opsLimit) {
                    break;
                }
                if (intervalNanos > 0) {
                    waitUntil(next);
                }
                int slot = free.take(stopped);
                if (slot < 0) {
                    break;
                }
                if (phase == PAUSED) {
                    free.put(slot);
                    awaitMeasure();
                    next = System.nanoTime();       // open loop: the schedule restarts after the pause
                    continue;
                }
                warm = warmBlocks > 0 && phase != MEASURE;
                boolean read = workload.readPercent > 0 && random.nextInt(100) < workload.readPercent;
                long offset = warm ? warmOffset + random.nextLong(warmBlocks) * blockSize
                        : firstOffset + (read ? readBlock() : writeBlock()) * blockSize;
                long now = System.nanoTime();
                due[slot] = intervalNanos > 0 ? next : now;
                sent[slot] = now;
                isRead[slot] = read;
                issued = ++all;
                if (!warm) {
                    measuredIssued = n + 1;
                }
                if (read) {
                    ByteBuffer b = readBuffers[slot];
                    b.clear();
                    client.submitRead(offset, b, slot, this);
                } else {
                    writeBuffer.rewind();
                    client.submitWrite(offset, writeBuffer, false, slot, this);
                }
                if (!warm) {
                    n++;
                }
                next += intervalNanos;
            }
        } catch (IOException | RuntimeException e) {
            failure = e;
        }
    }

    private void awaitMeasure() {
        parked = true;
        while (phase == PAUSED && !stop) {
            LockSupport.park(this);
        }
        parked = false;
    }

    private long readBlock() {
        return random.nextLong(rangeBlocks);
    }

    private long writeBlock() {
        long i = writeIndex;
        writeIndex += stride;
        if (workload.random) {
            return permutation.block(i);
        }
        return seqFirstBlock + (i / stride) % seqBlocks;
    }

    /** Sleeps most of the way, then spins the last stretch: parking alone overshoots by tens of µs. */
    private void waitUntil(long deadline) {
        long left;
        while (!stop && (left = deadline - System.nanoTime()) > 0) {
            if (left > 120_000) {
                LockSupport.parkNanos(left - 100_000);
            } else {
                Thread.onSpinWait();
            }
        }
    }

    @Override
    public void complete(int error, long tag) {
        long now = System.nanoTime();
        int slot = (int) tag;
        if (error == OK) {
            long latency = Math.min(HIGHEST_NANOS, Math.max(1, now - due[slot]));
            long service = Math.min(HIGHEST_NANOS, Math.max(1, now - sent[slot]));
            if (isRead[slot]) {
                readLatency.recordValue(latency);
                readService.recordValue(service);
            } else {
                writeLatency.recordValue(latency);
                writeService.recordValue(service);
            }
        } else {
            lastError = error;
            errors = errors + 1;
            if (error == CONNECTION_FAILED) {
                stop = true;
            }
        }
        completed = completed + 1;
        free.put(slot);
    }

    /** Drops what was recorded so far (end of warm-up). */
    void discard() {
        writeLatency.reset();
        readLatency.reset();
        writeService.reset();
        readService.reset();
    }

    /** What was recorded since the last call or {@link #discard()}, added into the given histograms. */
    void drainInto(Histogram write, Histogram read, Histogram writeSvc, Histogram readSvc) {
        write.add(writeLatency.getIntervalHistogram());
        read.add(readLatency.getIntervalHistogram());
        writeSvc.add(writeService.getIntervalHistogram());
        readSvc.add(readService.getIntervalHistogram());
    }
}
