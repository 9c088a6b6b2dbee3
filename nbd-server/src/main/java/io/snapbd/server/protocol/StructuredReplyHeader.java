package io.snapbd.server.protocol;

import java.nio.ByteBuffer;

/**
 * Flyweight over the header of one structured reply chunk (spec: "Structured reply chunk message"), at an
 * offset of a big-endian {@link ByteBuffer}. A reply is one or more chunks; the last one has
 * {@link Nbd#REPLY_FLAG_DONE}. The chunk's payload follows; its layout depends on the type:
 * {@link OffsetDataChunk}, {@link OffsetHoleChunk}, {@link BlockStatusChunk}, {@link ErrorChunk}.
 * <pre>
 *   offset  size  field   meaning
 *   ------  ----  ------  ------------------------------------------------------------------
 *        0     4  magic   {@link Nbd#STRUCTURED_REPLY_MAGIC} 0x668e33ef
 *        4     2  flags   NBD_REPLY_FLAG_* ({@link Nbd#REPLY_FLAG_DONE})
 *        6     2  type    NBD_REPLY_TYPE_* ({@link Nbd#REPLY_TYPE_OFFSET_DATA}, ...); bit 15 set = an error
 *        8     8  handle  the request's handle
 *       16     4  length  bytes of payload that follow this header (unsigned)
 *       20        end     ({@link #BYTES})
 * </pre>
 * Absolute positions only; reused, so encoding and decoding allocate nothing.
 */
public final class StructuredReplyHeader extends Flyweight {
    public static final int MAGIC_OFFSET = 0;
    public static final int FLAGS_OFFSET = 4;
    public static final int TYPE_OFFSET = 6;
    public static final int HANDLE_OFFSET = 8;
    public static final int LENGTH_OFFSET = 16;
    /** Size of the header. */
    public static final int BYTES = 20;
    /** Set in the type of every error chunk. */
    public static final int TYPE_ERROR_BIT = 1 << 15;

    public StructuredReplyHeader wrap(ByteBuffer buffer) {
        return wrap(buffer, 0);
    }

    /** Views the header at {@code offset} of {@code buffer}, which must be big-endian (the NBD byte order). */
    public StructuredReplyHeader wrap(ByteBuffer buffer, int offset) {
        bind(buffer, offset);
        return this;
    }

    /** True for the types of error chunks ({@link Nbd#REPLY_TYPE_ERROR}, {@link Nbd#REPLY_TYPE_ERROR_OFFSET}, ...). */
    public static boolean isError(int type) {
        return (type & TYPE_ERROR_BIT) != 0;
    }

    public int magic() {
        return buffer.getInt(base + MAGIC_OFFSET);
    }

    public int flags() {
        return u16(FLAGS_OFFSET);
    }

    public int type() {
        return u16(TYPE_OFFSET);
    }

    public long handle() {
        return buffer.getLong(base + HANDLE_OFFSET);
    }

    /** The payload length, unsigned. */
    public long length() {
        return u32(LENGTH_OFFSET);
    }

    /** Sets the payload length (when it is known only after the payload was written). */
    public StructuredReplyHeader length(int length) {
        buffer.putInt(base + LENGTH_OFFSET, length);
        return this;
    }

    /** Writes the whole header, magic included. */
    public StructuredReplyHeader encode(int flags, int type, long handle, int length) {
        buffer.putInt(base + MAGIC_OFFSET, Nbd.STRUCTURED_REPLY_MAGIC);
        buffer.putShort(base + FLAGS_OFFSET, (short) flags);
        buffer.putShort(base + TYPE_OFFSET, (short) type);
        buffer.putLong(base + HANDLE_OFFSET, handle);
        buffer.putInt(base + LENGTH_OFFSET, length);
        return this;
    }
}
