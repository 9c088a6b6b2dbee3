package io.snapbd.server.transmission;

import io.snapbd.engine.BlockDevice;
import io.snapbd.engine.io.ByteSink;
import io.snapbd.server.export.MetaContext;
import io.snapbd.server.protocol.BlockStatusChunk;
import io.snapbd.server.protocol.ErrorChunk;
import io.snapbd.server.protocol.Nbd;
import io.snapbd.server.protocol.OffsetDataChunk;
import io.snapbd.server.protocol.OffsetHoleChunk;
import io.snapbd.server.protocol.SimpleReplyHeader;
import io.snapbd.server.protocol.StructuredReplyHeader;
import io.snapbd.server.protocol.Wire;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.GatheringByteChannel;
import java.util.concurrent.locks.ReentrantLock;
import java.util.function.BooleanSupplier;

/**
 * Every reply of one connection goes out through one method per kind (as nbdkit's {@code send_simple_reply},
 * {@code send_structured_reply_read}, {@code send_structured_reply_error}, ...), encoded by the flyweights of
 * {@code protocol/}. A per-connection send lock keeps replies whole when the connection's reader threads and the
 * FLUSH/FUA pool answer at the same time; no lock is shared with other connections. Every reply is encoded and
 * sent under that lock, so its buffers are shared by all threads. Buffers are reused: nothing is allocated per
 * reply except the text of an error message. A READ's data is read with the answering thread's engine session.
 * Change tasks that find the lock taken leave their simple reply for its holder, which sends them all in one
 * system call as it releases it ({@link #sendSimpleReplyOrLeave}).
 *
 * <p>Gathering: while the connection's reader thread answers a request and more of the request stream is already
 * received ({@link #reader}'s {@code queued}), its reply is appended to a per-connection batch instead of being
 * sent, READ payloads up to {@link #GATHER_MAX} copied from the device; the batch goes out in one system call when
 * the reader is about to wait for input ({@link #flush()}), when it is full, or in front of the next reply sent
 * directly by any thread (one {@code writev} of batch, header and payload). A reply with nothing received behind
 * it is never held back. Only the thread holding the connection's reading role gathers; other threads (the other
 * reader, the sync pool) always send at once; a reply is always whole in the stream.
 */
final class Replies {

    /** Most extent descriptors in one BLOCK_STATUS chunk. */
    static final int MAX_EXTENTS = 1024;

    private final GatheringByteChannel out;
    private final BlockDevice device;
    private final String exportName;
    private final ReentrantLock lock = new ReentrantLock();

    /** Simple replies and data/hole chunk headers, written under the lock. */
    private final ByteBuffer header = ByteBuffer.allocateDirect(StructuredReplyHeader.BYTES + OffsetHoleChunk.BYTES);
    private final SimpleReplyHeader simple = new SimpleReplyHeader().wrap(header);
    private final StructuredReplyHeader chunk = new StructuredReplyHeader().wrap(header);
    private final OffsetHoleChunk hole = new OffsetHoleChunk().wrap(header, StructuredReplyHeader.BYTES);

    /** Error and BLOCK_STATUS chunks, built under the lock. */
    private final ByteBuffer metadata = ByteBuffer.allocateDirect(StructuredReplyHeader.BYTES
            + Math.max(ErrorChunk.BYTES + ErrorChunk.MAX_MESSAGE_BYTES, BlockStatusChunk.length(MAX_EXTENTS)));
    private final StructuredReplyHeader metadataChunk = new StructuredReplyHeader().wrap(metadata);
    private final ErrorChunk error = new ErrorChunk().wrap(metadata, StructuredReplyHeader.BYTES);
    private final BlockStatusChunk status = new BlockStatusChunk().wrap(metadata, StructuredReplyHeader.BYTES);
    private final Extents extents = new Extents();

    private final ByteBuffer[] gather = new ByteBuffer[3];

    /** Most simple replies of change tasks waiting for the send lock at once (more: the task waits for the lock). */
    static final int PENDING_MAX = 64;
    /**
     * Simple replies of change tasks that found the send lock taken ({@link #sendSimpleReplyOrLeave}): whoever
     * releases the lock next sends them all in one system call. Guarded by {@code pendingHandles}' monitor, held
     * only to add or take entries, never across I/O.
     */
    private final long[] pendingHandles = new long[PENDING_MAX];
    private final int[] pendingErrnos = new int[PENDING_MAX];
    private int npending;
    /** Whether a reply waits in {@link #pendingHandles}: read after every release of the send lock. */
    private volatile boolean anyPending;
    /** The pending replies encoded, under the send lock. */
    private final ByteBuffer combined = ByteBuffer.allocateDirect(PENDING_MAX * SimpleReplyHeader.BYTES);
    private final SimpleReplyHeader combinedReply = new SimpleReplyHeader();
    private final long[] takenHandles = new long[PENDING_MAX];
    private final int[] takenErrnos = new int[PENDING_MAX];

