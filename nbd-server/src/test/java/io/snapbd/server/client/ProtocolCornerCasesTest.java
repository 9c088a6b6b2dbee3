package io.snapbd.server.client;

import io.snapbd.server.protocol.Nbd;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.net.SocketTimeoutException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Protocol corner cases that real servers do not produce on demand, played by a {@link ScriptedServer}:
 * replies and chunks out of order, holes inside a reply, error chunks, violations, a silent server.
 */
@Timeout(value = 2, unit = TimeUnit.MINUTES)       // safety net only
class ProtocolCornerCasesTest {

    private static final long SIZE = 1 << 20;

    @TempDir
    Path dir;

    private static byte[] bytes(int n, int seed) {
        byte[] b = new byte[n];
        for (int i = 0; i < n; i++) {
            b[i] = (byte) (i * 31 + seed);
        }
        return b;
    }

    private static ByteBuffer garbage(int n) {
        ByteBuffer b = ByteBuffer.allocate(n);
        Arrays.fill(b.array(), (byte) 0xAA);
        return b;
    }

    /**
     * A server without NBD_OPT_GO (the client falls back to NBD_OPT_EXPORT_NAME) that answers three reads in
     * reverse order, interleaves their chunks, and mixes data with holes inside one reply.
     */
    @Test
    void exportNameFallbackAndInterleavedOutOfOrderChunks() throws Exception {
        try (ScriptedServer server = new ScriptedServer(dir, peer -> {
            peer.greet(Nbd.FLAG_FIXED_NEWSTYLE | Nbd.FLAG_NO_ZEROES);
            while (true) {
                ScriptedServer.Option o = peer.readOption();
                if (o.option() == Nbd.OPT_STRUCTURED_REPLY) {
                    peer.reply(o.option(), Nbd.REP_ACK, ByteBuffer.allocate(0));
                } else if (o.option() == Nbd.OPT_SET_META_CONTEXT) {
                    byte[] name = Nbd.BASE_ALLOCATION.getBytes(StandardCharsets.UTF_8);
                    peer.reply(o.option(), Nbd.REP_META_CONTEXT, ByteBuffer.allocate(4 + name.length).putInt(7).put(name).flip());
                    peer.reply(o.option(), Nbd.REP_ACK, ByteBuffer.allocate(0));
                } else if (o.option() == Nbd.OPT_GO) {
                    peer.reply(o.option(), Nbd.REP_ERR_UNSUP, ByteBuffer.allocate(0));
                } else if (o.option() == Nbd.OPT_EXPORT_NAME) {
                    assertEquals("disk", StandardCharsets.UTF_8.decode(o.data()).toString());
                    peer.write(ByteBuffer.allocate(10).putLong(SIZE).putShort((short) (Nbd.FLAG_HAS_FLAGS | Nbd.FLAG_SEND_FLUSH)).flip());
                    break;
                } else {
                    throw new AssertionError("unexpected option " + o.option());
                }
            }
            ScriptedServer.Request a = peer.readRequest();
            ScriptedServer.Request b = peer.readRequest();
            ScriptedServer.Request c = peer.readRequest();
            // c = [100000, +10000): its second half is a hole, sent first
            peer.hole(false, c.handle(), 105_000, 5_000);
            peer.data(true, b.handle(), 8192, bytes(4096, 2));
            peer.data(false, c.handle(), 100_000, bytes(5_000, 3));
            // a = [0, +8192): data for the second half, then a hole for the first, then NONE
            peer.data(false, a.handle(), 4096, bytes(4096, 1));
            peer.hole(false, a.handle(), 0, 4096);
            peer.none(c.handle());
            peer.none(a.handle());

            ScriptedServer.Request status = peer.readRequest();
            assertEquals(Nbd.CMD_BLOCK_STATUS, status.type());
            peer.blockStatus(true, status.handle(), 7, 4096, Nbd.STATE_HOLE | Nbd.STATE_ZERO, 8192, 0);
            peer.expectDisconnect();
        })) {
            try (NbdClient client = NbdClient.connect(server.uri("disk"),
                    NbdClient.Options.defaults().withMetaContexts(Nbd.BASE_ALLOCATION))) {
                assertEquals(SIZE, client.size());
                assertEquals("disk", client.exportName());
                assertTrue(client.structuredReplies());
                assertTrue(client.canFlush());
                assertFalse(client.canTrim());
                assertFalse(client.blockSize().advertised(), "NBD_OPT_EXPORT_NAME carries no block sizes");
                assertEquals(Map.of(Nbd.BASE_ALLOCATION, 7), client.metaContexts());

                ByteBuffer bufA = garbage(8192);
                ByteBuffer bufB = garbage(4096);
                ByteBuffer bufC = garbage(10_000);
                AtomicInteger errors = new AtomicInteger();
                ConcurrentLinkedQueue<Long> order = new ConcurrentLinkedQueue<>();
                CountDownLatch done = new CountDownLatch(3);
                Completion completion = (error, tag) -> {
                    errors.addAndGet(error == Completion.OK ? 0 : 1);
                    order.add(tag);
                    done.countDown();
                };
                client.submitRead(0, bufA, 'a', completion);
                client.submitRead(8192, bufB, 'b', completion);
                client.submitRead(100_000, bufC, 'c', completion);
                done.await();
                assertEquals(0, errors.get());
                assertEquals(List.of((long) 'b', (long) 'c', (long) 'a'), List.copyOf(order), "completion order follows the replies");

                byte[] expectA = new byte[8192];
                System.arraycopy(bytes(4096, 1), 0, expectA, 4096, 4096);
                assertArrayEquals(expectA, bufA.array());
                assertArrayEquals(bytes(4096, 2), bufB.array());
                byte[] expectC = new byte[10_000];
                System.arraycopy(bytes(5_000, 3), 0, expectC, 0, 5_000);
                assertArrayEquals(expectC, bufC.array());
                assertEquals(2, client.holeChunks());

                List<Extent> extents = client.blockStatus(Nbd.BASE_ALLOCATION, 0, 12288, false);
                assertEquals(List.of(new Extent(0, 4096, 3), new Extent(4096, 8192, 0)), extents);
                assertTrue(extents.get(0).isHole() && extents.get(0).isZero());
            }
            server.finish();
        }
    }

