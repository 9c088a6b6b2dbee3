package io.snapbd.server.protocol;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;

/**
 * What every wire layout flyweight shares: the buffer and the offset of the structure in it. Subclasses read
 * and write fields at {@code base + FIELD_OFFSET} with absolute accessors, so they never move the buffer's
 * position or limit and never allocate. Like every absolute access, a field must lie below the buffer's limit:
 * clear a send buffer before encoding into it, then set the limit to what goes out.
 */
abstract class Flyweight {
    ByteBuffer buffer;
    int base;

    final void bind(ByteBuffer buffer, int offset) {
        if (buffer.order() != ByteOrder.BIG_ENDIAN) {
            throw new IllegalArgumentException("NBD structures are big-endian");
        }
        this.buffer = buffer;
        this.base = offset;
    }

    final int u16(int field) {
        return Short.toUnsignedInt(buffer.getShort(base + field));
    }

    final long u32(int field) {
        return Integer.toUnsignedLong(buffer.getInt(base + field));
    }
}