    /** Bytes of whole replies waiting to be sent together: (64 KiB: about 15 replies of a 4 KiB READ). */
    static final int BATCH_BYTES = 64 << 10;
    /** Largest READ payload copied into the batch; a larger one goes straight from the device to the socket. */
    static final int GATHER_MAX = 16 << 10;
    /**
     * Replies gathered by the reader thread, [0, position) ready to send; touched under the lock only, appended to
     * by the reader thread only.
     */
    private final ByteBuffer batch = ByteBuffer.allocateDirect(BATCH_BYTES);
    /** The thread holding the reading role (whose replies may be gathered), or null while it passes. */
    private volatile Thread readerThread;
    private BooleanSupplier queued = () -> false;

    Replies(GatheringByteChannel out, BlockDevice device, String exportName) {
        this.out = out;
        this.device = device;
        this.exportName = exportName;
    }

    /** {@code queued} says that more of the request stream is already received (asked on the reader thread only). */
    void queued(BooleanSupplier queued) {
        this.queued = queued;
    }

    /** Makes {@code thread} (or nobody: null) the reader whose replies may be gathered. */
    void reader(Thread thread) {
        this.readerThread = thread;
    }

    /**
     * Sends the gathered replies now: the reader before it waits for input, and the connection when it stops.
     * Only the reader appends to the batch, so an empty batch seen here stays empty until this thread adds to it.
     */
    void flush() throws IOException {
        if (batch.position() == 0) {
            sendPending();
            return;
        }
        lock.lock();
        try {
            if (batch.position() > 0) {
                flushLocked();
            }
        } finally {
            unlock();
        }
    }

    /** A simple reply without data: the answer to everything but a successful READ without structured replies. */
    void sendSimpleReply(long handle, int errno) throws IOException {
        lock.lock();
        try {
            header.clear();
            simple.encode(errno, handle);
            header.limit(SimpleReplyHeader.BYTES);
            emitLocked(header);
        } finally {
            unlock();
        }
    }

    /**
     * A simple reply of a change task (answered out of order): sent now if the send lock is free, else left for the
     * lock's holder, which sends it with the other replies left meanwhile in one {@code writev} when it releases the
     * lock; the task goes on at once. Many tasks of one connection end together (one group commit answers them
     * all): they no longer queue on the lock one system call each. An I/O error is reported only to the thread
     * that sends (the others' replies are lost with the connection anyway).
     */
    void sendSimpleReplyOrLeave(long handle, int errno) throws IOException {
        boolean full;
        synchronized (pendingHandles) {
            full = npending == PENDING_MAX;
            if (!full) {
                pendingHandles[npending] = handle;
                pendingErrnos[npending] = errno;
                npending++;
                anyPending = true;
            }
        }
        if (full) {
            sendSimpleReply(handle, errno);     // rare: the holder is slow and 64 replies wait; wait for the lock
        } else {
            sendPending();
        }
    }

    /**
     * Leaves a change's simple reply for {@link #sendLeft} (or the send lock's next holder), sending nothing: for a
     * thread that gathers several replies first. If 64 replies wait already, it waits for the lock and sends it.
     */
    void leave(long handle, int errno) throws IOException {
        synchronized (pendingHandles) {
            if (npending < PENDING_MAX) {
                pendingHandles[npending] = handle;
                pendingErrnos[npending] = errno;
                npending++;
                anyPending = true;
                return;
            }
        }
        sendSimpleReply(handle, errno);
    }

    /** Sends the replies left so far in one system call, waiting for the send lock if another thread holds it. */
    void sendLeft() throws IOException {
        if (!anyPending) {
            return;
        }
        lock.lock();
        try {
            sendPendingLocked();
        } finally {
            unlock();
        }
    }

    /**
     * Sends the pending replies unless another thread holds the send lock (it sends them when it releases it); loops
     * while replies arrive as it releases.
     */
    private void sendPending() throws IOException {
        while (anyPending && lock.tryLock()) {
            try {
                sendPendingLocked();
            } finally {
                lock.unlock();
            }
        }
    }

    private void sendPendingLocked() throws IOException {
        int n;
        synchronized (pendingHandles) {
            n = npending;
            System.arraycopy(pendingHandles, 0, takenHandles, 0, n);
            System.arraycopy(pendingErrnos, 0, takenErrnos, 0, n);
            npending = 0;
            anyPending = false;
        }
        if (n == 0) {
            return;
        }
        combined.clear();
        for (int i = 0; i < n; i++) {
            combinedReply.wrap(combined, i * SimpleReplyHeader.BYTES).encode(takenErrnos[i], takenHandles[i]);
        }
        combined.limit(n * SimpleReplyHeader.BYTES);
        emitLocked(combined);
    }

