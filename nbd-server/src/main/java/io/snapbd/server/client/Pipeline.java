package io.snapbd.server.client;

import io.snapbd.server.protocol.BlockStatusChunk;
import io.snapbd.server.protocol.ErrorChunk;
import io.snapbd.server.protocol.Nbd;
import io.snapbd.server.protocol.OffsetDataChunk;
import io.snapbd.server.protocol.OffsetHoleChunk;
import io.snapbd.server.protocol.RequestHeader;
import io.snapbd.server.protocol.SimpleReplyHeader;
import io.snapbd.server.protocol.StructuredReplyHeader;
import io.snapbd.server.tls.TlsChannel;

import java.io.EOFException;
import java.io.IOException;
import java.io.InterruptedIOException;
import java.nio.ByteBuffer;
import java.nio.channels.ByteChannel;
import java.nio.channels.GatheringByteChannel;
import java.nio.channels.SocketChannel;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.locks.LockSupport;
import java.util.concurrent.locks.ReentrantLock;

/**
 * The transmission phase of one connection: a fixed pool of request slots, a send path shared by every
 * submitting thread, and one reader thread that matches replies to slots by handle, in whatever order they
 * come. Steady-state requests allocate nothing: slots, headers and the receive buffer are reused, waiting uses
 * monitors and {@link LockSupport} rather than futures.
 * <p>
 * Only the reader thread completes requests, including the ones lost when the connection fails; other
 * threads that notice a failure record it and close the channel, which wakes the reader. That single
 * completer is what makes "every in-flight request is completed exactly once" easy to keep.
 * <p>
 * Over TLS, requests and replies go through the {@link TlsChannel} while failures close the socket underneath
 * it, so an abort never waits for a TLS lock held by a blocked writer; a clean close sends close_notify.
 */
final class Pipeline {

    /** Largest slice of a payload handed to the socket at once (see {@link ReplyInput#MAX_IO}). */
    private static final int MAX_IO = ReplyInput.MAX_IO;
    /** Largest BLOCK_STATUS or error chunk accepted (a million extents). */
    private static final int MAX_METADATA_CHUNK = 8 << 20;
    private static final ByteBuffer ZEROS = ByteBuffer.allocateDirect(64 << 10);

    private final SocketChannel channel;
    /** What requests and replies go through: the socket itself, or {@link #tls} over it. */
    private final ByteChannel io;
    private final GatheringByteChannel ioGather;
    /** The TLS layer ({@code nbds://}), or null. */
    private final TlsChannel tls;
    private final String peer;
    private final boolean structured;
    private final Set<Integer> contextIds;

    // ---- slot pool, guarded by `pool` -----------------------------------------------------------------------
    private final Object pool = new Object();
    private final Request[] slots;
    private final Request[] free;
    private int freeCount;
    private int waiters;
    /** Why no new requests are taken (close() was called, or the server answered ESHUTDOWN); null while open. */
    private String closing;

    // ---- send path, guarded by sendLock ----------------------------------------------------------------------
    private final ReentrantLock sendLock = new ReentrantLock();
    private final ByteBuffer requestHeader = ByteBuffer.allocateDirect(RequestHeader.BYTES);
    private final RequestHeader request = new RequestHeader().wrap(requestHeader);
    private final ByteBuffer[] gather = new ByteBuffer[2];
    private final AtomicBoolean disconnectSent = new AtomicBoolean();

    // ---- reader thread only --------------------------------------------------------------------------------
    private final ReplyInput in;
    private final SimpleReplyHeader simpleReply = new SimpleReplyHeader();
    private final StructuredReplyHeader chunk = new StructuredReplyHeader();
    private final OffsetDataChunk dataChunk = new OffsetDataChunk();
    private final OffsetHoleChunk holeChunk = new OffsetHoleChunk();
    private final BlockStatusChunk statusChunk = new BlockStatusChunk();
    private final ErrorChunk errorChunk = new ErrorChunk();
    private final Thread reader;
    /** OFFSET_HOLE chunks received (the reader writes, others read after a completion). */
    private long holeChunks;

    private volatile IOException failure;

