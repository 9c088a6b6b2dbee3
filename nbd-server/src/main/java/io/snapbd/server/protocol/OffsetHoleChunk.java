package io.snapbd.server.protocol;

import java.nio.ByteBuffer;

/**
 * Flyweight over the payload of an {@link Nbd#REPLY_TYPE_OFFSET_HOLE} chunk (part of a READ's answer: a range
 * that reads as zeros), right after its {@link StructuredReplyHeader}.
 * <pre>
 *   offset  size  field      meaning
 *   ------  ----  ---------  ---------------------------------------------------------------
 *        0     8  offset     export offset of the hole
 *        8     4  hole size  bytes of zeros (unsigned, not 0)
 *       12        end        ({@link #BYTES}: a hole chunk's length is always 12)
 * </pre>
 */
public final class OffsetHoleChunk extends Flyweight {
    public static final int OFFSET_OFFSET = 0;
    public static final int SIZE_OFFSET = 8;
    /** Size of the payload. */
    public static final int BYTES = 12;

    public OffsetHoleChunk wrap(ByteBuffer buffer, int offset) {
        bind(buffer, offset);
        return this;
    }

    public long offset() {
        return buffer.getLong(base + OFFSET_OFFSET);
    }

    /** The hole size, unsigned. */
    public long size() {
        return u32(SIZE_OFFSET);
    }

    public OffsetHoleChunk encode(long offset, int size) {
        buffer.putLong(base + OFFSET_OFFSET, offset);
        buffer.putInt(base + SIZE_OFFSET, size);
        return this;
    }
}
