package io.snapbd.server.transmission;

import io.snapbd.engine.BlockDevice;
import io.snapbd.engine.io.ByteSink;
import io.snapbd.engine.volume.Volume;
import io.snapbd.server.export.Export;
import io.snapbd.server.export.ExportStats;
import io.snapbd.server.handshake.Negotiated;
import io.snapbd.server.protocol.Nbd;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Two readers per connection (issue 27): while one thread answers a READ (here: a READ whose device read blocks)
 * of a client with several requests in flight, the other reads the next request from the same connection and
 * answers it. With one reader the next request is never read while the READ blocks, and these tests time out. Real {@link Connection}, volume and Unix socket;
 * the device is the volume with one offset whose read waits for the test (and may then fail half way).
 */
@Timeout(60)
class ConcurrentReadersTest {

    static final int BS = 4096;
    static final long SIZE = 4L << 20;
    static final long BLOCKED = 1L << 20;      // reads at this offset wait for the test

    @TempDir
    static Path dir;
    static Volume vol;
    static byte[] content;
    static ExecutorService pool;

    @BeforeAll
    static void setUp() throws IOException {
        PatternedVolume pv = new PatternedVolume(dir, SIZE, SIZE);
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
    void aReadThatBlocksDoesNotHoldUpTheNextRequest() throws Exception {
        Blocking device = new Blocking(false);
        try (Served s = new Served(device, "a")) {
            s.send(Nbd.CMD_READ, 1, 8192, BS, Nbd.CMD_READ, 2, BLOCKED, BS);      // two in flight: a client that pipelines
            s.expectRead(1, 8192, BS);
            assertTrue(device.entered.await(30, TimeUnit.SECONDS), "the second READ reached the device");
            s.send(Nbd.CMD_READ, 3, 40960, BS);
            s.expectRead(3, 40960, BS);         // read and answered while the second READ still waits
            device.release.countDown();
            s.expectRead(2, BLOCKED, BS);
            s.send(Nbd.CMD_DISC, 4, 0, 0);
            s.awaitEnd();
            // Both readers record into the connection's one stats slot, the handed-off READ too.
            ExportStats.OpStats reads = s.export.stats().snapshot(false, false).op(ExportStats.Op.READ);
            assertEquals(3, reads.requests());
            assertEquals(3, reads.latency().getTotalCount());
            assertEquals(3L * BS, reads.bytes());
        }
    }

    /**
     * A lone connection at depth 1 keeps its READs on one reader, which records them in the connection's stats slot
     * without taking the slot's monitor (no lock per request). The test holds that monitor while the client reads on:
     * a reader that took it per request would stop (BLOCKED) after the reply before its record, and the next reply
     * would never come.
     */
    @Test
    void aLoneDepthOneReaderRecordsWithoutTheSlotsMonitor() throws Exception {
        try (Served s = new Served(vol, "c")) {
            s.send(Nbd.CMD_READ, 1, 8192, BS);
            s.expectRead(1, 8192, BS);
            ExportStats.Slot slot = s.connection.statsSlot();
            synchronized (slot) {
                for (int h = 2; h <= 4; h++) {
                    s.send(Nbd.CMD_READ, h, h * 8192L, BS);
                    s.expectReadUnlessBlocked(h, h * 8192L, BS);
                }
            }
            s.send(Nbd.CMD_DISC, 5, 0, 0);
            s.awaitEnd();
            ExportStats.OpStats reads = s.export.stats().snapshot(false, false).op(ExportStats.Op.READ);
            assertEquals(4, reads.requests());
            assertEquals(4, reads.latency().getTotalCount());
        }
    }

    @Test
    void aReadFailingHalfWayEndsTheConnectionWhileTheOtherReaderWaitsForInput() throws Exception {
        Blocking device = new Blocking(true);
        try (Served s = new Served(device, "b")) {
            s.send(Nbd.CMD_READ, 1, 8192, BS, Nbd.CMD_READ, 2, BLOCKED, BS);
            s.expectRead(1, 8192, BS);
            assertTrue(device.entered.await(30, TimeUnit.SECONDS), "the second READ reached the device");
            s.send(Nbd.CMD_CACHE, 3, 0, BS);
            s.expectRead(3, 0, 0);              // answered by the other reader, which kept the role: it waits in read()
            device.release.countDown();         // the second READ's data stops after half of it
            ByteBuffer reply = ByteBuffer.allocate(16 + BS);
            while (s.client.read(reply) >= 0) {
                assertTrue(reply.hasRemaining(), "nothing beyond the cut reply");
            }
            assertEquals(16 + BS / 2, reply.position(), "the header and the half that was sent, then the end");
            s.awaitEnd();                      // the connection ended although nobody sent anything more
        }
    }

    // ---- helpers ---------------------------------------------------------------------------------------------

    /** A connection served on its own thread with two readers, over a Unix socket; {@code client} is the peer. */
    final class Served implements AutoCloseable {
        final SocketChannel client;
        final SocketChannel server;
        final Thread thread;
        final Export export;
        final Connection connection;

        Served(BlockDevice device, String name) throws IOException {
            Path p = dir.resolve(name + ".sock");
            try (ServerSocketChannel l = ServerSocketChannel.open(StandardProtocolFamily.UNIX)) {
                l.bind(UnixDomainSocketAddress.of(p));
                client = SocketChannel.open(UnixDomainSocketAddress.of(p));
                server = l.accept();
            }
            export = new Export("v", null, device);
            connection = new Connection(server, server, Negotiated.plain(export), pool, "test", 2);
            thread = new Thread(connection::serve, "serve " + name);
            thread.start();
        }

        /** Sends requests (type, handle, offset, length; repeated) in one write. */
        void send(long... requests) throws IOException {
            ByteBuffer b = ByteBuffer.allocate(28 * requests.length / 4);
            for (int i = 0; i < requests.length; i += 4) {
                b.putInt(Nbd.REQUEST_MAGIC).putShort((short) 0).putShort((short) requests[i]).putLong(requests[i + 1])
                        .putLong(requests[i + 2]).putInt((int) requests[i + 3]);
            }
            b.flip();
            while (b.hasRemaining()) {
                client.write(b);
            }
        }

        void expectRead(long handle, long offset, int length) throws IOException {
            ByteBuffer b = ByteBuffer.allocate(16 + length);     // length 0: a reply without data
            while (b.hasRemaining()) {
                assertTrue(client.read(b) >= 0, "reply to " + handle + " cut short");
            }
            checkRead(b, handle, offset, length);
        }

        /**
         * Like {@link #expectRead}, but fails instead of waiting for ever when one of the connection's readers (the
         * serving thread and its second reader) is blocked on a monitor before the reply has come: polls the socket
         * without blocking.
         */
        void expectReadUnlessBlocked(long handle, long offset, int length) throws IOException {
            List<Thread> readers = new ArrayList<>();
            for (Thread t : Thread.getAllStackTraces().keySet()) {
                if (t == thread || t.getName().equals(thread.getName() + " (2nd reader)")) {
                    readers.add(t);
                }
            }
            assertEquals(2, readers.size(), "the connection's two readers");
            ByteBuffer b = ByteBuffer.allocate(16 + length);
            client.configureBlocking(false);
            try {
                while (b.hasRemaining()) {
                    int n = client.read(b);
                    assertTrue(n >= 0, "reply to " + handle + " cut short");
                    if (n == 0) {
                        for (Thread t : readers) {
                            assertTrue(t.getState() != Thread.State.BLOCKED, t.getName()
                                    + " waits for a monitor (the stats slot's) before the reply to " + handle);
                        }
                        Thread.yield();
                    }
                }
            } finally {
                client.configureBlocking(true);
            }
            checkRead(b, handle, offset, length);
        }

        /** {@code b} holds a whole successful simple reply to {@code handle} with the volume's data at {@code offset}. */
        private void checkRead(ByteBuffer b, long handle, long offset, int length) {
            b.flip();
            assertEquals(Nbd.SIMPLE_REPLY_MAGIC, b.getInt());
            assertEquals(0, b.getInt());
            assertEquals(handle, b.getLong());
            byte[] data = new byte[length];
            b.get(data);
            assertArrayEquals(Arrays.copyOfRange(content, (int) offset, (int) offset + length), data);
        }

        void awaitEnd() throws InterruptedException {
            thread.join();
        }

        @Override
        public void close() throws IOException {
            client.close();
            server.close();
        }
    }

    /** The volume, except that a read at {@link #BLOCKED} waits for {@link #release} (then fails half way if asked). */
    static final class Blocking extends ForwardingDevice {
        final CountDownLatch entered = new CountDownLatch(1);
        final CountDownLatch release = new CountDownLatch(1);
        final boolean failHalfWay;

        Blocking(boolean failHalfWay) {
            super(vol);
            this.failHalfWay = failHalfWay;
        }

        @Override
        public void read(Session s, long offset, int length, ByteSink sink) throws IOException {
            if (offset == BLOCKED) {
                entered.countDown();
                try {
                    assertTrue(release.await(30, TimeUnit.SECONDS));
                } catch (InterruptedException e) {
                    throw new IOException(e);
                }
                if (failHalfWay) {
                    sink.write(ByteBuffer.wrap(content, (int) offset, length / 2));
                    throw new IOException("the disk failed");
                }
            }
            vol.read(s, offset, length, sink);
        }
    }
}
