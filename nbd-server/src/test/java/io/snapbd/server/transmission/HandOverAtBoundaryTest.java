package io.snapbd.server.transmission;

import io.snapbd.engine.io.ByteSource;
import io.snapbd.engine.volume.Volume;
import io.snapbd.nativeio.FdPassing;
import io.snapbd.nativeio.InheritedSockets;
import io.snapbd.nativeio.NativeSocket;
import io.snapbd.nativeio.SocketPairs;
import io.snapbd.nativeio.UnixListeners;
import io.snapbd.server.export.Export;
import io.snapbd.server.handshake.Negotiated;
import io.snapbd.server.kernel.HandedConnection;
import io.snapbd.server.protocol.Nbd;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Handing a kernel connection over at a request boundary (issue 28): a {@link Connection} on the server's end of a
 * socket pair stops at {@link Connection#stopAtBoundary()}, answers everything it read (a FLUSH held in the sync
 * pool too), and the socket goes to a second Connection through a real handover socket ({@link HandedConnection}
 * over {@link FdPassing}) with the bytes read ahead of the boundary. The other end plays the kernel: it pipelines
 * requests across the handover and never reconnects; every request is answered exactly once, with the right data,
 * by one server or the other. Real volume, sockets and descriptor passing; the device only holds a WRITE and a
 * FLUSH until the test lets them go.
 */
class HandOverAtBoundaryTest {

    static final int BS = 4096;
    static final long SIZE = 4L << 20;
    static final long HELD = 1L << 20;      // a WRITE here waits for the test

    @TempDir
    static Path dir;
    static Volume vol;
    static ExecutorService pool;

    @BeforeAll
    static void setUp() throws IOException {
        vol = new PatternedVolume(dir, SIZE, BS).vol;
        pool = Executors.newCachedThreadPool();
    }

    @AfterAll
    static void tearDown() throws IOException {
        pool.shutdownNow();
        vol.close();
    }

