package io.snapbd.server.transmission;

import io.snapbd.engine.BlockDevice;
import io.snapbd.engine.volume.Volume;
import io.snapbd.server.export.Export;
import io.snapbd.server.handshake.Negotiated;
import io.snapbd.server.protocol.Nbd;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.ByteChannel;
import java.nio.channels.GatheringByteChannel;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Reply gathering (issue 27): the replies of requests that arrived together leave in one system call, a reply with
 * nothing queued behind it leaves before the reader waits for input, and every reply stays whole and correct
 * (simple and structured, data, holes, errors, a large READ sent from the mapping behind gathered replies, a
 * FLUSH answered by the sync pool in between). Real {@link Connection} and volume; the socket is an in-memory
 * channel that hands out one prepared chunk of requests per read() and counts the write calls.
 */
@Timeout(60)
class ReplyGatheringTest {

    static final int BS = 4096;
    static final long SIZE = 4L << 20;
    static final long WRITTEN = 3L << 20;      // [WRITTEN, SIZE) is never written: a hole

    @TempDir
    static Path dir;
    static Volume vol;
    static byte[] content;
    static ExecutorService pool;

    @BeforeAll
    static void setUp() throws IOException {
        PatternedVolume pv = new PatternedVolume(dir, SIZE, WRITTEN);
        vol = pv.vol;
        content = pv.content;
        pool = Executors.newCachedThreadPool();
    }

    @AfterAll
    static void tearDown() throws IOException {
        pool.shutdownNow();
        vol.close();
    }

    @Test
    void queuedRepliesLeaveTogetherAndALoneReplyAtOnce() throws IOException {
        Chunks ch = new Chunks();
        ByteBuffer a = requests();
        for (int i = 0; i < 8; i++) {
            request(a, Nbd.CMD_READ, 100 + i, i * 8192L, BS);
        }
        ch.add(a);
        ByteBuffer b = requests();
        request(b, Nbd.CMD_READ, 200, 12288, BS);
        ch.add(b);
        ByteBuffer c = requests();
        request(c, Nbd.CMD_READ, 300, 40960, BS);
        request(c, Nbd.CMD_READ, 301, 81920, 2 * BS);
        request(c, Nbd.CMD_READ, 302, 0, 1 << 20);         // above GATHER_MAX: sent from the mapping
        request(c, Nbd.CMD_DISC, 303, 0, 0);
        ch.add(c);

        serve(ch, false);

        // Chunk a: 8 replies, one system call, sent before the reader waited for chunk b.
        assertEquals(1, ch.writesAtRead.get(1), "write calls when the reader asked for the second chunk");
        assertEquals(8 * (16 + BS), ch.bytesAtRead.get(1));
        // Chunk b: a lone reply, sent at once (one more call) before the reader waited again.
        assertEquals(2, ch.writesAtRead.get(2));
        assertEquals(9 * (16 + BS), ch.bytesAtRead.get(2));
        // Chunk c: the two small replies went out in the same writev as the large READ's header and payload.
        assertEquals(3, ch.buffersOfCall.get(2), "batch, header and payload in one writev");

        ByteBuffer out = ByteBuffer.wrap(ch.out.toByteArray());
        for (int i = 0; i < 8; i++) {
            expectSimpleRead(out, 100 + i, i * 8192L, BS);
        }
        expectSimpleRead(out, 200, 12288, BS);
        expectSimpleRead(out, 300, 40960, BS);
        expectSimpleRead(out, 301, 81920, 2 * BS);
        expectSimpleRead(out, 302, 0, 1 << 20);
        assertEquals(0, out.remaining(), "nothing after the last reply");
    }

