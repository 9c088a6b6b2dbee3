package io.snapbd.server.protocol;

import org.junit.jupiter.api.Test;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.HexFormat;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The flyweights against bytes written by hand from the NBD specification (doc/proto.md): each layout is
 * decoded from the spec's bytes and encoded back to exactly them, at offset 0 and in the middle of a buffer
 * (how the client reads replies out of its receive buffer).
 */
class WireLayoutTest {

    private static byte[] hex(String s) {
        return HexFormat.of().parseHex(s.replace(" ", ""));
    }

    /** {@code bytes} placed at {@code at} of a larger buffer, position and limit elsewhere. */
    private static ByteBuffer at(int at, byte[] bytes) {
        ByteBuffer b = ByteBuffer.allocate(at + bytes.length + 3);
        b.put(at, bytes);
        b.position(1).limit(at + bytes.length + 2);
        return b;
    }

    private static byte[] slice(ByteBuffer b, int at, int n) {
        byte[] out = new byte[n];
        b.get(at, out);
        return out;
    }

    private static void assertUntouched(ByteBuffer b, int limit) {
        assertEquals(1, b.position(), "absolute accessors leave the position alone");
        assertEquals(limit, b.limit(), "absolute accessors leave the limit alone");
    }

    @Test
    void requestHeader() {
        // magic, flags = FUA, type = WRITE, handle, offset = 1 TiB + 4096, length = 0xfffffff0 (unsigned)
        byte[] spec = hex("25609513 0001 0001 0102030405060708 0000010000001000 fffffff0");
        assertEquals(RequestHeader.BYTES, spec.length);
        for (int base : new int[]{0, 5}) {
            ByteBuffer b = at(base, spec);
            RequestHeader h = new RequestHeader().wrap(b, base);
            assertEquals(Nbd.REQUEST_MAGIC, h.magic());
            assertEquals(Nbd.CMD_FLAG_FUA, h.flags());
            assertEquals(Nbd.CMD_WRITE, h.type());
            assertEquals(0x0102030405060708L, h.handle());
            assertEquals((1L << 40) + 4096, h.offset());
            assertEquals(0xfffffff0L, h.length());
            assertUntouched(b, base + spec.length + 2);

            ByteBuffer e = ByteBuffer.allocate(base + RequestHeader.BYTES);
            new RequestHeader().wrap(e, base).encode(Nbd.CMD_FLAG_FUA, Nbd.CMD_WRITE, 0x0102030405060708L, (1L << 40) + 4096, 0xfffffff0L);
            assertArrayEquals(spec, slice(e, base, spec.length));
            assertEquals(0, e.position());
        }
        // unsigned 16-bit fields: a type with the top bit set is not negative
        RequestHeader h = new RequestHeader().wrap(ByteBuffer.wrap(hex("25609513 8000 ffff 0000000000000000 0000000000000000 00000000")));
        assertEquals(0x8000, h.flags());
        assertEquals(0xffff, h.type());
    }

    @Test
    void simpleReply() {
        byte[] spec = hex("67446698 00000005 a1a2a3a4a5a6a7a8");     // EIO
        assertEquals(SimpleReplyHeader.BYTES, spec.length);
        for (int base : new int[]{0, 7}) {
            ByteBuffer b = at(base, spec);
            SimpleReplyHeader r = new SimpleReplyHeader().wrap(b, base);
            assertEquals(Nbd.SIMPLE_REPLY_MAGIC, r.magic());
            assertEquals(Nbd.EIO, r.error());
            assertEquals(0xa1a2a3a4a5a6a7a8L, r.handle());
            assertUntouched(b, base + spec.length + 2);

            ByteBuffer e = ByteBuffer.allocate(base + SimpleReplyHeader.BYTES);
            new SimpleReplyHeader().wrap(e, base).encode(Nbd.EIO, 0xa1a2a3a4a5a6a7a8L);
            assertArrayEquals(spec, slice(e, base, spec.length));
        }
    }