    @Test
    void pipelinedRequestsAcrossTheHandoverAreAnsweredOnceWithTheirData() throws Exception {
        Holding device = new Holding();
        byte[] a = pattern(BS, 1);
        byte[] b = pattern(BS, 2);
        byte[] c = pattern(2 * BS, 3);
        byte[] d = pattern(16 * BS, 4);        // the WRITE whose payload straddles the boundary
        Requests first = new Requests()
                .write(10, 0x10000, a)
                .flush(11)                      // held in the sync pool during the handover
                .write(12, HELD, b);            // held in the device: the old server has read everything below
        int boundary = first.bytes.position();
        first.read(13, 0x10000, a)              // read ahead by the old server, answered by the new one
                .write(14, 0x20000, c)
                .flush(15)
                .read(16, 0x20000, c)
                .writeHeader(17, 0x30000, d.length);
        first.bytes.put(d, 0, d.length / 2);   // half of 17's payload before the handover, half after
        Requests second = new Requests();
        second.bytes.put(d, d.length / 2, d.length / 2);
        second.read(18, 0x30000, d).read(19, HELD, b).read(20, 0x10000, a);

        try (SocketPairs.SocketPair kernel = SocketPairs.create();
             InheritedSockets.Listener listener = UnixListeners.listen(dir.resolve("handover.sock"), 1)) {
            SocketPairs.End k = kernel.first();
            SocketPairs.End serverEnd = kernel.second();
            serverEnd.setReceiveTimeout(50);
            send(k, first);                     // all of it queued before the old server reads: one read takes it
            Connection old = new Connection(serverEnd, serverEnd, Negotiated.plain(new Export("v", null, device)), pool,
                    "old", 2);
            Thread oldThread = new Thread(old::serve, "old server");
            oldThread.start();
            device.writeEntered.await();
            old.stopAtBoundary();
            device.releaseWrite.countDown();

            Map<Long, Integer> answered = new HashMap<>();
            readReplies(k, first, answered, 2);     // 10 and 12; 11 waits for its FLUSH
            assertEquals(Map.of(10L, 1, 12L, 1), answered);
            assertTrue(oldThread.isAlive(), "the old server has not stopped while a FLUSH it read is unanswered");
            device.releaseFlush.countDown();
            readReplies(k, first, answered, 1);
            assertEquals(Map.of(10L, 1, 11L, 1, 12L, 1), answered);
            oldThread.join();

            byte[] readAhead = old.handedOver();
            assertNotNull(readAhead, "stopped at a boundary");
            byte[] tail = Arrays.copyOfRange(first.bytes.array(), boundary, first.bytes.position());
            assertTrue(readAhead.length > 0, "some requests were read ahead of the boundary");
            assertArrayEquals(Arrays.copyOf(tail, readAhead.length), readAhead, "the bytes after the boundary");

            // The move: the old side sends the descriptor and the read-ahead, then closes its copy without a shutdown.
            CompletableFuture<HandedConnection.Received> successor = CompletableFuture.supplyAsync(() -> {
                try (NativeSocket handover = UnixListeners.connect(dir.resolve("handover.sock"))) {
                    return HandedConnection.receive(new FdPassing(), handover);
                } catch (IOException e) {
                    throw new RuntimeException(e);
                }
            });
            try (NativeSocket handover = accept(listener)) {
                new HandedConnection("v", 0, false, readAhead).send(new FdPassing(), handover, serverEnd.fd());
            }
            serverEnd.closeWithoutShutdown();
            HandedConnection.Received got = successor.get();
            assertEquals("v", got.connection().export());
            assertFalse(got.connection().readOnly());
            assertArrayEquals(readAhead, got.connection().readAhead());

            send(k, second);                    // the rest of 17's payload and more requests, on the same socket
            try (NativeSocket adopted = NativeSocket.adopt(got.fd())) {
                Connection next = new Connection(adopted, adopted, Negotiated.plain(new Export("v", null, device)), pool,
                        "new", 2, ByteBuffer.wrap(got.connection().readAhead()));
                Thread newThread = servedThenClosed(next, adopted);
                Requests both = new Requests();
                both.reads.putAll(first.reads);
                both.reads.putAll(second.reads);
                readReplies(k, both, answered, 8);      // 13 to 20, FLUSH 15 perhaps out of order
                send(k, new Requests().disc(21));
                newThread.join();
                assertNull(next.handedOver(), "ended by DISC: nothing to hand over");
            }
            ByteBuffer rest = ByteBuffer.allocate(1);
            assertEquals(-1, k.read(rest), "nothing beyond the replies");
            Map<Long, Integer> once = new HashMap<>();
            for (long h = 10; h <= 20; h++) {
                once.put(h, 1);
            }
            assertEquals(once, answered, "each request answered exactly once");
        }
    }

    @Test
    void anIdleConnectionStopsAtItsReceiveTimeoutAndTheSuccessorServesTheNextRequest() throws Exception {
        byte[] a = pattern(BS, 5);
        try (SocketPairs.SocketPair kernel = SocketPairs.create()) {
            SocketPairs.End k = kernel.first();
            SocketPairs.End serverEnd = kernel.second();
            serverEnd.setReceiveTimeout(50);
            Connection old = new Connection(serverEnd, serverEnd, Negotiated.plain(new Export("v", null, vol)), pool, "old", 2);
            Thread oldThread = new Thread(old::serve, "old server");
            oldThread.start();
            Requests r = new Requests().write(30, 0x40000, a).read(31, 0x40000, a);
            send(k, r);
            Map<Long, Integer> answered = new HashMap<>();
            readReplies(k, r, answered, 2);
            old.stopAtBoundary();               // both readers idle: one waits in read(), one for the role
            oldThread.join();
            assertArrayEquals(new byte[0], old.handedOver());

            int copy;
            try (SocketPairs.SocketPair carrier = SocketPairs.create()) {
                FdPassing passing = new FdPassing();
                passing.send(carrier.first().fd(), ByteBuffer.wrap(new byte[] {'g'}), serverEnd.fd());
                serverEnd.closeWithoutShutdown();
                copy = passing.receive(carrier.second().fd(), ByteBuffer.allocate(1)).fds()[0];
            }
            try (NativeSocket adopted = NativeSocket.adopt(copy)) {
                Connection next = new Connection(adopted, adopted, Negotiated.plain(new Export("v", null, vol)), pool, "new");
                Thread newThread = servedThenClosed(next, adopted);
                Requests more = new Requests().read(32, 0x40000, a).disc(33);
                send(k, more);
                readReplies(k, more, answered, 1);
                newThread.join();
            }
            assertEquals(Map.of(30L, 1, 31L, 1, 32L, 1), answered);
        }
    }

