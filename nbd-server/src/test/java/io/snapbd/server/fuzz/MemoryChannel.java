package io.snapbd.server.fuzz;

import java.io.ByteArrayOutputStream;
import java.nio.ByteBuffer;
import java.nio.channels.ByteChannel;
import java.nio.channels.GatheringByteChannel;

/**
 * The server's end of a connection, in memory: reads return the client's bytes (at most {@code chunk} per
 * call, so partial reads are exercised), then end of stream; everything written is kept for the checks.
 * Bounded input and no blocking: a server that loops waiting for more bytes than exist sees EOF, never hangs.
 */
final class MemoryChannel implements ByteChannel, GatheringByteChannel {

    private final ByteBuffer in;
    private final int chunk;
    final ByteArrayOutputStream out = new ByteArrayOutputStream();
    private boolean open = true;

    MemoryChannel(byte[] clientBytes, int chunk) {
        this.in = ByteBuffer.wrap(clientBytes);
        this.chunk = Math.max(1, chunk);
    }

    /** Client bytes the server has not read. */
    int unread() {
        return in.remaining();
    }

    @Override
    public int read(ByteBuffer dst) {
        if (!in.hasRemaining()) {
            return -1;
        }
        int n = Math.min(Math.min(chunk, dst.remaining()), in.remaining());
        ByteBuffer s = in.slice().limit(n);
        dst.put(s);
        in.position(in.position() + n);
        return n;
    }

    @Override
    public int write(ByteBuffer src) {
        int n = src.remaining();
        byte[] b = new byte[n];
        src.get(b);
        out.write(b, 0, n);
        return n;
    }

    @Override
    public long write(ByteBuffer[] srcs, int offset, int length) {
        long n = 0;
        for (int i = offset; i < offset + length; i++) {
            n += write(srcs[i]);
        }
        return n;
    }

    @Override
    public long write(ByteBuffer[] srcs) {
        return write(srcs, 0, srcs.length);
    }

    @Override
    public boolean isOpen() {
        return open;
    }

    @Override
    public void close() {
        open = false;
    }
}
