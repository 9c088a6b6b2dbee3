package io.snapbd.server.mirror;

import io.snapbd.engine.mirror.LegIo;
import io.snapbd.engine.mirror.TagStore;
import io.snapbd.engine.mirror.TagTable;
import io.snapbd.server.client.Completion;
import io.snapbd.server.client.NbdClient;
import io.snapbd.server.client.NbdException;
import io.snapbd.server.client.NbdUri;

import java.io.Closeable;
import java.io.EOFException;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.time.Duration;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.ScheduledThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;

/**
 * A mirror leg on any NBD server (snapbd, nbdkit, qemu-nbd, ...): one connection to one export that holds the
 * volume's blocks in {@code [0, volumeSize)} and the leg's tag table in the area right after them,
 * {@code [volumeSize, volumeSize + TABLE_BYTES)}, so the table lives (and survives) exactly where the leg's
 * data does. {@link #blocks()} and {@link #table()} are the two views the engine's mirror code uses.
 *
 * <p>Durability: {@code force()} of either view is {@code NBD_CMD_FLUSH}, which makes every write the server
 * has answered on this connection durable, so an export without FLUSH is refused. Writes are sent without
 * FUA: {@link TagTable} writes then forces (and leaves DONE records unforced on purpose), so FUA would add a
 * sync per DONE record and save nothing a FLUSH does not already do.
 *
 * <p>Refused at {@link #open}, with a message naming the URI: an export smaller than
 * {@link #exportBytes(long)}, a read-only export, one without FLUSH, and one that demands aligned requests
 * (minimum block size above 1: tag table records are 64-byte writes). A bigger export is fine; bytes past the
 * table area are never touched.
 *
 * <p>Threads: both views may be used by any number of threads at once. Each call is split into requests of
 * at most the export's maximum payload, sent one after the other by the calling thread; concurrent calls
 * are pipelined on the one connection (the server may complete them in any order, like concurrent
 * {@code pwrite}s of a file: overlapping concurrent writes have no defined order). Nothing is allocated per
 * call on success. Errors (the server's error replies, a lost connection) become {@link IOException}s naming
 * the URI, the area and the request; after the connection is lost every later call fails the same way: open
 * the leg again once the server is back.
 *
 * <p>Request timeout: a server that stops answering but keeps the connection open (a host gone from the
 * network, a stopped process) would leave callers waiting for ever. A watchdog closes the connection when calls
 * are waiting and no reply at all has arrived for the request timeout (checked every eighth of it, so a call
 * fails after about one timeout); the waiting calls then fail as above, with the timeout as the reason. A slow
 * server that keeps answering something is never cut off.
 */
public final class NbdLeg implements Closeable {

    /** Records per half of the tag table in the export: {@link TagTable#DEFAULT_HALF_RECORDS}. */
    public static final long TABLE_HALF_RECORDS = TagTable.DEFAULT_HALF_RECORDS;
    /** Bytes of the tag table area after the volume's blocks: {@code TagTable.areaBytes(TABLE_HALF_RECORDS)} (2 MiB + 4 KiB). */
    public static final long TABLE_BYTES = TagTable.areaBytes(TABLE_HALF_RECORDS);
    /** How long calls wait without any reply before the connection is given up. */
    public static final Duration DEFAULT_REQUEST_TIMEOUT = Duration.ofSeconds(60);

    private final NbdUri uri;
    private final NbdClient client;
    private final long volumeSize;
    private final int maxChunk;
    private final View blocks;
    private final View table;
    private final AtomicInteger openViews = new AtomicInteger(2);
    /** Calls in progress, and requests answered (or failed) so far: what the watchdog looks at. */
    private final AtomicLong busy = new AtomicLong();
    private final AtomicLong replies = new AtomicLong();
    private final Duration requestTimeout;
    private final ScheduledFuture<?> watchdog;
    /** Watchdog thread only: the reply count it last saw, and since when nothing changed while calls waited. */
    private long seenReplies;
    private long quietSince = System.nanoTime();