    @Test
    void offsetDataChunk() {
        // chunk header: magic, flags = DONE, type = OFFSET_DATA, handle, length = 8 + 4096; then the data's offset
        byte[] spec = hex("668e33ef 0001 0001 0000000000000011 00001008  0000000000200000");
        assertEquals(StructuredReplyHeader.BYTES + OffsetDataChunk.BYTES, spec.length);
        for (int base : new int[]{0, 3}) {
            ByteBuffer b = at(base, spec);
            StructuredReplyHeader h = new StructuredReplyHeader().wrap(b, base);
            assertEquals(Nbd.STRUCTURED_REPLY_MAGIC, h.magic());
            assertEquals(Nbd.REPLY_FLAG_DONE, h.flags());
            assertEquals(Nbd.REPLY_TYPE_OFFSET_DATA, h.type());
            assertEquals(0x11, h.handle());
            assertEquals(OffsetDataChunk.BYTES + 4096, h.length());
            assertEquals(2 << 20, new OffsetDataChunk().wrap(b, base + StructuredReplyHeader.BYTES).offset());
            assertUntouched(b, base + spec.length + 2);

            ByteBuffer e = ByteBuffer.allocate(base + spec.length);
            new StructuredReplyHeader().wrap(e, base).encode(Nbd.REPLY_FLAG_DONE, Nbd.REPLY_TYPE_OFFSET_DATA, 0x11, 8 + 4096);
            new OffsetDataChunk().wrap(e, base + StructuredReplyHeader.BYTES).encode(2 << 20);
            assertArrayEquals(spec, slice(e, base, spec.length));
        }
        StructuredReplyHeader h = new StructuredReplyHeader().wrap(ByteBuffer.wrap(hex("668e33ef 0000 0001 0000000000000000 ffffffff")));
        assertEquals(0xffffffffL, h.length(), "the chunk length is unsigned");
        assertEquals(0, h.length(12).flags());
        assertEquals(12, h.length());
    }

    @Test
    void offsetHoleChunk() {
        byte[] spec = hex("668e33ef 0000 0002 0000000000000022 0000000c  0000000000001000 00010000");
        assertEquals(StructuredReplyHeader.BYTES + OffsetHoleChunk.BYTES, spec.length);
        ByteBuffer b = ByteBuffer.wrap(spec);
        StructuredReplyHeader h = new StructuredReplyHeader().wrap(b);
        assertEquals(0, h.flags());
        assertEquals(Nbd.REPLY_TYPE_OFFSET_HOLE, h.type());
        assertEquals(OffsetHoleChunk.BYTES, h.length());
        OffsetHoleChunk hole = new OffsetHoleChunk().wrap(b, StructuredReplyHeader.BYTES);
        assertEquals(4096, hole.offset());
        assertEquals(64 << 10, hole.size());

        ByteBuffer e = ByteBuffer.allocate(spec.length);
        new StructuredReplyHeader().wrap(e).encode(0, Nbd.REPLY_TYPE_OFFSET_HOLE, 0x22, OffsetHoleChunk.BYTES);
        new OffsetHoleChunk().wrap(e, StructuredReplyHeader.BYTES).encode(4096, 64 << 10);
        assertArrayEquals(spec, e.array());
    }

