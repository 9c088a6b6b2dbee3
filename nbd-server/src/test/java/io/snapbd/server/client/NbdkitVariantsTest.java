package io.snapbd.server.client;

import io.snapbd.server.protocol.Nbd;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicIntegerArray;
import java.util.concurrent.atomic.AtomicLong;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The client against nbdkit configured to misbehave or to lack features: read-only exports, injected errors,
 * a server killed with requests in flight, no structured replies, plain (unfixed) newstyle, oldstyle, and TCP.
 */
@Timeout(value = 5, unit = TimeUnit.MINUTES)       // safety net only
class NbdkitVariantsTest {

    @TempDir
    Path dir;

    @Test
    void readOnlyExportAnswersWritesWithEperm() throws IOException {
        try (PeerServer s = PeerServer.nbdkit(dir, "--readonly", "memory", "64M");
             NbdClient c = NbdClient.connect(s.uri())) {
            assertTrue(c.isReadOnly());
            assertFalse(c.canTrim(), "nbdkit withdraws TRIM from read-only exports");
            assertFalse(c.canZero());
            NbdException e = assertThrows(NbdException.class, () -> c.write(0, ByteBuffer.allocate(512), false));
            assertEquals(Nbd.EPERM, e.errno(), e.getMessage());
            assertEquals("EPERM", e.errnoName());
            assertThrows(UnsupportedOperationException.class, () -> c.trim(0, 512, false));
            c.read(0, ByteBuffer.allocate(512));        // reads still work
        }
    }

    @Test
    void injectedErrorsArriveWithTheirErrno() throws Exception {
        try (PeerServer s = PeerServer.nbdkit(dir, "--filter=error", "memory", "64M",
                "error-pread=EIO", "error-pread-rate=1", "error-pwrite=ENOSPC", "error-pwrite-rate=1",
                "error-zero=ENOMEM", "error-zero-rate=1", "error-trim=EINVAL", "error-trim-rate=1");
             NbdClient c = NbdClient.connect(s.uri())) {
            NbdException read = assertThrows(NbdException.class, () -> c.read(4096, ByteBuffer.allocate(4096)));
            assertEquals("EIO", read.errnoName(), read.getMessage());
            NbdException write = assertThrows(NbdException.class, () -> c.write(4096, ByteBuffer.allocate(4096), false));
            assertEquals("ENOSPC", write.errnoName(), write.getMessage());
            NbdException zero = assertThrows(NbdException.class, () -> c.writeZeroes(0, 4096));
            assertEquals("ENOMEM", zero.errnoName(), zero.getMessage());
            NbdException trim = assertThrows(NbdException.class, () -> c.trim(0, 4096, false));
            assertEquals("EINVAL", trim.errnoName(), trim.getMessage());

            // The asynchronous path reports the same errno to its callback.
            AtomicInteger error = new AtomicInteger(-2);
            CountDownLatch done = new CountDownLatch(1);
            ByteBuffer dst = ByteBuffer.allocate(512);
            c.submitRead(0, dst, 7, (e, tag) -> {
                error.set(tag == 7 ? e : -3);
                done.countDown();
            });
            done.await();
            assertEquals(Nbd.EIO, error.get());
            assertEquals(0, dst.position(), "a failed read leaves the buffer's position alone");
            c.flush();      // the connection survives request errors
            assertEquals(null, c.failure());
        }
    }

    @Test
    void listGivesNamesAndDescriptionsAndUnknownExportsAreRefused() throws IOException {
        try (PeerServer s = PeerServer.nbdkit(dir, "--filter=exportname", "memory", "64M", "exportname=alpha",
                "exportname=beta", "exportname-list=explicit", "exportname-strict=true", "exportdesc=fixed:test disk")) {
            List<ExportEntry> exports = NbdClient.list(s.uri());
            assertEquals(List.of(new ExportEntry("alpha", "test disk"), new ExportEntry("beta", "test disk")), exports);
            try (NbdClient c = NbdClient.connect(s.uri("beta"))) {
                assertEquals("beta", c.exportName());
                assertEquals("test disk", c.description());
            }
            IOException e = assertThrows(IOException.class, () -> NbdClient.connect(s.uri("gamma")));
            assertTrue(e.getMessage().contains("refused export 'gamma'"), e.getMessage());
        }
    }

