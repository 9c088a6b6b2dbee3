package io.snapbd.server.protocol;

import java.nio.ByteBuffer;

/**
 * Flyweight over the request header a client sends for every command (spec: "Request message"), at an
 * offset of a big-endian {@link ByteBuffer}. A WRITE's payload follows it directly.
 * <pre>
 *   offset  size  field   meaning
 *   ------  ----  ------  ------------------------------------------------------------------
 *        0     4  magic   {@link Nbd#REQUEST_MAGIC} 0x25609513
 *        4     2  flags   command flags, NBD_CMD_FLAG_* ({@link Nbd#CMD_FLAG_FUA}, ...)
 *        6     2  type    command, NBD_CMD_* ({@link Nbd#CMD_READ}, ...)
 *        8     8  handle  opaque cookie, echoed in every reply to this request
 *       16     8  offset  first byte of the export the command is about
 *       24     4  length  bytes the command is about (unsigned); for WRITE, the payload that follows
 *       28        end     ({@link #BYTES})
 * </pre>
 * Getters and setters use absolute positions and never move the buffer's position or limit; one instance is
 * reused for every request of a connection (wrap once, or again per header), so decoding allocates nothing.
 */
public final class RequestHeader extends Flyweight {
    public static final int MAGIC_OFFSET = 0;
    public static final int FLAGS_OFFSET = 4;
    public static final int TYPE_OFFSET = 6;
    public static final int HANDLE_OFFSET = 8;
    public static final int OFFSET_OFFSET = 16;
    public static final int LENGTH_OFFSET = 24;
    /** Size of the header. */
    public static final int BYTES = 28;

    /** Views the header at offset 0 of {@code buffer}. */
    public RequestHeader wrap(ByteBuffer buffer) {
        return wrap(buffer, 0);
    }

    /** Views the header at {@code offset} of {@code buffer}, which must be big-endian (the NBD byte order). */
    public RequestHeader wrap(ByteBuffer buffer, int offset) {
        bind(buffer, offset);
        return this;
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

    public long offset() {
        return buffer.getLong(base + OFFSET_OFFSET);
    }

    /** The length field, unsigned. */
    public long length() {
        return u32(LENGTH_OFFSET);
    }

    /** Writes the whole header, magic included. {@code length} is taken as unsigned 32 bits. */
    public RequestHeader encode(int flags, int type, long handle, long offset, long length) {
        buffer.putInt(base + MAGIC_OFFSET, Nbd.REQUEST_MAGIC);
        buffer.putShort(base + FLAGS_OFFSET, (short) flags);
        buffer.putShort(base + TYPE_OFFSET, (short) type);
        buffer.putLong(base + HANDLE_OFFSET, handle);
        buffer.putLong(base + OFFSET_OFFSET, offset);
        buffer.putInt(base + LENGTH_OFFSET, (int) length);
        return this;
    }
}
