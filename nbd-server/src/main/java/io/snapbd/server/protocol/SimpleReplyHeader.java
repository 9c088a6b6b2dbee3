package io.snapbd.server.protocol;

import java.nio.ByteBuffer;

/**
 * Flyweight over a simple reply (spec: "Simple reply message"), at an offset of a big-endian
 * {@link ByteBuffer}. The only reply without structured replies; after a successful READ exactly the
 * requested number of data bytes follow it.
 * <pre>
 *   offset  size  field   meaning
 *   ------  ----  ------  ------------------------------------------------------------------
 *        0     4  magic   {@link Nbd#SIMPLE_REPLY_MAGIC} 0x67446698
 *        4     4  error   0, or an NBD errno ({@link Nbd#EIO}, ...)
 *        8     8  handle  the request's handle
 *       16        end     ({@link #BYTES})
 * </pre>
 * Absolute positions only; reused, so encoding and decoding allocate nothing.
 */
public final class SimpleReplyHeader extends Flyweight {
    public static final int MAGIC_OFFSET = 0;
    public static final int ERROR_OFFSET = 4;
    public static final int HANDLE_OFFSET = 8;
    /** Size of the reply. */
    public static final int BYTES = 16;

    public SimpleReplyHeader wrap(ByteBuffer buffer) {
        return wrap(buffer, 0);
    }

    /** Views the reply at {@code offset} of {@code buffer}, which must be big-endian (the NBD byte order). */
    public SimpleReplyHeader wrap(ByteBuffer buffer, int offset) {
        bind(buffer, offset);
        return this;
    }

    public int magic() {
        return buffer.getInt(base + MAGIC_OFFSET);
    }

    public int error() {
        return buffer.getInt(base + ERROR_OFFSET);
    }

    public long handle() {
        return buffer.getLong(base + HANDLE_OFFSET);
    }

    /** Writes the whole reply, magic included. */
    public SimpleReplyHeader encode(int error, long handle) {
        buffer.putInt(base + MAGIC_OFFSET, Nbd.SIMPLE_REPLY_MAGIC);
        buffer.putInt(base + ERROR_OFFSET, error);
        buffer.putLong(base + HANDLE_OFFSET, handle);
        return this;
    }
}