    Pipeline(SocketChannel channel, TlsChannel tls, String peer, boolean structured, Set<Integer> contextIds, int maxInFlight) {
        this.channel = channel;
        this.tls = tls;
        this.io = tls != null ? tls : channel;
        this.ioGather = tls != null ? tls : channel;
        this.peer = peer;
        this.structured = structured;
        this.contextIds = contextIds;
        slots = new Request[maxInFlight];
        free = new Request[maxInFlight];
        for (int i = 0; i < maxInFlight; i++) {
            slots[i] = new Request(i);
            free[maxInFlight - 1 - i] = slots[i];
        }
        freeCount = maxInFlight;
        in = new ReplyInput(io, peer);
        reader = new Thread(this::readLoop, "nbd-client " + peer);
        reader.setDaemon(true);      // a client someone forgot to close must not keep the JVM alive
    }

    void start() {
        reader.start();
    }

    IOException failure() {
        return failure;
    }

    int capacity() {
        return slots.length;
    }

    long holeChunks() {
        return holeChunks;
    }

    // ---- submitting ------------------------------------------------------------------------------------------

    /** Takes a free slot, waiting while all are in flight (the back-pressure of the async API). */
    Request acquire(int type, long offset, long length) throws IOException {
        if (Thread.currentThread() == reader) {
            // The reader frees the slots and reads the replies: it must never wait for either, and a request
            // it sent could block it on a full socket while the server blocks on its unread replies.
            throw new IllegalStateException("no requests from a completion callback");
        }
        synchronized (pool) {
            while (true) {
                IOException refused = refusal();
                if (refused != null) {
                    throw refused;
                }
                if (freeCount > 0) {
                    Request r = free[--freeCount];
                    r.claim(type, offset, length);
                    return r;
                }
                waiters++;
                try {
                    pool.wait();
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    throw new InterruptedIOException("interrupted while waiting for a free request slot");
                } finally {
                    waiters--;
                }
            }
        }
    }

    /** Why new requests are refused, or null while they are welcome. */
    private IOException refusal() {
        if (failure != null) {
            return new IOException("the connection has failed: " + failure.getMessage(), failure);
        }
        return closing == null ? null : new IOException(peer + ": " + closing);
    }

    /** Returns a slot to the pool; the last one back after ESHUTDOWN triggers the soft disconnect. */
    void release(Request r) {
        boolean drainedAfterShutdown;
        synchronized (pool) {
            r.state = Request.FREE;
            r.buffer = null;
            r.completion = null;
            r.waiter = null;
            free[freeCount++] = r;
            if (waiters > 0 || closing != null) {
                pool.notifyAll();
            }
            drainedAfterShutdown = closing != null && freeCount == slots.length;
        }
        if (drainedAfterShutdown) {
            sendDisconnect();
        }
    }

    /**
     * Sends the request of an acquired slot. From the moment it is marked in flight the reader owns its
     * completion, so a send that fails here is reported through the reply path (as a lost request), not by
     * an exception; the exception is only for requests that never left.
     */
    void send(Request r, int flags, ByteBuffer payload) throws IOException {
        sendLock.lock();
        try {
            if (failure != null || disconnectSent.get()) {
                // Too late for this one (a disconnect implies closing, so there is a refusal to report).
                release(r);
                throw refusal();
            }
            requestHeader.clear();
            request.encode(flags, r.type, r.handle, r.offset, r.length);
            r.state = Request.IN_FLIGHT;
            try {
                if (payload == null) {
                    while (requestHeader.hasRemaining()) {
                        io.write(requestHeader);
                    }
                } else {
                    gather[0] = requestHeader;
                    gather[1] = payload;
                    int end = payload.limit();
                    try {
                        while (payload.position() < end) {
                            payload.limit(Math.min(end, payload.position() + MAX_IO));
                            ioGather.write(gather);
                        }
                    } finally {
                        payload.limit(end);
                        gather[1] = null;
                    }
                }
            } catch (IOException e) {
                recordFailure(new IOException(peer + ": sending " + r.describe() + " failed: " + e.getMessage(), e));
            }
        } finally {
            sendLock.unlock();
        }
    }

