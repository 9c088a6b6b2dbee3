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

/**
 * Every reply of one connection goes out through one method per kind (as nbdkit's {@code send_simple_reply},
 * {@code send_structured_reply_read}, {@code send_structured_reply_error}, ...), encoded by the flyweights of
 * {@code protocol/}. A per-connection send lock keeps replies whole when the reader thread and the FLUSH/FUA
 * pool answer at the same time; no lock is shared with other connections. Buffers are reused: nothing is
 * allocated per reply except the text of an error message.
 */
final class Replies {

    /** Most extent descriptors in one BLOCK_STATUS chunk. */
    static final int MAX_EXTENTS = 1024;

    private final GatheringByteChannel out;
    private final BlockDevice device;
    private final BlockDevice.Session session;
    private final String exportName;
    private final ReentrantLock lock = new ReentrantLock();

    /** Simple replies and data/hole chunk headers, written under the lock. */
    private final ByteBuffer header = ByteBuffer.allocateDirect(StructuredReplyHeader.BYTES + OffsetHoleChunk.BYTES);
    private final SimpleReplyHeader simple = new SimpleReplyHeader().wrap(header);
    private final StructuredReplyHeader chunk = new StructuredReplyHeader().wrap(header);
    private final OffsetDataChunk data = new OffsetDataChunk().wrap(header, StructuredReplyHeader.BYTES);
    private final OffsetHoleChunk hole = new OffsetHoleChunk().wrap(header, StructuredReplyHeader.BYTES);

    /** Error and BLOCK_STATUS chunks, built by the reader thread outside the lock (extent lookups take time). */
    private final ByteBuffer metadata = ByteBuffer.allocateDirect(StructuredReplyHeader.BYTES
            + Math.max(ErrorChunk.BYTES + ErrorChunk.MAX_MESSAGE_BYTES, BlockStatusChunk.length(MAX_EXTENTS)));
    private final StructuredReplyHeader metadataChunk = new StructuredReplyHeader().wrap(metadata);
    private final ErrorChunk error = new ErrorChunk().wrap(metadata, StructuredReplyHeader.BYTES);
    private final BlockStatusChunk status = new BlockStatusChunk().wrap(metadata, StructuredReplyHeader.BYTES);
    private final Extents extents = new Extents();

    private final DataSink dataSink = new DataSink();
    private final ByteBuffer[] gather = new ByteBuffer[2];

    Replies(GatheringByteChannel out, BlockDevice device, BlockDevice.Session session, String exportName) {
        this.out = out;
        this.device = device;
        this.session = session;
        this.exportName = exportName;
    }

    /** A simple reply without data: the answer to everything but a successful READ without structured replies. */
    void sendSimpleReply(long handle, int errno) throws IOException {
        lock.lock();
        try {
            header.clear();
            simple.encode(errno, handle);
            header.limit(SimpleReplyHeader.BYTES);
            sendLocked(header);
        } finally {
            lock.unlock();
        }
    }

    /** A successful READ without structured replies: a simple reply, then the data. */
    void sendSimpleRead(long handle, long offset, int length) throws IOException {
        lock.lock();
        try {
            header.clear();
            simple.encode(0, handle);
            header.limit(SimpleReplyHeader.BYTES);
            sendWithData(offset, length);
        } finally {
            lock.unlock();
        }
    }

    /** One OFFSET_DATA chunk of a READ's structured reply, with its data from the device. */
    void sendReadChunk(long handle, int flags, long offset, int length) throws IOException {
        lock.lock();
        try {
            header.clear();
            chunk.encode(flags, Nbd.REPLY_TYPE_OFFSET_DATA, handle, OffsetDataChunk.BYTES + length);
            data.encode(offset);
            header.limit(StructuredReplyHeader.BYTES + OffsetDataChunk.BYTES);
            sendWithData(offset, length);
        } finally {
            lock.unlock();
        }
    }