    private NbdLeg(NbdUri uri, NbdClient client, long volumeSize, Duration requestTimeout) {
        this.uri = uri;
        this.client = client;
        this.volumeSize = volumeSize;
        this.requestTimeout = requestTimeout;
        this.maxChunk = (int) Math.min(client.blockSize().maximum(), 1 << 30);
        this.blocks = new View(0, volumeSize, false, uri + " (volume blocks [0, " + volumeSize + "))");
        this.table = new View(volumeSize, TABLE_BYTES, true,
                uri + " (tag table area [" + volumeSize + ", " + (volumeSize + TABLE_BYTES) + "))");
        long period = Math.max(1, requestTimeout.toNanos() / 8);
        this.watchdog = Watchdogs.EXECUTOR.scheduleAtFixedRate(this::watch, period, period, TimeUnit.NANOSECONDS);
    }

    /** Smallest export that can hold a leg of a volume of {@code volumeSize} bytes: the blocks, then the table area. */
    public static long exportBytes(long volumeSize) {
        return Math.addExact(volumeSize, TABLE_BYTES);
    }

    /** {@link #open(NbdUri, long, NbdClient.Options, Duration)} with the client's default options and request timeout. */
    public static NbdLeg open(NbdUri uri, long volumeSize) throws IOException {
        return open(uri, volumeSize, NbdClient.Options.defaults(), DEFAULT_REQUEST_TIMEOUT);
    }

    /**
     * Connects to {@code uri} and checks that the export can be a leg of a volume of {@code volumeSize} bytes.
     * {@code options} bound the connection and handshake; {@code requestTimeout} bounds how long calls wait
     * without any reply (see the class comment).
     *
     * @throws IOException naming the URI when the server cannot be reached or the export is refused (too small,
     *                     read-only, no FLUSH, aligned requests only)
     */
    public static NbdLeg open(NbdUri uri, long volumeSize, NbdClient.Options options, Duration requestTimeout)
            throws IOException {
        if (volumeSize <= 0) {
            throw new IllegalArgumentException("volume size must be positive: " + volumeSize);
        }
        if (requestTimeout.isNegative() || requestTimeout.isZero()) {
            throw new IllegalArgumentException("request timeout must be positive: " + requestTimeout);
        }
        long needed = exportBytes(volumeSize);
        NbdClient client;
        try {
            client = NbdClient.connect(uri, options);
        } catch (IOException e) {
            throw new IOException("NBD leg " + uri + ": cannot connect: " + e.getMessage(), e);
        }
        String refusal = null;
        if (client.isReadOnly()) {
            refusal = "the export is read-only; a leg must be writable";
        } else if (!client.canFlush()) {
            refusal = "the server does not offer FLUSH (NBD_FLAG_SEND_FLUSH); a leg needs it to make its tag "
                    + "table and blocks durable";
        } else if (client.size() < needed) {
            refusal = "the export is " + client.size() + " bytes; a leg of a volume of " + volumeSize
                    + " bytes needs at least " + needed + " (the volume's blocks, then a " + TABLE_BYTES
                    + "-byte tag table area)";
        } else if (client.blockSize().minimum() > 1) {
            refusal = "the export demands requests aligned to " + client.blockSize().minimum()
                    + " bytes; a leg needs byte-granular writes (tag table records are 64 bytes)";
        }
        if (refusal != null) {
            client.close();
            throw new IOException("NBD leg " + uri + ": " + refusal);
        }
        return new NbdLeg(uri, client, volumeSize, requestTimeout);
    }

    /** The volume's blocks, {@code [0, volumeSize)} of the export. */
    public LegIo blocks() {
        return blocks;
    }

    /** The tag table's area, {@code [volumeSize, volumeSize + TABLE_BYTES)} of the export. */
    public TagStore table() {
        return table;
    }

    public NbdUri uri() {
        return uri;
    }

    public long volumeSize() {
        return volumeSize;
    }

    /** Size of the whole export (at least {@link #exportBytes(long)} of the volume size). */
    public long exportSize() {
        return client.size();
    }

