package io.snapbd.server.protocol;

import java.nio.ByteBuffer;

/**
 * Flyweight over the payload header of an {@link Nbd#REPLY_TYPE_OFFSET_DATA} chunk (part of a READ's answer),
 * right after its {@link StructuredReplyHeader}. The data follow it: the chunk's length minus {@link #BYTES}.
 * <pre>
 *   offset  size  field   meaning
 *   ------  ----  ------  ------------------------------------------------------------------
 *        0     8  offset  export offset of the first data byte
 *        8        data    (length - 8 bytes; {@link #BYTES} is the header alone)
 * </pre>
 */
public final class OffsetDataChunk extends Flyweight {
    public static final int OFFSET_OFFSET = 0;
    /** Size of the payload header, without the data. */
    public static final int BYTES = 8;

    public OffsetDataChunk wrap(ByteBuffer buffer, int offset) {
        bind(buffer, offset);
        return this;
    }

    public long offset() {
        return buffer.getLong(base + OFFSET_OFFSET);
    }

    public OffsetDataChunk encode(long offset) {
        buffer.putLong(base + OFFSET_OFFSET, offset);
        return this;
    }
}