    /** Blocks the owner of a blocking request until the reader has completed it. */
    void await(Request r) {
        boolean interrupted = false;
        while (r.state != Request.DONE) {
            LockSupport.park(this);
            // The reply (or the connection's failure) will come; an interrupt cannot abandon a request whose
            // reply is still going to be written into the caller's buffer.
            interrupted |= Thread.interrupted();
        }
        if (interrupted) {
            Thread.currentThread().interrupt();
        }
    }

    // ---- closing ---------------------------------------------------------------------------------------------

    /**
     * Waits for every request to finish, sends NBD_CMD_DISC, and waits up to {@code grace} for the server to
     * hang up before closing the socket.
     */
    void close(long graceMillis) {
        if (Thread.currentThread() == reader) {
            throw new IllegalStateException("cannot close the client from a completion callback");
        }
        boolean interrupted = false;
        synchronized (pool) {
            if (closing == null) {
                closing = "the client is closed";
            }
            while (freeCount < slots.length && failure == null) {
                try {
                    pool.wait();
                } catch (InterruptedException e) {
                    interrupted = true;     // in-flight replies still target caller buffers: keep waiting
                }
            }
        }
        sendDisconnect();
        try {
            reader.join(graceMillis);
            if (reader.isAlive()) {
                closeChannel();
                reader.join();
            }
        } catch (InterruptedException e) {
            interrupted = true;
            closeChannel();
        }
        closeChannel();
        if (interrupted) {
            Thread.currentThread().interrupt();
        }
    }

    private void sendDisconnect() {
        if (failure != null || !disconnectSent.compareAndSet(false, true)) {
            return;
        }
        sendLock.lock();
        try {
            requestHeader.clear();
            request.encode(0, Nbd.CMD_DISC, 0, 0, 0);
            while (requestHeader.hasRemaining()) {
                io.write(requestHeader);
            }
            if (tls != null) {
                tls.shutdownOutput();       // close_notify, then the socket's own half-close
            }
            channel.shutdownOutput();
        } catch (IOException e) {
            // Nothing is in flight; the server going away first is as good as a goodbye.
        } finally {
            sendLock.unlock();
        }
    }

    /** Fails the connection from outside (a caller's request timeout): what is in flight completes as lost. */
    void abort(IOException cause) {
        recordFailure(cause);
    }

    /** Keeps the first failure and closes the channel, which wakes the reader to fail what is in flight. */
    private void recordFailure(IOException cause) {
        synchronized (pool) {
            if (failure == null) {
                failure = cause;
            }
            pool.notifyAll();
        }
        closeChannel();
    }

    private void closeChannel() {
        try {
            channel.close();
        } catch (IOException e) {
            // closing is all we wanted
        }
    }

    // ---- the reader thread -----------------------------------------------------------------------------------

    private void readLoop() {
        IOException cause = null;
        try {
            while (in.nextReply()) {
                int magic = in.peekMagic();     // the magic starts both kinds of reply
                if (magic == Nbd.SIMPLE_REPLY_MAGIC) {
                    receiveSimpleReply();
                } else if (magic == Nbd.STRUCTURED_REPLY_MAGIC) {
                    receiveChunk();
                } else {
                    throw violation("bad reply magic 0x" + Integer.toHexString(magic));
                }
            }
            if (!disconnectSent.get()) {
                cause = new EOFException(peer + ": the server closed the connection");
            }
        } catch (IOException e) {
            cause = e;
        } catch (RuntimeException | Error e) {
            cause = new IOException(peer + ": the NBD client reader failed: " + e, e);
        }
        terminate(cause);
    }

    private void receiveSimpleReply() throws IOException {
        simpleReply.wrap(in.buffer(), in.take(SimpleReplyHeader.BYTES));
        int error = simpleReply.error();
        long handle = simpleReply.handle();
        Request r = lookup(handle);
        if (structured && r.type == Nbd.CMD_READ) {
            throw violation("simple reply to " + r.describe() + " although structured replies were negotiated");
        }
        if (error != 0) {
            r.fail(error, "");
        } else if (r.type == Nbd.CMD_READ) {
            receiveData(r, r.offset, (int) r.length);
        } else if (r.type == Nbd.CMD_BLOCK_STATUS) {
            throw violation("simple success reply to " + r.describe());
        }
        finish(r);
    }