    @Test
    void closeSendsDisconnect() throws IOException {
        try (PeerServer s = PeerServer.nbdkit(dir, "--verbose", "memory", "64M")) {
            NbdClient c = NbdClient.connect(s.uri());
            c.write(0, ByteBuffer.allocate(4096), false);
            c.close();      // returns once the server has hung up, so it has logged the DISC by now
            assertTrue(s.log().contains("client sent NBD_CMD_DISC"), s.log());
            assertEquals(null, c.failure(), "a clean close is not a failure");
        }
    }

    /** The spec: a client that receives ESHUTDOWN must initiate a soft disconnect. */
    @Test
    void eshutdownLeadsToASoftDisconnect() throws Exception {
        try (PeerServer s = PeerServer.nbdkit(dir, "--verbose", "--filter=error", "memory", "64M",
                "error-trim=ESHUTDOWN", "error-trim-rate=1");
             NbdClient c = NbdClient.connect(s.uri())) {
            c.write(0, ByteBuffer.allocate(4096), false);
            NbdException e = assertThrows(NbdException.class, () -> c.trim(0, 4096, false));
            assertEquals("ESHUTDOWN", e.errnoName());
            IOException next = assertThrows(IOException.class, () -> c.read(0, ByteBuffer.allocate(1)));
            assertTrue(next.getMessage().contains("shutting down"), next.getMessage());
            while (!s.log().contains("client sent NBD_CMD_DISC")) {
                Thread.sleep(20);       // the server logs it asynchronously; @Timeout bounds the wait
            }
        }
    }

    /** Callbacks run on the reader thread, which must never wait: requests from there are refused. */
    @Test
    void requestsFromACompletionCallbackAreRefused() throws Exception {
        try (PeerServer s = PeerServer.nbdkit(dir, "memory", "64M");
             NbdClient c = NbdClient.connect(s.uri())) {
            List<Throwable> thrown = new ArrayList<>();
            CountDownLatch done = new CountDownLatch(1);
            c.submitRead(0, ByteBuffer.allocate(512), 0, (error, tag) -> {
                try {
                    c.read(0, ByteBuffer.allocate(1));
                } catch (Throwable t) {
                    thrown.add(t);
                }
                try {
                    c.close();
                } catch (Throwable t) {
                    thrown.add(t);
                }
                done.countDown();
            });
            done.await();
            assertEquals(2, thrown.size(), thrown.toString());
            assertInstanceOf(IllegalStateException.class, thrown.get(0));
            assertInstanceOf(IllegalStateException.class, thrown.get(1));
            c.read(0, ByteBuffer.allocate(1));      // and the connection is fine
        }
    }

    /** The server dies with requests on the wire: each fails with an IOException instead of hanging. */
    @Test
    void killedServerFailsEveryRequestInFlight() throws Exception {
        ExecutorService pool = Executors.newSingleThreadExecutor();
        try (PeerServer s = PeerServer.nbdkit(dir, "--filter=delay", "memory", "64M", "rdelay=600");
             NbdClient c = NbdClient.connect(s.uri())) {
            c.write(0, ByteBuffer.allocate(4096), false);     // writes are not delayed
            int n = 16;
            AtomicInteger lost = new AtomicInteger();
            AtomicInteger other = new AtomicInteger();
            CountDownLatch done = new CountDownLatch(n);
            for (int i = 0; i < n; i++) {
                c.submitRead((long) i * 4096, ByteBuffer.allocate(4096), i, (error, tag) -> {
                    (error == Completion.CONNECTION_FAILED ? lost : other).incrementAndGet();
                    done.countDown();
                });
            }
            Future<?> blocking = pool.submit(() -> {
                c.read(0, ByteBuffer.allocate(4096));
                return null;
            });
            s.kill();
            done.await();
            assertEquals(n, lost.get(), "every asynchronous read was failed (others: " + other + ")");
            ExecutionException e = assertThrows(ExecutionException.class, blocking::get);
            assertInstanceOf(IOException.class, e.getCause());
            assertFalse(e.getCause() instanceof NbdException, "a lost request is not a server error: " + e.getCause());
            assertNotNull(c.failure());
            IOException after = assertThrows(IOException.class, () -> c.read(0, ByteBuffer.allocate(1)));
            assertTrue(after.getMessage().contains("failed"), after.getMessage());
        } finally {
            pool.shutdownNow();
        }
    }