    /** Releases the send lock, then sends the replies change tasks left while it was held. */
    private void unlock() throws IOException {
        lock.unlock();
        if (anyPending) {
            sendPending();
        }
    }

    /** A sender of READ replies with data for one thread (a connection's reader), reading with {@code session}. */
    ReadSender readSender(BlockDevice.Session session) {
        return new ReadSender(session);
    }

    /** One OFFSET_HOLE chunk of a READ's structured reply: a range that reads as zeros. */
    void sendHoleChunk(long handle, int flags, long offset, int length) throws IOException {
        lock.lock();
        try {
            header.clear();
            chunk.encode(flags, Nbd.REPLY_TYPE_OFFSET_HOLE, handle, OffsetHoleChunk.BYTES);
            hole.encode(offset, length);
            header.limit(StructuredReplyHeader.BYTES + OffsetHoleChunk.BYTES);
            emitLocked(header);
        } finally {
            unlock();
        }
    }

    /** The final ERROR chunk of a structured reply; the message is cut to the spec's limit. */
    void sendErrorChunk(long handle, int errno, String message) throws IOException {
        lock.lock();
        try {
            metadata.clear();
            int length = error.encode(errno, message);
            metadataChunk.encode(Nbd.REPLY_FLAG_DONE, Nbd.REPLY_TYPE_ERROR, handle, length);
            metadata.limit(StructuredReplyHeader.BYTES + length);
            emitLocked(metadata);
        } finally {
            unlock();
        }
    }

    /**
     * The BLOCK_STATUS chunk of one metadata context: up to {@code limit} (at most {@link #MAX_EXTENTS}) extents
     * of [offset, +length) as the context reports them. The lookup runs under the lock (the buffers are shared).
     */
    void sendBlockStatus(long handle, int flags, int contextId, MetaContext context, long offset, long length, int limit)
            throws IOException {
        lock.lock();
        try {
            metadata.clear();
            status.contextId(contextId);
            extents.count = 0;
            extents.limit = Math.min(limit, MAX_EXTENTS);
            context.extents(offset, length, extents);
            int payload = BlockStatusChunk.length(extents.count);
            metadataChunk.encode(flags, Nbd.REPLY_TYPE_BLOCK_STATUS, handle, payload);
            metadata.limit(StructuredReplyHeader.BYTES + payload);
            emitLocked(metadata);
        } finally {
            unlock();
        }
    }

    /** Fills the descriptors of {@link #status}. */
    private final class Extents implements MetaContext.FlagSink {
        int count;
        int limit;

        @Override
        public boolean accept(long length, int flags) {
            status.extent(count, length, flags);
            return ++count < limit;
        }
    }

    /**
     * True when a reply of {@code bytes} goes into the batch: the reader thread answers while more requests are
     * received already. Makes room first (sending the batch) when it does not fit.
     */
    private boolean gatheringLocked(int bytes) throws IOException {
        if (Thread.currentThread() != readerThread || bytes > BATCH_BYTES || !queued.getAsBoolean()) {
            return false;
        }
        if (bytes > batch.remaining()) {
            flushLocked();
        }
        return true;
    }

    /** The whole reply in {@code b}: into the batch, or out now (behind the batch, in the same system call). */
    private void emitLocked(ByteBuffer b) throws IOException {
        if (gatheringLocked(b.remaining())) {
            batch.put(b);
        } else {
            sendLocked(b);
        }
    }

    /** Sends the batch (if it holds replies), then {@code b}, in one writev. */
    private void sendLocked(ByteBuffer b) throws IOException {
        try {
            if (batch.position() > 0) {
                batch.flip();
                gather[0] = batch;
                gather[1] = b;
                while (batch.hasRemaining() || b.hasRemaining()) {
                    out.write(gather, 0, 2);
                }
                gather[1] = null;
                batch.clear();
            } else {
                Wire.writeFully(out, b);
            }
        } catch (IOException e) {
            throw new PeerGone(e);
        }
    }

    private void flushLocked() throws IOException {
        batch.flip();
        try {
            Wire.writeFully(out, batch);
        } catch (IOException e) {
            throw new PeerGone(e);
        }
        batch.clear();
    }