    @Test
    void blockStatusChunk() {
        // context 1; 1 MiB in use, then 0x80000000 bytes hole + zero (the length is unsigned)
        byte[] spec = hex("668e33ef 0001 0005 0000000000000033 00000014  00000001 00100000 00000000 80000000 00000003");
        assertEquals(StructuredReplyHeader.BYTES + BlockStatusChunk.length(2), spec.length);
        ByteBuffer b = ByteBuffer.wrap(spec);
        StructuredReplyHeader h = new StructuredReplyHeader().wrap(b);
        assertEquals(Nbd.REPLY_TYPE_BLOCK_STATUS, h.type());
        assertEquals(2, BlockStatusChunk.descriptors(h.length()));
        BlockStatusChunk s = new BlockStatusChunk().wrap(b, StructuredReplyHeader.BYTES);
        assertEquals(1, s.contextId());
        assertEquals(1 << 20, s.extentLength(0));
        assertEquals(0, s.extentFlags(0));
        assertEquals(0x80000000L, s.extentLength(1));
        assertEquals(Nbd.STATE_HOLE | Nbd.STATE_ZERO, s.extentFlags(1));

        ByteBuffer e = ByteBuffer.allocate(spec.length);
        new StructuredReplyHeader().wrap(e).encode(Nbd.REPLY_FLAG_DONE, Nbd.REPLY_TYPE_BLOCK_STATUS, 0x33, BlockStatusChunk.length(2));
        new BlockStatusChunk().wrap(e, StructuredReplyHeader.BYTES).contextId(1)
                .extent(0, 1 << 20, 0).extent(1, 0x80000000L, Nbd.STATE_HOLE | Nbd.STATE_ZERO);
        assertArrayEquals(spec, e.array());

        assertEquals(-1, BlockStatusChunk.descriptors(3));
        assertEquals(-1, BlockStatusChunk.descriptors(4 + 7));
        assertEquals(0, BlockStatusChunk.descriptors(4));
    }

    @Test
    void errorChunk() {
        // type NBD_REPLY_TYPE_ERROR (2^15 + 1), length 6 + 5; EINVAL, "hello"
        byte[] spec = hex("668e33ef 0001 8001 0000000000000044 0000000b  00000016 0005 68656c6c6f");
        ByteBuffer b = ByteBuffer.wrap(spec);
        StructuredReplyHeader h = new StructuredReplyHeader().wrap(b);
        assertEquals(Nbd.REPLY_TYPE_ERROR, h.type());
        assertTrue(StructuredReplyHeader.isError(h.type()));
        assertFalse(StructuredReplyHeader.isError(Nbd.REPLY_TYPE_BLOCK_STATUS));
        assertEquals(ErrorChunk.BYTES + 5, h.length());
        ErrorChunk c = new ErrorChunk().wrap(b, StructuredReplyHeader.BYTES);
        assertEquals(Nbd.EINVAL, c.error());
        assertEquals(5, c.messageLength());
        assertEquals("hello", c.message());

        ByteBuffer e = ByteBuffer.allocate(StructuredReplyHeader.BYTES + ErrorChunk.BYTES + ErrorChunk.MAX_MESSAGE_BYTES);
        int n = new ErrorChunk().wrap(e, StructuredReplyHeader.BYTES).encode(Nbd.EINVAL, "hello");
        new StructuredReplyHeader().wrap(e).encode(Nbd.REPLY_FLAG_DONE, Nbd.REPLY_TYPE_ERROR, 0x44, n);
        assertArrayEquals(spec, slice(e, 0, StructuredReplyHeader.BYTES + n));

        // ERROR_OFFSET: the offset follows the message
        ErrorChunk o = new ErrorChunk().wrap(ByteBuffer.wrap(hex("00000005 0002 6869 0000000000003000")), 0);
        assertEquals("hi", o.message());
        assertEquals(0x3000, o.errorOffset());

        // a message beyond the spec's limit is cut, and its length says so
        assertEquals(ErrorChunk.BYTES + ErrorChunk.MAX_MESSAGE_BYTES, new ErrorChunk().wrap(e, 0).encode(Nbd.EIO, "x".repeat(5000)));
        assertEquals(ErrorChunk.MAX_MESSAGE_BYTES, new ErrorChunk().wrap(e, 0).messageLength());
    }

    @Test
    void littleEndianBuffersAreRefused() {
        ByteBuffer le = ByteBuffer.allocate(32).order(ByteOrder.LITTLE_ENDIAN);
        assertThrows(IllegalArgumentException.class, () -> new RequestHeader().wrap(le));
        assertThrows(IllegalArgumentException.class, () -> new SimpleReplyHeader().wrap(le));
        assertThrows(IllegalArgumentException.class, () -> new StructuredReplyHeader().wrap(le));
    }
}