    @Test
    void simpleRepliesWhenStructuredRepliesAreTurnedOff() throws IOException {
        try (PeerServer s = PeerServer.nbdkit(dir, "memory", "64M")) {
            NbdClient.Options noSr = NbdClient.Options.defaults().withStructuredReplies(false).withMetaContexts(Nbd.BASE_ALLOCATION);
            try (NbdClient c = NbdClient.connect(s.uri(), noSr)) {
                assertFalse(c.structuredReplies());
                assertTrue(c.metaContexts().isEmpty(), "contexts need structured replies");
                assertFalse(c.canDf(), "DF only exists with structured replies");
                roundTrip(c, 1);
                NbdException e = assertThrows(NbdException.class, () -> c.read(c.size() - 1, ByteBuffer.allocate(2)));
                assertEquals(Nbd.EINVAL, e.errno());
                assertThrows(UnsupportedOperationException.class, () -> c.blockStatus(Nbd.BASE_ALLOCATION, 0, 1, false));
                roundTrip(c, 2);
            }
        }
    }

    @Test
    void serverWithoutStructuredReplies() throws IOException {
        try (PeerServer s = PeerServer.nbdkit(dir, "--no-sr", "memory", "64M");
             NbdClient c = NbdClient.connect(s.uri(), NbdClient.Options.defaults().withMetaContexts(Nbd.BASE_ALLOCATION))) {
            assertFalse(c.structuredReplies(), "the server refused NBD_OPT_STRUCTURED_REPLY");
            assertTrue(c.metaContexts().isEmpty());
            roundTrip(c, 3);
        }
    }

    /** Without fixed newstyle only NBD_OPT_EXPORT_NAME exists, and the server pads its reply with zeroes. */
    @Test
    void plainNewstyleServer() throws IOException {
        try (PeerServer s = PeerServer.nbdkit(dir, "--mask-handshake=0", "memory", "64M")) {
            try (NbdClient c = NbdClient.connect(s.uri())) {
                assertEquals(64L << 20, c.size());
                assertFalse(c.structuredReplies());
                assertFalse(c.blockSize().advertised());
                roundTrip(c, 4);
            }
            IOException e = assertThrows(IOException.class, () -> NbdClient.list(s.uri()));
            assertTrue(e.getMessage().contains("fixed newstyle"), e.getMessage());
        }
    }

    @Test
    void oldstyleServersAreRefusedClearly() {
        try (PeerServer s = PeerServer.nbdkit(dir, "--oldstyle", "memory", "64M")) {
            IOException e = assertThrows(IOException.class, () -> NbdClient.connect(s.uri()));
            assertTrue(e.getMessage().contains("oldstyle"), e.getMessage());
        }
    }

    @Test
    void tcpTransport() throws IOException {
        try (PeerServer s = PeerServer.nbdkitTcp(dir, "memory", "64M")) {
            assertEquals(NbdUri.Transport.TCP, s.uri().transport());
            try (NbdClient c = NbdClient.connect(NbdUri.parse(s.uri().toString()))) {
                roundTrip(c, 5);
            }
        }
    }