    /** One OFFSET_HOLE chunk of a READ's structured reply: a range that reads as zeros. */
    void sendHoleChunk(long handle, int flags, long offset, int length) throws IOException {
        lock.lock();
        try {
            header.clear();
            chunk.encode(flags, Nbd.REPLY_TYPE_OFFSET_HOLE, handle, OffsetHoleChunk.BYTES);
            hole.encode(offset, length);
            header.limit(StructuredReplyHeader.BYTES + OffsetHoleChunk.BYTES);
            sendLocked(header);
        } finally {
            lock.unlock();
        }
    }

    /** The final ERROR chunk of a structured reply; the message is cut to the spec's limit. Reader thread only. */
    void sendErrorChunk(long handle, int errno, String message) throws IOException {
        metadata.clear();
        int length = error.encode(errno, message);
        metadataChunk.encode(Nbd.REPLY_FLAG_DONE, Nbd.REPLY_TYPE_ERROR, handle, length);
        metadata.limit(StructuredReplyHeader.BYTES + length);
        send(metadata);
    }

    /**
     * The BLOCK_STATUS chunk of one metadata context: up to {@code limit} (at most {@link #MAX_EXTENTS}) extents
     * of [offset, +length) as the context reports them. Reader thread only.
     */
    void sendBlockStatus(long handle, int flags, int contextId, MetaContext context, long offset, long length, int limit)
            throws IOException {
        metadata.clear();
        status.contextId(contextId);
        extents.count = 0;
        extents.limit = Math.min(limit, MAX_EXTENTS);
        context.extents(offset, length, extents);
        int payload = BlockStatusChunk.length(extents.count);
        metadataChunk.encode(flags, Nbd.REPLY_TYPE_BLOCK_STATUS, handle, payload);
        metadata.limit(StructuredReplyHeader.BYTES + payload);
        send(metadata);
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

    private void send(ByteBuffer b) throws IOException {
        lock.lock();
        try {
            sendLocked(b);
        } finally {
            lock.unlock();
        }
    }

    private void sendLocked(ByteBuffer b) throws IOException {
        try {
            Wire.writeFully(out, b);
        } catch (IOException e) {
            throw new PeerGone(e);
        }
    }

    /**
     * Sends {@link #header} followed by the device's data, straight from the mapping. The header announces
     * {@code length} bytes: if the device fails before anything went out, the caller answers with an error; once
     * the header is out, exactly {@code length} bytes follow or the connection ends ({@link ReplyCut}), because
     * any other reply would land inside the payload.
     */
    private void sendWithData(long offset, int length) throws IOException {
        dataSink.headerPending = true;
        dataSink.sent = 0;
        try {
            device.read(session, offset, length, dataSink);
        } catch (PeerGone e) {
            throw e;
        } catch (IOException | RuntimeException e) {
            if (!dataSink.headerPending) {
                throw new ReplyCut(exportName + ": READ [" + offset + ", +" + length + ") failed after "
                        + dataSink.sent + " of its " + length + " announced bytes: " + e.getMessage());
            }
            throw e;
        }
        if (dataSink.sent != length) {
            String why = exportName + ": READ [" + offset + ", +" + length + ") produced " + dataSink.sent + " bytes";
            if (!dataSink.headerPending) {
                throw new ReplyCut(why);
            }
            throw new IOException(why);
        }
    }

    /** Streams device data to the socket; the first buffer goes out together with the pending reply header. */
    private final class DataSink implements ByteSink {
        boolean headerPending;
        long sent;              // payload bytes handed to the socket (or about to be) for the current reply

        @Override
        public void write(ByteBuffer src) throws IOException {
            sent += src.remaining();
            try {
                if (headerPending) {
                    headerPending = false;
                    gather[0] = header;
                    gather[1] = src;
                    while (header.hasRemaining() || src.hasRemaining()) {
                        out.write(gather);
                    }
                    gather[1] = null;
                } else {
                    Wire.writeFully(out, src);
                }
            } catch (IOException e) {
                throw new PeerGone(e);
            }
        }
    }
}