    /**
     * Zeroes the leg's part of the export, {@code [0, exportBytes(volumeSize))}: the blocks and the table area
     * (WRITE_ZEROES when the server offers it, else writes of zeros), then flushes. What a new leg starts with.
     */
    public void zero() throws IOException {
        long end = exportBytes(volumeSize);
        long p = 0;
        try {
            if (client.canZero()) {
                while (p < end) {
                    long n = Math.min(end - p, 1L << 30);
                    client.writeZeroes(p, n);
                    p += n;
                }
            } else {
                ByteBuffer z = ByteBuffer.allocateDirect((int) Math.min(maxChunk, 1 << 20));
                while (p < end) {
                    int n = (int) Math.min(end - p, z.capacity());
                    z.clear().limit(n);
                    client.write(p, z, false);
                    p += n;
                }
            }
            client.flush();
        } catch (IOException e) {
            throw new IOException("NBD leg " + uri + ": zeroing the leg's " + end + " bytes failed at export offset "
                    + p + ": " + e.getMessage(), e);
        }
    }

    /** Closes both views, then the connection (after outstanding requests). Idempotent. */
    @Override
    public void close() {
        blocks.close();
        table.close();
    }

    private void viewClosed() {
        if (openViews.decrementAndGet() == 0) {
            client.close();         // waits for calls in flight; the watchdog still bounds that wait
            watchdog.cancel(false);
        }
    }

    /** Gives up the connection when calls have waited a whole request timeout without any reply. */
    private void watch() {
        long now = System.nanoTime();
        long r = replies.get();
        if (busy.get() == 0 || r != seenReplies) {
            seenReplies = r;
            quietSince = now;
            return;
        }
        if (now - quietSince >= requestTimeout.toNanos()) {
            client.abort("no reply within " + requestTimeout.toMillis() + " ms (the leg's request timeout); "
                    + "the connection is closed");
        }
    }

    /** One daemon thread for the watchdogs of every NBD leg in the JVM. */
    private static final class Watchdogs {
        static final ScheduledThreadPoolExecutor EXECUTOR = new ScheduledThreadPoolExecutor(1, r -> {
            Thread t = new Thread(r, "nbd-leg-watchdog");
            t.setDaemon(true);
            return t;
        });

        static {
            EXECUTOR.setRemoveOnCancelPolicy(true);
        }
    }

    /**
     * One area of the export: the blocks (reads past the end refused) or the table (reads past the end give
     * zeros, as {@link TagStore} asks). Writes past the end are always refused: they would land in the other
     * area, or past the leg.
     */
    private final class View implements LegIo, TagStore {
        private final long base;
        private final long size;
        private final boolean zeroPastEnd;
        private final String name;
        private final AtomicBoolean closed = new AtomicBoolean();

        View(long base, long size, boolean zeroPastEnd, String name) {
            this.base = base;
            this.size = size;
            this.zeroPastEnd = zeroPastEnd;
            this.name = name;
        }

        @Override
        public long size() {
            return size;
        }

        @Override
        public void read(ByteBuffer dst, long pos) throws IOException {
            int n = dst.remaining();
            if (pos < 0 || (!zeroPastEnd && pos > size - n)) {
                throw new EOFException(name + ": read of " + n + " bytes at " + pos + " is outside [0, " + size + ")");
            }
            int inside = (int) Math.max(0, Math.min(n, size - pos));
            int end = dst.limit();
            try {
                dst.limit(dst.position() + inside);
                transfer(false, dst, pos);
            } finally {
                dst.limit(end);
            }
            while (dst.hasRemaining()) {
                dst.put((byte) 0);
            }
        }

        @Override
        public void write(ByteBuffer src, long pos) throws IOException {
            int n = src.remaining();
            if (pos < 0 || pos > size - n) {
                throw new IOException(name + ": write of " + n + " bytes at " + pos + " is outside [0, " + size + ")");
            }
            transfer(true, src, pos);
        }

