package io.snapbd.server.protocol;

import java.io.EOFException;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.ReadableByteChannel;
import java.nio.channels.WritableByteChannel;

/** Blocking full reads and writes on a channel. */
public final class Wire {
    private Wire() {
    }

    public static void readFully(ReadableByteChannel ch, ByteBuffer dst) throws IOException {
        while (dst.hasRemaining()) {
            if (ch.read(dst) < 0) {
                throw new EOFException("peer closed the connection");
            }
        }
    }

    public static void writeFully(WritableByteChannel ch, ByteBuffer src) throws IOException {
        while (src.hasRemaining()) {
            ch.write(src);
        }
    }

    /** Reads and throws away {@code n} bytes through {@code scratch}. */
    public static void skip(ReadableByteChannel ch, long n, ByteBuffer scratch) throws IOException {
        while (n > 0) {
            scratch.clear().limit((int) Math.min(scratch.capacity(), n));
            readFully(ch, scratch);
            n -= scratch.limit();
        }
    }
}