    /** Four rounds of 64 reads answered in reverse: back-pressure, and handles reused across rounds. */
    @Test
    void slotsAreReusedAcrossRoundsOfOutOfOrderReplies() throws Exception {
        int rounds = 4;
        int depth = 64;
        try (ScriptedServer server = new ScriptedServer(dir, peer -> {
            peer.handshake(SIZE, 0, Map.of());
            for (int round = 0; round < rounds; round++) {
                ScriptedServer.Request[] batch = new ScriptedServer.Request[depth];
                for (int i = 0; i < depth; i++) {
                    batch[i] = peer.readRequest();
                }
                for (int i = depth - 1; i >= 0; i--) {
                    ScriptedServer.Request r = batch[i];
                    peer.data(true, r.handle(), r.offset(), bytes(r.length(), (int) (r.offset() / 512)));
                }
            }
            peer.expectDisconnect();
        })) {
            try (NbdClient client = NbdClient.connect(server.uri(""), NbdClient.Options.defaults().withMaxInFlight(depth))) {
                AtomicInteger bad = new AtomicInteger();
                CountDownLatch done = new CountDownLatch(rounds * depth);
                for (int i = 0; i < rounds * depth; i++) {
                    ByteBuffer dst = ByteBuffer.allocate(512);
                    int block = i;
                    client.submitRead(block * 512L, dst, block, (error, tag) -> {
                        if (error != Completion.OK || tag != block || !Arrays.equals(bytes(512, block), dst.array())) {
                            bad.incrementAndGet();
                        }
                        done.countDown();
                    });
                }
                done.await();
                assertEquals(0, bad.get());
            }
            server.finish();
        }
    }

    @Test
    void errorChunksFailOnlyTheirRequest() throws Exception {
        try (ScriptedServer server = new ScriptedServer(dir, peer -> {
            peer.handshake(SIZE, Nbd.FLAG_SEND_FLUSH, Map.of());
            ScriptedServer.Request r = peer.readRequest();
            peer.error(true, Nbd.REPLY_TYPE_ERROR_OFFSET, r.handle(), Nbd.EIO, "bad sector", r.offset() + 512);
            r = peer.readRequest();
            peer.error(true, 0x8000 | 77, r.handle(), Nbd.ENOMEM, "from the future");   // unknown error type
            r = peer.readRequest();
            peer.data(true, r.handle(), r.offset(), bytes(2048, 0));                      // half of the data
            r = peer.readRequest();
            peer.simple(r.handle(), Nbd.EPERM, new byte[0]);                               // simple error reply
            r = peer.readRequest();
            peer.data(true, r.handle(), r.offset(), bytes(r.length(), 9));
            peer.expectDisconnect();
        })) {
            try (NbdClient client = NbdClient.connect(server.uri(""))) {
                NbdException e = assertThrows(NbdException.class, () -> client.read(4096, ByteBuffer.allocate(4096)));
                assertEquals("EIO", e.errnoName());
                assertEquals("bad sector at offset 4608", e.serverMessage());
                e = assertThrows(NbdException.class, () -> client.write(0, ByteBuffer.allocate(100), false));
                assertEquals("ENOMEM", e.errnoName());
                assertEquals("from the future", e.serverMessage());
                e = assertThrows(NbdException.class, () -> client.read(0, ByteBuffer.allocate(4096)));
                assertEquals("EIO", e.errnoName());
                assertTrue(e.getMessage().contains("2048 of 4096"), e.getMessage());
                e = assertThrows(NbdException.class, client::flush);
                assertEquals(Nbd.EPERM, e.errno());
                ByteBuffer ok = ByteBuffer.allocate(1000);
                client.read(77, ok);
                assertArrayEquals(bytes(1000, 9), ok.array(), "the connection survived every error");
            }
            server.finish();
        }
    }