        /** Splits {@code buf} into requests the export accepts; on failure the buffer's position is undefined. */
        private void transfer(boolean write, ByteBuffer buf, long pos) throws IOException {
            checkOpen();
            int end = buf.limit();
            long p = pos;
            int n = 0;
            busy.incrementAndGet();
            try {
                while (buf.position() < end) {
                    n = Math.min(maxChunk, end - buf.position());
                    buf.limit(buf.position() + n);
                    try {
                        if (write) {
                            client.write(base + p, buf, false);
                        } else {
                            client.read(base + p, buf);
                        }
                    } finally {
                        replies.incrementAndGet();
                    }
                    p += n;
                }
            } catch (IOException e) {
                throw new IOException(name + ": " + (write ? "write" : "read") + " of " + n + " bytes at " + p
                        + " (export offset " + (base + p) + ") failed: " + e.getMessage(), e);
            } finally {
                buf.limit(end);
                busy.decrementAndGet();
            }
        }

        @Override
        public void force() throws IOException {
            checkOpen();
            busy.incrementAndGet();
            try {
                client.flush();
            } catch (IOException e) {
                throw new IOException(name + ": FLUSH failed: " + e.getMessage(), e);
            } finally {
                replies.incrementAndGet();
                busy.decrementAndGet();
            }
        }

        private void checkOpen() throws IOException {
            if (closed.get()) {
                throw new IOException(name + ": closed");
            }
        }

        /** Writes may be sent without waiting: {@link #submitWrite} (the volume's blocks only; the table writes then forces). */
        @Override
        public boolean asyncWrites() {
            return !zeroPastEnd;
        }

        @Override
        public WriteSlot writeSlot(WriteDone done, int leg) {
            return new AsyncWrite(done, leg);
        }

        /**
         * One WRITE request into the connection's pipeline: {@link NbdClient#submitWrite} puts the bytes on the wire
         * before it returns (the caller's buffer is free at once), the reply completes the slot on the client's
         * reader. A write larger than the export's maximum request is done synchronously (split), then completed.
         */
        @Override
        public void submitWrite(WriteSlot slot, ByteBuffer src, long pos) throws IOException {
            AsyncWrite w = (AsyncWrite) slot;
            int n = src.remaining();
            if (n > maxChunk) {
                write(src, pos);
                w.done.legWritten(w.leg, null);
                return;
            }
            if (pos < 0 || pos > size - n) {
                throw new IOException(name + ": write of " + n + " bytes at " + pos + " is outside [0, " + size + ")");
            }
            checkOpen();
            w.pos = pos;
            w.length = n;
            busy.incrementAndGet();
            try {
                client.submitWrite(base + pos, src, false, 0, w);
            } catch (IOException | RuntimeException e) {
                busy.decrementAndGet();
                throw new IOException(name + ": write of " + n + " bytes at " + pos + " (export offset " + (base + pos)
                        + ") failed: " + e.getMessage(), e);
            }
        }

        /** A reusable completion slot of {@link #submitWrite}: one write in flight at a time. */
        private final class AsyncWrite implements WriteSlot, Completion {
            final WriteDone done;
            final int leg;
            long pos;
            int length;

            AsyncWrite(WriteDone done, int leg) {
                this.done = done;
                this.leg = leg;
            }

            @Override
            public void complete(int error, long tag) {
                replies.incrementAndGet();
                busy.decrementAndGet();
                IOException failure = null;
                if (error != Completion.OK) {
                    IOException lost = client.failure();
                    String why = error == Completion.CONNECTION_FAILED
                            ? "connection lost: " + (lost != null ? lost.getMessage() : "?")
                            : NbdException.errnoName(error);
                    failure = new IOException(name + ": write of " + length + " bytes at " + pos + " (export offset "
                            + (base + pos) + ") failed: " + why);
                }
                done.legWritten(leg, failure);
            }
        }

        @Override
        public String describe() {
            return name;
        }

        /** Closes this view; the connection closes with the last one. */
        @Override
        public void close() {
            if (closed.compareAndSet(false, true)) {
                viewClosed();
            }
        }

        @Override
        public String toString() {
            return name;
        }
    }
}