    // ---- helpers ---------------------------------------------------------------------------------------------

    /** Requests as the kernel sends them, with what each READ must return. */
    static final class Requests {
        final ByteBuffer bytes = ByteBuffer.allocate(256 << 10);
        final Map<Long, byte[]> reads = new HashMap<>();

        Requests header(int type, long handle, long offset, int length) {
            bytes.putInt(Nbd.REQUEST_MAGIC).putShort((short) 0).putShort((short) type).putLong(handle).putLong(offset)
                    .putInt(length);
            return this;
        }

        Requests writeHeader(long handle, long offset, int length) {
            return header(Nbd.CMD_WRITE, handle, offset, length);
        }

        Requests write(long handle, long offset, byte[] data) {
            header(Nbd.CMD_WRITE, handle, offset, data.length);
            bytes.put(data);
            return this;
        }

        Requests read(long handle, long offset, byte[] expected) {
            reads.put(handle, expected);
            return header(Nbd.CMD_READ, handle, offset, expected.length);
        }

        Requests flush(long handle) {
            return header(Nbd.CMD_FLUSH, handle, 0, 0);
        }

        Requests disc(long handle) {
            return header(Nbd.CMD_DISC, handle, 0, 0);
        }
    }

    static void send(SocketPairs.End k, Requests r) throws IOException {
        ByteBuffer b = r.bytes.duplicate().flip();
        while (b.hasRemaining()) {
            k.write(b);
        }
    }

    /** Reads {@code n} simple replies, counting each handle; a READ's data must be what {@code r} expects. */
    static void readReplies(SocketPairs.End k, Requests r, Map<Long, Integer> answered, int n) throws IOException {
        for (int i = 0; i < n; i++) {
            ByteBuffer h = ByteBuffer.allocate(16);
            readFully(k, h);
            assertEquals(Nbd.SIMPLE_REPLY_MAGIC, h.getInt(0));
            assertEquals(0, h.getInt(4), "no error");
            long handle = h.getLong(8);
            answered.merge(handle, 1, Integer::sum);
            byte[] expected = r.reads.get(handle);
            if (expected != null) {
                ByteBuffer data = ByteBuffer.allocate(expected.length);
                readFully(k, data);
                assertArrayEquals(expected, data.array(), "data of READ " + handle);
            }
        }
    }

    static void readFully(SocketPairs.End k, ByteBuffer b) throws IOException {
        while (b.hasRemaining()) {
            assertTrue(k.read(b) >= 0, "the connection ended");
        }
    }

    /** Serves on a thread of its own, then closes the socket as the server does: the kernel side sees the end. */
    static Thread servedThenClosed(Connection c, NativeSocket s) {
        Thread t = new Thread(() -> {
            try {
                c.serve();
            } finally {
                try {
                    s.close();
                } catch (IOException e) {
                    throw new RuntimeException(e);
                }
            }
        }, "new server");
        t.start();
        return t;
    }

    static NativeSocket accept(InheritedSockets.Listener l) throws IOException {
        NativeSocket s;
        do {
            s = l.accept(1000);
        } while (s == null);
        return s;
    }

    static byte[] pattern(int length, int seed) {
        byte[] b = new byte[length];
        for (int i = 0; i < length; i++) {
            b[i] = (byte) (i * 7 + seed * 13 + (i >>> 9));
        }
        return b;
    }

    /** The volume, except that a WRITE at {@link #HELD} and the first FLUSH wait for the test. */
    static final class Holding extends ForwardingDevice {
        final CountDownLatch writeEntered = new CountDownLatch(1);
        final CountDownLatch releaseWrite = new CountDownLatch(1);
        final CountDownLatch releaseFlush = new CountDownLatch(1);

        Holding() {
            super(vol);
        }

        @Override
        public void write(Session s, long offset, int length, ByteSource source, boolean fua) throws IOException {
            if (offset == HELD) {
                writeEntered.countDown();
                await(releaseWrite);
            }
            vol.write(s, offset, length, source, fua);
        }

        @Override
        public void flush() throws IOException {
            await(releaseFlush);
            vol.flush();
        }

        private static void await(CountDownLatch l) throws IOException {
            try {
                l.await();
            } catch (InterruptedException e) {
                throw new IOException(e);
            }
        }
    }
}