    @Test
    void replyForAnUnknownHandleFailsEverythingInFlight() throws Exception {
        try (ScriptedServer server = new ScriptedServer(dir, peer -> {
            peer.handshake(SIZE, 0, Map.of());
            peer.readRequest();
            peer.readRequest();
            peer.none(0xdeadbeefL);
            peer.drain();
        })) {
            NbdClient client = NbdClient.connect(server.uri(""));
            AtomicInteger lost = new AtomicInteger();
            CountDownLatch done = new CountDownLatch(2);
            for (int i = 0; i < 2; i++) {
                client.submitRead(0, ByteBuffer.allocate(10), i, (error, tag) -> {
                    lost.addAndGet(error == Completion.CONNECTION_FAILED ? 1 : 0);
                    done.countDown();
                });
            }
            done.await();
            assertEquals(2, lost.get());
            assertTrue(client.failure().getMessage().contains("unknown handle 0xdeadbeef"), client.failure().getMessage());
            client.close();
            server.finish();
        }
    }

    @Test
    void simpleReplyToAStructuredReadIsAViolation() throws Exception {
        try (ScriptedServer server = new ScriptedServer(dir, peer -> {
            peer.handshake(SIZE, 0, Map.of());
            ScriptedServer.Request r = peer.readRequest();
            peer.simple(r.handle(), 0, bytes(r.length(), 0));
            peer.drain();
        })) {
            try (NbdClient client = NbdClient.connect(server.uri(""))) {
                IOException e = assertThrows(IOException.class, () -> client.read(0, ByteBuffer.allocate(16)));
                assertFalse(e instanceof NbdException);
                assertTrue(client.failure().getMessage().contains("simple reply"), client.failure().getMessage());
            }
            server.finish();
        }
    }

    @Test
    void serverHangingUpInTheMiddleOfAReply() throws Exception {
        try (ScriptedServer server = new ScriptedServer(dir, peer -> {
            peer.handshake(SIZE, 0, Map.of());
            ScriptedServer.Request r = peer.readRequest();
            peer.write(ByteBuffer.allocate(20 + 8 + 100).putInt(Nbd.STRUCTURED_REPLY_MAGIC).putShort((short) 1)
                    .putShort((short) Nbd.REPLY_TYPE_OFFSET_DATA).putLong(r.handle()).putInt(8 + r.length())
                    .putLong(r.offset()).flip());
            peer.close();
        })) {
            try (NbdClient client = NbdClient.connect(server.uri(""))) {
                IOException e = assertThrows(IOException.class, () -> client.read(0, ByteBuffer.allocate(4096)));
                assertFalse(e instanceof NbdException);
                assertTrue(client.failure().getMessage().contains("in the middle"), client.failure().getMessage());
            }
            server.finish();
        }
    }

    /** A server that accepts but never speaks: the connect timeout ends the wait. */
    @Test
    void silentServerTimesOut() throws Exception {
        try (ScriptedServer server = new ScriptedServer(dir, ScriptedServer.Peer::drain)) {
            NbdClient.Options quick = NbdClient.Options.defaults().withConnectTimeout(Duration.ofMillis(200));
            SocketTimeoutException e = assertThrows(SocketTimeoutException.class, () -> NbdClient.connect(server.uri(""), quick));
            assertTrue(e.getMessage().contains("no NBD handshake within"), e.getMessage());
            server.finish();
        }
    }

    @Test
    void connectionRefusedNamesTheServer() {
        NbdUri nowhere = NbdUri.unix(dir.resolve("nobody.sock"), "x");
        IOException e = assertThrows(IOException.class, () -> NbdClient.connect(nowhere));
        assertTrue(e.getMessage().contains(nowhere.toString()), e.getMessage());
    }
}
