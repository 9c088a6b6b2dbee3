package io.snapbd.server.client;

import java.io.EOFException;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.ReadableByteChannel;

/**
 * The reply side of a connection's socket, used by the reader thread only: a reused receive buffer that lets one
 * system call fetch several small replies, while large payloads go from the socket straight into the caller's
 * buffer. Nothing here allocates except {@link #payload} for a metadata chunk larger than the buffer.
 */
final class ReplyInput {

    private static final int RECEIVE_BUFFER = 64 << 10;
    /** Payloads up to this size go through the receive buffer, so that one system call can fetch several replies. */
    private static final int COPY_THRESHOLD = RECEIVE_BUFFER / 2;
    /**
     * Largest slice of a payload handed to the socket at once: the JDK copies heap buffers through a cached
     * temporary direct buffer of the slice's size, which would otherwise grow to 32 MiB per thread.
     */
    static final int MAX_IO = 1 << 20;

    private final ReadableByteChannel channel;   // the socket, or the TLS layer over it
    private final String peer;
    private final ByteBuffer in = ByteBuffer.allocateDirect(RECEIVE_BUFFER).flip();

    ReplyInput(ReadableByteChannel channel, String peer) {
        this.channel = channel;
        this.peer = peer;
    }

    /** The receive buffer, for flyweights to wrap at an offset {@link #take} returned. */
    ByteBuffer buffer() {
        return in;
    }

    /** Waits for the start of the next reply: false for an end of stream between replies. */
    boolean nextReply() throws IOException {
        return fill(Integer.BYTES, true);
    }

    /** The magic at the start of the next reply, not consumed. */
    int peekMagic() {
        return in.getInt(in.position());
    }

    /**
     * Consumes the next {@code n} bytes and returns their offset in {@link #buffer}; they stay valid until the
     * next call that reads the socket.
     */
    int take(int n) throws IOException {
        fill(n, false);
        int at = in.position();
        in.position(at + n);
        return at;
    }

    /** Reads the bytes for {@code dst}'s [position, limit) from the stream: data of {@code r}'s reply. */
    void readInto(ByteBuffer dst, Request r) throws IOException {
        int n = dst.remaining();
        if (n <= COPY_THRESHOLD) {
            fill(n, false);
        }
        int buffered = Math.min(in.remaining(), n);
        if (buffered > 0) {
            int limit = in.limit();
            in.limit(in.position() + buffered);
            dst.put(in);
            in.limit(limit);
        }
        int end = dst.limit();
        while (dst.position() < end) {
            dst.limit(Math.min(end, dst.position() + MAX_IO));
            if (channel.read(dst) < 0) {
                throw new EOFException(peer + ": the server closed the connection in the middle of " + r.describe());
            }
        }
    }

    /** The next {@code n} bytes as a buffer of their own (metadata and error chunks only). */
    ByteBuffer payload(int n) throws IOException {
        if (n <= in.capacity()) {
            fill(n, false);
            ByteBuffer b = in.slice(in.position(), n);
            in.position(in.position() + n);
            return b;
        }
        ByteBuffer b = ByteBuffer.allocate(n);
        b.put(in);
        while (b.hasRemaining()) {
            if (channel.read(b) < 0) {
                throw new EOFException(peer + ": the server closed the connection in the middle of a reply");
            }
        }
        return b.flip();
    }

    /**
     * Makes {@code n} bytes available in {@link #in}, reading as much as the socket has. Returns false only
     * for an end of stream at a reply boundary when {@code eofOk}.
     */
    private boolean fill(int n, boolean eofOk) throws IOException {
        while (in.remaining() < n) {
            in.compact();
            int read = channel.read(in);
            in.flip();
            if (read < 0) {
                if (eofOk && !in.hasRemaining()) {
                    return false;
                }
                throw new EOFException(peer + ": the server closed the connection in the middle of a reply");
            }
        }
        return true;
    }
}