    /**
     * The asynchronous path allocates (almost) nothing per request once warm: measured on the submitting thread
     * and, from inside the callbacks, on the reader thread.
     */
    @Test
    void steadyStateAsyncRequestsAllocateAlmostNothing() throws Exception {
        com.sun.management.ThreadMXBean threads = (com.sun.management.ThreadMXBean) ManagementFactory.getThreadMXBean();
        try (PeerServer s = PeerServer.nbdkit(dir, "memory", "64M");
             NbdClient c = NbdClient.connect(s.uri())) {
            int requests = 20_000;
            AtomicLong readerAllocated = new AtomicLong();
            AtomicInteger errors = new AtomicInteger();
            CountDownLatch[] phase = new CountDownLatch[1];
            ByteBuffer wbuf = ByteBuffer.allocateDirect(4096);
            ByteBuffer[] rbufs = new ByteBuffer[c.maxInFlight()];
            for (int i = 0; i < rbufs.length; i++) {
                rbufs[i] = ByteBuffer.allocateDirect(4096);
            }
            AtomicIntegerArray busy = new AtomicIntegerArray(rbufs.length);
            Completion completion = (error, tag) -> {
                if (error != Completion.OK) {
                    errors.incrementAndGet();
                }
                if (tag >= 0) {
                    busy.set((int) tag, 0);     // a read: its buffer is free again
                }
                readerAllocated.set(threads.getCurrentThreadAllocatedBytes());
                phase[0].countDown();
            };
            phase[0] = new CountDownLatch(requests);
            runAsync(c, requests, wbuf, rbufs, busy, completion);     // warm-up: JIT, JDK buffer caches, lock inflation
            phase[0].await();
            CountDownLatch measured = new CountDownLatch(requests);
            phase[0] = measured;
            long self = threads.getCurrentThreadAllocatedBytes();
            long reader = readerAllocated.get();
            runAsync(c, requests, wbuf, rbufs, busy, completion);
            measured.await();
            long selfBytes = threads.getCurrentThreadAllocatedBytes() - self;
            long readerBytes = readerAllocated.get() - reader;
            assertEquals(0, errors.get());
            double perRequest = (double) (selfBytes + readerBytes) / requests;
            // A CompletableFuture and a lambda per request alone would be ~100 bytes.
            assertTrue(perRequest < 8, "allocated per request: " + perRequest + " bytes (submitter " + selfBytes
                    + ", reader " + readerBytes + ")");
        }
    }

    /** Alternating 4 KiB writes and reads; each read gets a buffer of its own (tag = buffer index, -1 for writes). */
    private static void runAsync(NbdClient c, int requests, ByteBuffer wbuf, ByteBuffer[] rbufs, AtomicIntegerArray busy,
                                 Completion completion) throws IOException {
        int next = 0;
        for (int i = 0; i < requests; i++) {
            long offset = (long) (i % 4096) * 4096;
            if (i % 2 == 0) {
                wbuf.clear();
                c.submitWrite(offset, wbuf, false, -1, completion);
                continue;
            }
            while (!busy.compareAndSet(next, 0, 1)) {
                next = (next + 1) % rbufs.length;
                Thread.onSpinWait();
            }
            rbufs[next].clear();
            c.submitRead(offset, rbufs[next], next, completion);
        }
    }

    private static void roundTrip(NbdClient c, long seed) throws IOException {
        Random random = new Random(seed);
        List<long[]> done = new ArrayList<>();
        List<byte[]> data = new ArrayList<>();
        for (int i = 0; i < 50; i++) {
            byte[] b = new byte[1 + random.nextInt(70_000)];
            random.nextBytes(b);
            long offset = (long) i * 80_000 + random.nextInt(1000);
            c.write(offset, ByteBuffer.wrap(b), false);
            done.add(new long[]{offset});
            data.add(b);
        }
        for (int i = 0; i < done.size(); i++) {
            ByteBuffer dst = ByteBuffer.allocate(data.get(i).length);
            c.read(done.get(i)[0], dst);
            assertArrayEquals(data.get(i), dst.array(), "block " + i);
        }
    }
}