    /**
     * Sends READ replies with data, straight from the device (its mapping), for one thread: its own header buffer
     * and state, so the device read runs outside the send lock, which is taken when the first data arrives and held
     * until the reply is whole. A READ whose data is slow to come (a page of the mapping read from the disk, a slow
     * device) does not hold up the connection's other replies.
     */
    final class ReadSender implements ByteSink {
        private final BlockDevice.Session session;
        private final ByteBuffer header = ByteBuffer.allocateDirect(StructuredReplyHeader.BYTES + OffsetDataChunk.BYTES);
        private final SimpleReplyHeader simple = new SimpleReplyHeader().wrap(header);
        private final StructuredReplyHeader chunk = new StructuredReplyHeader().wrap(header);
        private final OffsetDataChunk data = new OffsetDataChunk().wrap(header, StructuredReplyHeader.BYTES);
        private boolean locked;         // this sender holds the send lock (from the first data to the end of the reply)
        private boolean headerPending;
        private long sent;              // payload bytes handed to the socket (or about to be) for the current reply
        private int length;             // announced payload bytes
        private boolean gathered;       // the reply goes into the batch
        private int mark;               // the batch's position before this reply

        private ReadSender(BlockDevice.Session session) {
            this.session = session;
        }

        /** A successful READ without structured replies: a simple reply, then the data. */
        void sendSimpleRead(long handle, long offset, int length) throws IOException {
            header.clear();
            simple.encode(0, handle);
            header.limit(SimpleReplyHeader.BYTES);
            sendWithData(offset, length);
        }

        /** One OFFSET_DATA chunk of a READ's structured reply, with its data from the device. */
        void sendReadChunk(long handle, int flags, long offset, int length) throws IOException {
            header.clear();
            chunk.encode(flags, Nbd.REPLY_TYPE_OFFSET_DATA, handle, OffsetDataChunk.BYTES + length);
            data.encode(offset);
            header.limit(StructuredReplyHeader.BYTES + OffsetDataChunk.BYTES);
            sendWithData(offset, length);
        }

        /**
         * Sends {@link #header} followed by the device's data. The header announces {@code length} bytes: if the
         * device fails before anything went out, the caller answers with an error; once the header is out, exactly
         * {@code length} bytes follow or the connection ends ({@link ReplyCut}), because any other reply would land
         * inside the payload. A gathered reply is only in the batch until it is complete: on failure it is taken out
         * again and the caller answers with an error.
         */
        private void sendWithData(long offset, int length) throws IOException {
            headerPending = true;
            sent = 0;
            this.length = length;
            try {
                try {
                    device.read(session, offset, length, this);
                } catch (PeerGone e) {
                    throw e;
                } catch (IOException | RuntimeException e) {
                    if (gathered) {
                        batch.position(mark);
                        throw e;
                    }
                    if (!headerPending) {
                        throw new ReplyCut(exportName + ": READ [" + offset + ", +" + length + ") failed after "
                                + sent + " of its " + length + " announced bytes: " + e.getMessage());
                    }
                    throw e;
                }
                if (sent != length) {
                    String why = exportName + ": READ [" + offset + ", +" + length + ") produced " + sent + " bytes";
                    if (gathered) {
                        batch.position(mark);
                        throw new IOException(why);
                    }
                    if (!headerPending) {
                        throw new ReplyCut(why);
                    }
                    throw new IOException(why);
                }
            } finally {
                gathered = false;
                if (locked) {
                    locked = false;
                    unlock();
                }
            }
        }

        /**
         * Streams device data to the socket; the first buffer takes the send lock and goes out together with the
         * pending reply header (and the batch in front of it). A gathered reply is copied into the batch instead.
         */
        @Override
        public void write(ByteBuffer src) throws IOException {
            if (!locked) {
                lock.lock();
                locked = true;
                gathered = length <= GATHER_MAX && gatheringLocked(header.remaining() + length);
                mark = batch.position();
            }
            sent += src.remaining();
            if (gathered) {
                if (sent > length) {
                    throw new IOException("the device gave more than the " + length + " bytes asked for");
                }
                if (headerPending) {
                    headerPending = false;
                    batch.put(header);
                }
                batch.put(src);
                return;
            }
            try {
                if (headerPending) {
                    headerPending = false;
                    int n = 0;
                    if (batch.position() > 0) {
                        batch.flip();
                        gather[n++] = batch;
                    }
                    gather[n++] = header;
                    gather[n++] = src;
                    while (header.hasRemaining() || src.hasRemaining() || (n == 3 && batch.hasRemaining())) {
                        out.write(gather, 0, n);
                    }
                    gather[n - 1] = null;
                    if (n == 3) {
                        batch.clear();
                    }
                } else {
                    Wire.writeFully(out, src);
                }
            } catch (IOException e) {
                throw new PeerGone(e);
            }
        }
    }
}
