package io.snapbd.server.client;

import io.snapbd.server.protocol.Nbd;
import io.snapbd.server.tls.TlsChannel;

import java.io.IOException;
import java.net.SocketTimeoutException;
import java.net.StandardProtocolFamily;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.ScheduledThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * A client connection to one export of an NBD server (nbdkit, qemu-nbd, nbd-server, snapbd), over TCP or a
 * Unix socket, in plain text or, for {@code nbds://} URIs, over TLS ({@code NBD_OPT_STARTTLS} first; see
 * {@link NbdUri}).
 * <p>
 * {@link #connect} runs the fixed-newstyle handshake: {@code NBD_OPT_STRUCTURED_REPLY},
 * {@code NBD_OPT_SET_META_CONTEXT} for the contexts asked for, then {@code NBD_OPT_GO} (or
 * {@code NBD_OPT_EXPORT_NAME} with servers that lack it). Afterwards any number of threads may issue requests
 * concurrently; up to {@link Options#maxInFlight()} are on the wire at once and the server may answer them in
 * any order.
 * <ul>
 *   <li>The blocking methods ({@link #read}, {@link #write}, {@link #blockStatus}, ...) return when the reply
 *       has arrived and throw {@link NbdException} when the server reports an error.</li>
 *   <li>The asynchronous ones ({@link #submitRead}, {@link #submitWrite}) return once the request is sent and
 *       report through a {@link Completion} on the connection's reader thread. They allocate nothing per
 *       request and block while {@code maxInFlight} requests are outstanding.</li>
 * </ul>
 * When the connection breaks (the server hangs up, a protocol violation, an I/O error) every request in
 * flight fails with an {@link IOException} (or {@link Completion#CONNECTION_FAILED}) and the client is
 * unusable; {@link #failure()} says why. {@link #close()} waits for outstanding requests, then sends
 * {@code NBD_CMD_DISC}.
 */
public final class NbdClient implements AutoCloseable {

    /** Flags of {@link #writeZeroes}. */
    public enum ZeroFlag {
        /** Durable before the reply ({@code NBD_CMD_FLAG_FUA}); needs {@link #canFua()}. */
        FUA,
        /** Keep the range allocated ({@code NBD_CMD_FLAG_NO_HOLE}). */
        NO_HOLE,
        /** Fail with ENOTSUP rather than zero slowly ({@code NBD_CMD_FLAG_FAST_ZERO}); needs {@link #canFastZero()}. */
        FAST_ZERO
    }

    /** Connection settings; immutable, each {@code with...} returns a copy. */
    public static final class Options {

        private static final Options DEFAULTS = new Options(true, List.of(), Duration.ofSeconds(30), 64);

        private final boolean structuredReplies;
        private final List<String> metaContexts;
        private final Duration connectTimeout;
        private final int maxInFlight;

        private Options(boolean structuredReplies, List<String> metaContexts, Duration connectTimeout, int maxInFlight) {
            this.structuredReplies = structuredReplies;
            this.metaContexts = metaContexts;
            this.connectTimeout = connectTimeout;
            this.maxInFlight = maxInFlight;
        }

        /** Structured replies on, no metadata contexts, 30 s connect timeout, 64 requests in flight. */
        public static Options defaults() {
            return DEFAULTS;
        }

        /** Whether to negotiate structured replies (needed for holes in reads and for block status). */
        public Options withStructuredReplies(boolean on) {
            return new Options(on, metaContexts, connectTimeout, maxInFlight);
        }

        /** Metadata contexts to select, e.g. {@code base:allocation}, {@code qemu:dirty-bitmap:b0}. */
        public Options withMetaContexts(String... names) {
            for (String n : names) {
                if (n == null || n.isEmpty()) {
                    throw new IllegalArgumentException("empty metadata context name");
                }
            }
            return new Options(structuredReplies, List.of(names), connectTimeout, maxInFlight);
        }

        /**
         * Bounds connecting plus the handshake, and how long {@link #close()} waits for the server to hang up
         * after {@code NBD_CMD_DISC}.
         */
        public Options withConnectTimeout(Duration timeout) {
            if (timeout.isNegative() || timeout.isZero()) {
                throw new IllegalArgumentException("connect timeout must be positive: " + timeout);
            }
            return new Options(structuredReplies, metaContexts, timeout, maxInFlight);
        }

        /** Requests on the wire at once; submitting more waits. */
        public Options withMaxInFlight(int n) {
            if (n < 1 || n > 1 << 16) {
                throw new IllegalArgumentException("max in flight must be in 1..65536: " + n);
            }
            return new Options(structuredReplies, metaContexts, connectTimeout, n);
        }

        public boolean structuredReplies() {
            return structuredReplies;
        }

        public List<String> metaContexts() {
            return metaContexts;
        }

        public Duration connectTimeout() {
            return connectTimeout;
        }

        public int maxInFlight() {
            return maxInFlight;
        }
    }

    private final NbdUri uri;
    private final ClientHandshake.Result export;
    private final Duration closeGrace;
    private final long maxPayload;
    private final Pipeline pipeline;

    private NbdClient(NbdUri uri, SocketChannel channel, TlsChannel tls, ClientHandshake.Result export, Options options) {
        this.uri = uri;
        this.export = export;
        this.closeGrace = options.connectTimeout;
        this.maxPayload = Math.min(export.blockSize().maximum(), Integer.MAX_VALUE - 8);
        this.pipeline = new Pipeline(channel, tls, uri.toString(), export.structuredReplies(),
                new HashSet<>(export.metaContexts().values()), options.maxInFlight);
    }

    // ---- connecting ------------------------------------------------------------------------------------------

    /** Connects with {@link Options#defaults()}. */
    public static NbdClient connect(NbdUri uri) throws IOException {
        return connect(uri, Options.defaults());
    }

    /**
     * Connects to the URI's export and negotiates what {@code options} ask for.
     *
     * @throws SocketTimeoutException when connecting and the handshake take longer than the connect timeout
     * @throws IOException            when the server refuses the export or breaks the protocol
     */
    public static NbdClient connect(NbdUri uri, Options options) throws IOException {
        Objects.requireNonNull(options, "options");
        SocketChannel channel = openChannel(uri);
        TlsChannel[] tls = new TlsChannel[1];
        ClientHandshake.Result result = withDeadline(uri, channel, options.connectTimeout, hs -> {
            hs.greet();
            tls[0] = hs.tls();
            boolean structured = options.structuredReplies && hs.structuredReplies();
            // Metadata contexts need structured replies; without them every context is simply unavailable.
            Map<String, Integer> contexts = structured && !options.metaContexts.isEmpty()
                    ? hs.setMetaContexts(uri.exportName(), options.metaContexts) : Map.of();
            ClientHandshake.Result go = hs.go(uri.exportName(), structured, contexts);
            return go != null ? go : hs.exportName(uri.exportName(), structured, contexts);
        });
        NbdClient client = new NbdClient(uri, channel, tls[0], result, options);
        client.pipeline.start();
        return client;
    }

    /** The exports the server lists ({@code NBD_OPT_LIST}); the URI's export name is ignored. */
    public static List<ExportEntry> list(NbdUri uri) throws IOException {
        return list(uri, Options.defaults());
    }

    /** {@link #list(NbdUri)} with the connect timeout of {@code options}. */
    public static List<ExportEntry> list(NbdUri uri, Options options) throws IOException {
        try (SocketChannel channel = openChannel(uri)) {
            return withDeadline(uri, channel, options.connectTimeout, hs -> {
                hs.greet();
                List<ExportEntry> exports = hs.list();
                hs.abort();
                return exports;
            });
        }
    }

    private interface Step<T> {
        T run(ClientHandshake handshake) throws IOException;
    }

    private static SocketChannel openChannel(NbdUri uri) throws IOException {
        return uri.transport() == NbdUri.Transport.UNIX ? SocketChannel.open(StandardProtocolFamily.UNIX) : SocketChannel.open();
    }

    /**
     * Connects {@code channel} and runs {@code step} under a deadline: a timer closes the channel when it
     * expires, which makes any blocked connect, read or write throw. The channel is closed on failure.
     */
    private static <T> T withDeadline(NbdUri uri, SocketChannel channel, Duration timeout, Step<T> step) throws IOException {
        AtomicInteger state = new AtomicInteger();      // 0 running, 1 finished, 2 expired
        ScheduledFuture<?> timer = Deadlines.EXECUTOR.schedule(() -> {
            if (state.compareAndSet(0, 2)) {
                closeQuietly(channel);
            }
        }, timeout.toNanos(), TimeUnit.NANOSECONDS);
        try {
            ClientHandshake.connect(channel, uri);
            T result = step.run(new ClientHandshake(channel, uri));
            if (!state.compareAndSet(0, 1)) {
                throw new IOException("the deadline expired");
            }
            return result;
        } catch (IOException | RuntimeException e) {
            closeQuietly(channel);
            if (state.get() == 2) {
                SocketTimeoutException t = new SocketTimeoutException(uri + ": no NBD handshake within " + timeout);
                t.initCause(e);
                throw t;
            }
            throw e;
        } finally {
            timer.cancel(false);
        }
    }

    /** One daemon thread for every handshake deadline in the JVM. */
    private static final class Deadlines {
        static final ScheduledThreadPoolExecutor EXECUTOR = new ScheduledThreadPoolExecutor(1, r -> {
            Thread t = new Thread(r, "nbd-client-deadlines");
            t.setDaemon(true);
            return t;
        });

        static {
            EXECUTOR.setRemoveOnCancelPolicy(true);
        }
    }

    private static void closeQuietly(SocketChannel channel) {
        try {
            channel.close();
        } catch (IOException e) {
            // closing is all we wanted
        }
    }

    // ---- what was negotiated ---------------------------------------------------------------------------------

    public NbdUri uri() {
        return uri;
    }

    /** The export's name as the server reports it ({@code NBD_INFO_NAME}), else as requested. */
    public String exportName() {
        return export.exportName();
    }

    /** The server's description of the export ({@code NBD_INFO_DESCRIPTION}), or {@code ""}. */
    public String description() {
        return export.description();
    }

    /** Size of the export in bytes. */
    public long size() {
        return export.size();
    }

    /** The raw transmission flags ({@code NBD_FLAG_*}). */
    public int transmissionFlags() {
        return export.flags();
    }

    public boolean isReadOnly() {
        return has(Nbd.FLAG_READ_ONLY);
    }

    public boolean canFlush() {
        return has(Nbd.FLAG_SEND_FLUSH);
    }

    public boolean canFua() {
        return has(Nbd.FLAG_SEND_FUA);
    }

    public boolean isRotational() {
        return has(Nbd.FLAG_ROTATIONAL);
    }

    public boolean canTrim() {
        return has(Nbd.FLAG_SEND_TRIM);
    }

    public boolean canZero() {
        return has(Nbd.FLAG_SEND_WRITE_ZEROES);
    }

    public boolean canFastZero() {
        return has(Nbd.FLAG_SEND_FAST_ZERO);
    }

    public boolean canDf() {
        return has(Nbd.FLAG_SEND_DF);
    }

    /** Whether other connections to the export see this one's flushed writes ({@code NBD_FLAG_CAN_MULTI_CONN}). */
    public boolean canMultiConn() {
        return has(Nbd.FLAG_CAN_MULTI_CONN);
    }

    public boolean canCache() {
        return has(Nbd.FLAG_SEND_CACHE);
    }

    private boolean has(int flag) {
        return (export.flags() & flag) != 0;
    }

    public BlockSize blockSize() {
        return export.blockSize();
    }

    public boolean structuredReplies() {
        return export.structuredReplies();
    }

    /**
     * The metadata contexts the server selected, name to id. A context that was asked for but is missing here
     * is not available on this server or export.
     */
    public Map<String, Integer> metaContexts() {
        return export.metaContexts();
    }

    public int maxInFlight() {
        return pipeline.capacity();
    }

    /** How many reads were answered with holes ({@code NBD_REPLY_TYPE_OFFSET_HOLE} chunks) so far; for tests. */
    long holeChunks() {
        return pipeline.holeChunks();
    }

    /** Why the connection failed, or {@code null} while it works (or after a clean close). */
    public IOException failure() {
        return pipeline.failure();
    }

    @Override
    public String toString() {
        return "NbdClient[" + uri + ", " + export.size() + " bytes]";
    }

    // ---- blocking requests -----------------------------------------------------------------------------------

    /**
     * Reads {@code dst.remaining()} bytes at {@code offset}; holes arrive as zeroes. On success the buffer's
     * position moves to its limit; on failure it stays and the content is undefined.
     */
    public void read(long offset, ByteBuffer dst) throws IOException {
        Request r = readRequest(offset, dst);
        call(r, 0, null);
    }

    /** Writes {@code src.remaining()} bytes at {@code offset}; the buffer is consumed. */
    public void write(long offset, ByteBuffer src, boolean fua) throws IOException {
        int flags = fuaFlag(fua);
        Request r = pipeline.acquire(Nbd.CMD_WRITE, offset, checkData(offset, src));
        call(r, flags, src);
    }

    /** Writes zeroes to {@code [offset, +length)} ({@code NBD_CMD_WRITE_ZEROES}); needs {@link #canZero()}. */
    public void writeZeroes(long offset, long length, ZeroFlag... flags) throws IOException {
        require(canZero(), "NBD_FLAG_SEND_WRITE_ZEROES", "WRITE_ZEROES");
        int f = 0;
        for (ZeroFlag flag : flags) {
            switch (flag) {
                case FUA:
                    f |= fuaFlag(true);
                    break;
                case NO_HOLE:
                    f |= Nbd.CMD_FLAG_NO_HOLE;
                    break;
                case FAST_ZERO:
                    require(canFastZero(), "NBD_FLAG_SEND_FAST_ZERO", "FAST_ZERO");
                    f |= Nbd.CMD_FLAG_FAST_ZERO;
                    break;
                default:
                    throw new AssertionError(flag);
            }
        }
        call(pipeline.acquire(Nbd.CMD_WRITE_ZEROES, offset, checkRange(offset, length)), f, null);
    }

    /** Discards {@code [offset, +length)} ({@code NBD_CMD_TRIM}); needs {@link #canTrim()}. */
    public void trim(long offset, long length, boolean fua) throws IOException {
        require(canTrim(), "NBD_FLAG_SEND_TRIM", "TRIM");
        int flags = fuaFlag(fua);
        call(pipeline.acquire(Nbd.CMD_TRIM, offset, checkRange(offset, length)), flags, null);
    }

    /** Makes every write that has been answered durable ({@code NBD_CMD_FLUSH}); needs {@link #canFlush()}. */
    public void flush() throws IOException {
        require(canFlush(), "NBD_FLAG_SEND_FLUSH", "FLUSH");
        call(pipeline.acquire(Nbd.CMD_FLUSH, 0, 0), 0, null);
    }

    /** Asks the server to prefetch {@code [offset, +length)} ({@code NBD_CMD_CACHE}); needs {@link #canCache()}. */
    public void cache(long offset, long length) throws IOException {
        require(canCache(), "NBD_FLAG_SEND_CACHE", "CACHE");
        call(pipeline.acquire(Nbd.CMD_CACHE, offset, checkRange(offset, length)), 0, null);
    }

    /**
     * The extents of one selected metadata context from {@code offset} on ({@code NBD_CMD_BLOCK_STATUS}). The
     * server may describe less than {@code length} (ask again from the end of the last extent) and the last
     * extent may reach past it; with {@code reqOne} it describes exactly one extent.
     *
     * @throws UnsupportedOperationException when the context was not selected during the handshake
     */
    public List<Extent> blockStatus(String context, long offset, long length, boolean reqOne) throws IOException {
        Integer id = export.metaContexts().get(context);
        if (id == null) {
            throw new UnsupportedOperationException(uri + ": metadata context " + context + " is not available on this "
                    + "connection (selected: " + export.metaContexts().keySet() + ")");
        }
        Request r = pipeline.acquire(Nbd.CMD_BLOCK_STATUS, offset, checkRange(offset, length));
        List<Extent> extents = new ArrayList<>();
        r.contextId = id;
        r.extents = extents;
        r.nextExtentOffset = offset;
        call(r, reqOne ? Nbd.CMD_FLAG_REQ_ONE : 0, null);
        return Collections.unmodifiableList(extents);
    }

    private void call(Request r, int flags, ByteBuffer payload) throws IOException {
        r.waiter = Thread.currentThread();
        pipeline.send(r, flags, payload);
        pipeline.await(r);
        try {
            if (r.lost) {
                IOException cause = pipeline.failure();
                throw new IOException(r.describe() + " was lost: " + (cause == null ? "closed" : cause.getMessage()), cause);
            }
            if (r.error != 0) {
                throw new NbdException(r.error, uri + ": " + r.describe(), r.message);
            }
        } finally {
            pipeline.release(r);
        }
    }

    // ---- asynchronous requests -------------------------------------------------------------------------------

    /**
     * Sends a READ of {@code dst.remaining()} bytes at {@code offset}; {@code completion} hears of it with
     * {@code tag}. The buffer belongs to the client until then: on success its position is at its limit.
     * Blocks while {@link #maxInFlight()} requests are outstanding.
     *
     * @throws IOException only when the request was not sent (the client is closed or failed); otherwise the
     *                     completion is called exactly once
     */
    public void submitRead(long offset, ByteBuffer dst, long tag, Completion completion) throws IOException {
        Objects.requireNonNull(completion, "completion");
        Request r = readRequest(offset, dst);
        r.completion = completion;
        r.tag = tag;
        pipeline.send(r, 0, null);
    }

    /**
     * Sends a WRITE of {@code src.remaining()} bytes at {@code offset}. The data is on the wire when this
     * returns, so the buffer may be reused at once. Blocks while {@link #maxInFlight()} requests are
     * outstanding.
     *
     * @throws IOException only when the request was not sent; otherwise the completion is called exactly once
     */
    public void submitWrite(long offset, ByteBuffer src, boolean fua, long tag, Completion completion) throws IOException {
        Objects.requireNonNull(completion, "completion");
        int flags = fuaFlag(fua);
        Request r = pipeline.acquire(Nbd.CMD_WRITE, offset, checkData(offset, src));
        r.completion = completion;
        r.tag = tag;
        pipeline.send(r, flags, src);
    }

    private Request readRequest(long offset, ByteBuffer dst) throws IOException {
        if (dst.isReadOnly()) {
            throw new IllegalArgumentException("cannot read into a read-only buffer");
        }
        int n = checkData(offset, dst);
        Request r = pipeline.acquire(Nbd.CMD_READ, offset, n);
        r.buffer = dst;
        r.bufferStart = dst.position();
        r.bufferEnd = dst.limit();
        return r;
    }

    // ---- checks ----------------------------------------------------------------------------------------------

    /** READ/WRITE payloads: 1 byte up to the server's maximum block size. */
    private int checkData(long offset, ByteBuffer buffer) {
        int n = buffer.remaining();
        if (n == 0) {
            throw new IllegalArgumentException("empty buffer: zero-length requests are not sent (their effect is unspecified)");
        }
        if (n > maxPayload) {
            throw new IllegalArgumentException(n + " bytes exceed the export's maximum request size of " + maxPayload
                    + " bytes; split the request");
        }
        checkRange(offset, n);
        return n;
    }

    /** Ranges of commands without payload: the length field is 32 bits unsigned. */
    private static long checkRange(long offset, long length) {
        if (offset < 0) {
            throw new IllegalArgumentException("negative offset " + offset);
        }
        if (length <= 0 || length > 0xffffffffL) {
            throw new IllegalArgumentException("length " + length + " is outside 1..4294967295");
        }
        if (offset + length < 0) {
            throw new IllegalArgumentException("offset " + offset + " + length " + length + " overflows");
        }
        return length;
    }

    private int fuaFlag(boolean fua) {
        if (fua) {
            require(canFua(), "NBD_FLAG_SEND_FUA", "FUA");
            return Nbd.CMD_FLAG_FUA;
        }
        return 0;
    }

    /** The spec forbids using a feature the server did not advertise: refuse before sending. */
    private void require(boolean advertised, String flag, String what) {
        if (!advertised) {
            throw new UnsupportedOperationException(uri + ": the server does not offer " + what + " (" + flag + " is not set)");
        }
    }

    // ---- closing ---------------------------------------------------------------------------------------------

    /**
     * Fails the connection now, e.g. because the server stopped answering: every request in flight completes as
     * lost with {@code why} (after the URI) as the reason, and later ones are refused. For callers that bound how
     * long they wait for a reply; the client itself never times out a request. Idempotent (the first reason stays).
     */
    public void abort(String why) {
        pipeline.abort(new IOException(uri + ": " + why));
    }

    /**
     * Waits for outstanding requests, sends {@code NBD_CMD_DISC} and closes the socket once the server has hung
     * up (or after the connect timeout). Idempotent; must not be called from a {@link Completion}.
     */
    @Override
    public void close() {
        pipeline.close(closeGrace.toMillis());
    }
}