    private void receiveChunk() throws IOException {
        chunk.wrap(in.buffer(), in.take(StructuredReplyHeader.BYTES));
        int flags = chunk.flags();
        int type = chunk.type();
        long handle = chunk.handle();
        long length = chunk.length();
        Request r = lookup(handle);
        switch (type) {
            case Nbd.REPLY_TYPE_NONE:
                if (length != 0 || (flags & Nbd.REPLY_FLAG_DONE) == 0) {
                    throw violation("NBD_REPLY_TYPE_NONE chunk with length " + length + " and flags " + flags);
                }
                break;
            case Nbd.REPLY_TYPE_OFFSET_DATA: {
                if (r.type != Nbd.CMD_READ || length <= OffsetDataChunk.BYTES) {
                    throw violation("data chunk of " + length + " bytes for " + r.describe());
                }
                long offset = dataChunk.wrap(in.buffer(), in.take(OffsetDataChunk.BYTES)).offset();
                long n = length - OffsetDataChunk.BYTES;
                checkWithin(r, offset, n);
                receiveData(r, offset, (int) n);
                r.received += n;
                break;
            }
            case Nbd.REPLY_TYPE_OFFSET_HOLE: {
                if (r.type != Nbd.CMD_READ || length != OffsetHoleChunk.BYTES) {
                    throw violation("hole chunk of " + length + " bytes for " + r.describe());
                }
                holeChunk.wrap(in.buffer(), in.take(OffsetHoleChunk.BYTES));
                long offset = holeChunk.offset();
                long n = holeChunk.size();
                if (n == 0) {
                    throw violation("empty hole chunk for " + r.describe());
                }
                checkWithin(r, offset, n);
                zero(r, offset, (int) n);
                r.received += n;
                holeChunks++;
                break;
            }
            case Nbd.REPLY_TYPE_BLOCK_STATUS:
                if (r.type != Nbd.CMD_BLOCK_STATUS || BlockStatusChunk.descriptors(length) < 1 || length > MAX_METADATA_CHUNK) {
                    throw violation("block status chunk of " + length + " bytes for " + r.describe());
                }
                receiveBlockStatus(r, in.payload((int) length));
                break;
            default:
                if (!StructuredReplyHeader.isError(type)) {
                    throw violation("unknown reply chunk type " + type + " for " + r.describe());
                }
                if (length < ErrorChunk.BYTES || length > MAX_METADATA_CHUNK) {
                    throw violation("error chunk of " + length + " bytes for " + r.describe());
                }
                receiveError(r, type, in.payload((int) length));
                break;
        }
        if ((flags & Nbd.REPLY_FLAG_DONE) != 0) {
            finish(r);
        }
    }

    private void receiveBlockStatus(Request r, ByteBuffer b) throws IOException {
        statusChunk.wrap(b, b.position());
        int id = statusChunk.contextId();
        if (!contextIds.contains(id)) {
            throw violation("block status for unknown metadata context id " + id);
        }
        if (id != r.contextId) {
            return;     // the server answers for every selected context; the caller asked about one
        }
        int n = (int) BlockStatusChunk.descriptors(b.remaining());
        for (int i = 0; i < n; i++) {
            long length = statusChunk.extentLength(i);
            int flags = statusChunk.extentFlags(i);
            if (length == 0) {
                throw violation("zero-length extent for " + r.describe());
            }
            r.extents.add(new Extent(r.nextExtentOffset, length, flags));
            r.nextExtentOffset += length;
        }
    }

    private void receiveError(Request r, int type, ByteBuffer b) throws IOException {
        errorChunk.wrap(b, b.position());
        int error = errorChunk.error();
        int messageLength = errorChunk.messageLength();
        int after = b.remaining() - ErrorChunk.BYTES;       // bytes after the fixed fields
        if (messageLength > after) {
            throw violation("error message of " + messageLength + " bytes in a chunk of " + after);
        }
        String message = errorChunk.message();
        if (type == Nbd.REPLY_TYPE_ERROR_OFFSET && after - messageLength == ErrorChunk.ERROR_OFFSET_BYTES) {
            message = message + (message.isEmpty() ? "" : " ") + "at offset " + errorChunk.errorOffset();
        }
        // An error chunk must carry an error; one that says 0 still means the request failed.
        r.fail(error != 0 ? error : Nbd.EIO, message);
    }

