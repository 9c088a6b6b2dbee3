package io.snapbd.server.protocol;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;

/**
 * Flyweight over the payload of an error chunk ({@link Nbd#REPLY_TYPE_ERROR}, {@link Nbd#REPLY_TYPE_ERROR_OFFSET}
 * and any other type with {@link StructuredReplyHeader#TYPE_ERROR_BIT}), right after its
 * {@link StructuredReplyHeader}.
 * <pre>
 *   offset    size  field           meaning
 *   --------  ----  --------------  -------------------------------------------------------
 *          0     4  error           NBD errno ({@link Nbd#EIO}, ...), never 0
 *          4     2  message length  bytes of the message (unsigned, at most 4096)
 *          6     m  message         UTF-8, not terminated; for people, not for parsing
 *      6 + m     8  offset          ERROR_OFFSET only: export offset the error is about
 * </pre>
 * {@link #BYTES} is the size before the message.
 */
public final class ErrorChunk extends Flyweight {
    public static final int ERROR_OFFSET = 0;
    public static final int MESSAGE_LENGTH_OFFSET = 4;
    public static final int MESSAGE_OFFSET = 6;
    /** Size of the payload before the message. */
    public static final int BYTES = 6;
    /** Longest message (the spec's string limit); longer ones are cut. */
    public static final int MAX_MESSAGE_BYTES = 4096;
    /** Size of the offset field after the message of an ERROR_OFFSET chunk. */
    public static final int ERROR_OFFSET_BYTES = 8;

    public ErrorChunk wrap(ByteBuffer buffer, int offset) {
        bind(buffer, offset);
        return this;
    }

    public int error() {
        return buffer.getInt(base + ERROR_OFFSET);
    }

    public int messageLength() {
        return u16(MESSAGE_LENGTH_OFFSET);
    }

    /** The message; the caller checked that {@link #messageLength} bytes of it are in the buffer. */
    public String message() {
        byte[] text = new byte[messageLength()];
        buffer.get(base + MESSAGE_OFFSET, text);
        return new String(text, StandardCharsets.UTF_8);
    }

    /** The offset field of an ERROR_OFFSET chunk, after the message. */
    public long errorOffset() {
        return buffer.getLong(base + MESSAGE_OFFSET + messageLength());
    }

    /**
     * Writes the error and its message (UTF-8, cut to {@link #MAX_MESSAGE_BYTES}); the buffer must have room for
     * {@link #BYTES} + {@link #MAX_MESSAGE_BYTES}. Returns the payload length.
     */
    public int encode(int error, String message) {
        byte[] m = message.getBytes(StandardCharsets.UTF_8);
        int n = Math.min(m.length, MAX_MESSAGE_BYTES);
        buffer.putInt(base + ERROR_OFFSET, error);
        buffer.putShort(base + MESSAGE_LENGTH_OFFSET, (short) n);
        buffer.put(base + MESSAGE_OFFSET, m, 0, n);
        return BYTES + n;
    }
}
