package io.snapbd.server.protocol;

import java.nio.ByteBuffer;

/**
 * Flyweight over the payload of an {@link Nbd#REPLY_TYPE_BLOCK_STATUS} chunk (the answer to BLOCK_STATUS for
 * one metadata context), right after its {@link StructuredReplyHeader}: a context id, then descriptors of
 * consecutive extents from the requested offset.
 * <pre>
 *   offset       size  field       meaning
 *   -----------  ----  ----------  ----------------------------------------------------------
 *            0     4  context id  id the server gave the context at SET_META_CONTEXT
 *   4 + 8*i + 0    4  length      descriptor i: bytes of the extent (unsigned, not 0)
 *   4 + 8*i + 4    4  flags       descriptor i: the context's status flags ({@link Nbd#STATE_HOLE}, ...)
 *   4 + 8*n           end         ({@link #BYTES} + n * {@link #DESCRIPTOR_BYTES})
 * </pre>
 */
public final class BlockStatusChunk extends Flyweight {
    public static final int CONTEXT_ID_OFFSET = 0;
    /** Size of the payload before the first descriptor. */
    public static final int BYTES = 4;
    public static final int DESCRIPTOR_LENGTH_OFFSET = 0;
    public static final int DESCRIPTOR_FLAGS_OFFSET = 4;
    /** Size of one extent descriptor. */
    public static final int DESCRIPTOR_BYTES = 8;

    public BlockStatusChunk wrap(ByteBuffer buffer, int offset) {
        bind(buffer, offset);
        return this;
    }

    /** Payload length of a chunk with {@code n} descriptors. */
    public static int length(int n) {
        return BYTES + n * DESCRIPTOR_BYTES;
    }

    /** Descriptors in a payload of {@code length} bytes, or -1 when the length fits no whole number of them. */
    public static long descriptors(long length) {
        long d = length - BYTES;
        return d < 0 || d % DESCRIPTOR_BYTES != 0 ? -1 : d / DESCRIPTOR_BYTES;
    }

    public int contextId() {
        return buffer.getInt(base + CONTEXT_ID_OFFSET);
    }

    public BlockStatusChunk contextId(int id) {
        buffer.putInt(base + CONTEXT_ID_OFFSET, id);
        return this;
    }

    /** Length of descriptor {@code i}, unsigned. */
    public long extentLength(int i) {
        return u32(BYTES + i * DESCRIPTOR_BYTES + DESCRIPTOR_LENGTH_OFFSET);
    }

    public int extentFlags(int i) {
        return buffer.getInt(base + BYTES + i * DESCRIPTOR_BYTES + DESCRIPTOR_FLAGS_OFFSET);
    }

    /** Writes descriptor {@code i}; {@code length} is taken as unsigned 32 bits. */
    public BlockStatusChunk extent(int i, long length, int flags) {
        int at = base + BYTES + i * DESCRIPTOR_BYTES;
        buffer.putInt(at + DESCRIPTOR_LENGTH_OFFSET, (int) length);
        buffer.putInt(at + DESCRIPTOR_FLAGS_OFFSET, flags);
        return this;
    }
}