    private void finish(Request r) {
        if (r.type == Nbd.CMD_READ) {
            ByteBuffer b = r.buffer;
            b.limit(r.bufferEnd);
            if (r.error == 0 && structured && r.received != r.length) {
                r.fail(Nbd.EIO, "the server sent " + r.received + " of " + r.length + " bytes");
            }
            b.position(r.error == 0 ? r.bufferEnd : r.bufferStart);
        } else if (r.type == Nbd.CMD_BLOCK_STATUS && r.error == 0 && r.extents.isEmpty()) {
            r.fail(Nbd.EIO, "the server sent no extents for the requested context");
        }
        if (r.error == Nbd.ESHUTDOWN) {
            // The spec asks clients to answer ESHUTDOWN with a soft disconnect once nothing is in flight.
            synchronized (pool) {
                if (closing == null) {
                    closing = "the server is shutting down (it answered ESHUTDOWN)";
                }
            }
        }
        complete(r);
    }

    private void complete(Request r) {
        Completion c = r.completion;
        if (c == null) {
            Thread waiter = r.waiter;
            r.state = Request.DONE;
            LockSupport.unpark(waiter);
            return;
        }
        try {
            c.complete(r.lost ? Completion.CONNECTION_FAILED : r.error, r.tag);
        } finally {
            // After the callback: a caller counting its requests in flight never sees more than the pool holds.
            release(r);
        }
    }

    /** Fails everything in flight after the connection ended, or just exits after a clean disconnect. */
    private void terminate(IOException cause) {
        if (cause != null) {
            synchronized (pool) {
                if (failure == null) {
                    // Socket errors ("Connection reset") say nothing of which connection: name it.
                    String text = String.valueOf(cause.getMessage());
                    failure = text.startsWith(peer) ? cause : new IOException(peer + ": connection lost: " + text, cause);
                }
            }
        }
        closeChannel();
        List<Request> lost = new ArrayList<>();
        // Holding the send lock, no submitter is between its failure check and marking its slot in flight.
        sendLock.lock();
        try {
            for (Request r : slots) {
                if (r.state == Request.IN_FLIGHT) {
                    lost.add(r);
                }
            }
        } finally {
            sendLock.unlock();
        }
        synchronized (pool) {
            pool.notifyAll();
        }
        for (Request r : lost) {
            r.lost = true;
            if (r.type == Nbd.CMD_READ) {
                r.buffer.limit(r.bufferEnd).position(r.bufferStart);
            }
            try {
                complete(r);
            } catch (RuntimeException e) {
                // A failing callback cannot fail the connection twice; the others still need their answer.
            }
        }
    }

    // ---- receiving -------------------------------------------------------------------------------------------

    private Request lookup(long handle) throws IOException {
        long index = handle & 0xffffffffL;
        Request r = index < slots.length ? slots[(int) index] : null;
        if (r == null || r.state != Request.IN_FLIGHT || r.handle != handle) {
            throw violation("reply for unknown handle 0x" + Long.toHexString(handle));
        }
        return r;
    }

    private void checkWithin(Request r, long offset, long n) throws IOException {
        if (offset < r.offset || n > r.length || offset - r.offset > r.length - n || r.received + n > r.length) {
            throw violation("chunk [" + offset + ", +" + n + ") outside or beyond " + r.describe());
        }
    }

    /** Copies {@code n} bytes of data for {@code [offset, +n)} into the request's buffer. */
    private void receiveData(Request r, long offset, int n) throws IOException {
        int start = r.bufferStart + (int) (offset - r.offset);
        r.buffer.limit(start + n).position(start);
        in.readInto(r.buffer, r);
    }

    private void zero(Request r, long offset, int n) {
        ByteBuffer dst = r.buffer;
        dst.limit(r.bufferEnd);     // an earlier data chunk may have left a narrower limit
        int at = r.bufferStart + (int) (offset - r.offset);
        while (n > 0) {
            int k = Math.min(n, ZEROS.capacity());
            dst.put(at, ZEROS, 0, k);
            at += k;
            n -= k;
        }
    }

    private IOException violation(String what) {
        return new IOException(peer + ": NBD protocol violation: " + what);
    }
}