    @Test
    void structuredDataHolesErrorsWritesAndAFlushFromThePool() throws IOException {
        Chunks ch = new Chunks();
        ByteBuffer a = requests();
        request(a, Nbd.CMD_READ, 1, 4096, BS);                       // data
        request(a, Nbd.CMD_READ, 2, WRITTEN - BS, 2 * BS);           // data chunk + hole chunk
        request(a, Nbd.CMD_READ, 3, SIZE, BS);                       // outside: error chunk
        request(a, Nbd.CMD_FLUSH, 4, 0, 0);                          // answered by the sync pool
        a.putInt(Nbd.REQUEST_MAGIC).putShort((short) 0).putShort((short) Nbd.CMD_WRITE).putLong(5)
                .putLong(WRITTEN + BS).putInt(BS);
        byte[] payload = new byte[BS];
        Arrays.fill(payload, (byte) 0x5a);
        a.put(payload);                                              // a WRITE with its payload
        request(a, Nbd.CMD_READ, 6, WRITTEN + BS, BS);               // reads what the WRITE wrote
        request(a, Nbd.CMD_DISC, 7, 0, 0);
        ch.add(a);

        serve(ch, true);

        byte[] expected6 = payload;
        ByteBuffer out = ByteBuffer.wrap(ch.out.toByteArray());
        boolean flushSeen = false;
        int[] order = {1, 2, 2, 3, 5, 6};
        int next = 0;
        while (out.hasRemaining()) {
            int magic = out.getInt(out.position());
            if (magic == Nbd.SIMPLE_REPLY_MAGIC) {
                out.getInt();
                assertEquals(0, out.getInt());
                long handle = out.getLong();
                if (handle == 4) {
                    flushSeen = true;
                    continue;
                }
                assertEquals(order[next++], handle);
                continue;
            }
            assertEquals(Nbd.STRUCTURED_REPLY_MAGIC, out.getInt());
            int flags = out.getShort() & 0xffff;
            int type = out.getShort() & 0xffff;
            long handle = out.getLong();
            int length = out.getInt();
            assertEquals(order[next++], handle);
            if (handle == 1) {
                assertEquals(Nbd.REPLY_TYPE_OFFSET_DATA, type);
                assertEquals(Nbd.REPLY_FLAG_DONE, flags);
                assertEquals(4096, out.getLong());
                assertArrayEquals(Arrays.copyOfRange(content, 4096, 4096 + BS), bytes(out, length - 8));
            } else if (handle == 2 && type == Nbd.REPLY_TYPE_OFFSET_DATA) {
                assertEquals(0, flags);
                assertEquals(WRITTEN - BS, out.getLong());
                assertArrayEquals(Arrays.copyOfRange(content, (int) WRITTEN - BS, (int) WRITTEN), bytes(out, length - 8));
            } else if (handle == 2) {
                assertEquals(Nbd.REPLY_TYPE_OFFSET_HOLE, type);
                assertEquals(Nbd.REPLY_FLAG_DONE, flags);
                assertEquals(WRITTEN, out.getLong());
                assertEquals(BS, out.getInt());
            } else if (handle == 3) {
                assertEquals(Nbd.REPLY_TYPE_ERROR, type);
                assertEquals(Nbd.EINVAL, out.getInt());
                bytes(out, length - 4);
            } else {
                assertEquals(6, handle);
                assertEquals(Nbd.REPLY_TYPE_OFFSET_DATA, type);
                assertEquals(WRITTEN + BS, out.getLong());
                assertArrayEquals(expected6, bytes(out, length - 8));
            }
        }
        assertEquals(order.length, next, "every reply, in the order of the requests");
        assertTrue(flushSeen, "the FLUSH was answered");
        // The FLUSH sends the replies gathered before it (the pool may make the reader wait), the pool answers the
        // FLUSH on its own, the rest leaves together when the input ends: three calls, not one per reply (eight).
        assertTrue(ch.writes <= 3, ch.writes + " write calls");
    }

    // ---- helpers ---------------------------------------------------------------------------------------------

    private void serve(Chunks ch, boolean structured) {
        Export export = new Export("v", null, vol);
        Negotiated n = structured ? new Negotiated(export, true, List.of()) : Negotiated.plain(export);
        new Connection(ch, ch, n, pool, "test", 1).serve();     // one reader: the call counts are exact
    }

    private static ByteBuffer requests() {
        return ByteBuffer.allocate(64 << 10);
    }

    private static void request(ByteBuffer b, int type, long handle, long offset, int length) {
        b.putInt(Nbd.REQUEST_MAGIC).putShort((short) 0).putShort((short) type).putLong(handle).putLong(offset)
                .putInt(length);
    }

    private static void expectSimpleRead(ByteBuffer out, long handle, long offset, int length) {
        assertEquals(Nbd.SIMPLE_REPLY_MAGIC, out.getInt());
        assertEquals(0, out.getInt());
        assertEquals(handle, out.getLong());
        assertArrayEquals(Arrays.copyOfRange(content, (int) offset, (int) offset + length), bytes(out, length));
    }

    private static byte[] bytes(ByteBuffer b, int n) {
        byte[] r = new byte[n];
        b.get(r);
        return r;
    }

    /**
     * The client's side: each read() returns the next prepared chunk of requests whole (then end of stream) and
     * notes how many write calls and bytes the server had made by then; write calls are counted, a gathering
     * write(ByteBuffer[]) as one call, with its number of non-empty buffers.
     */
    static final class Chunks implements ByteChannel, GatheringByteChannel {
        final List<ByteBuffer> chunks = new ArrayList<>();
        final ByteArrayOutputStream out = new ByteArrayOutputStream();
        final List<Integer> writesAtRead = new ArrayList<>();
        final List<Integer> bytesAtRead = new ArrayList<>();
        final List<Integer> buffersOfCall = new ArrayList<>();
        int writes;

        void add(ByteBuffer b) {
            chunks.add(b.flip());
        }

        @Override
        public synchronized int read(ByteBuffer dst) {
            writesAtRead.add(writes);
            bytesAtRead.add(out.size());
            if (chunks.isEmpty()) {
                return -1;
            }
            ByteBuffer c = chunks.get(0);
            assertTrue(dst.remaining() >= c.remaining(), "a chunk fits the read-ahead buffer");
            int n = c.remaining();
            dst.put(c);
            chunks.remove(0);
            return n;
        }

        @Override
        public synchronized int write(ByteBuffer src) {
            writes++;
            buffersOfCall.add(1);
            return copy(src);
        }

        @Override
        public synchronized long write(ByteBuffer[] srcs, int offset, int length) {
            writes++;
            long n = 0;
            int buffers = 0;
            for (int i = offset; i < offset + length; i++) {
                buffers += srcs[i].hasRemaining() ? 1 : 0;
                n += copy(srcs[i]);
            }
            buffersOfCall.add(buffers);
            return n;
        }

        @Override
        public long write(ByteBuffer[] srcs) {
            return write(srcs, 0, srcs.length);
        }

        private int copy(ByteBuffer src) {
            byte[] b = new byte[src.remaining()];
            src.get(b);
            out.write(b, 0, b.length);
            return b.length;
        }

        @Override
        public boolean isOpen() {
            return true;
        }

        @Override
        public void close() {
        }
    }
}
