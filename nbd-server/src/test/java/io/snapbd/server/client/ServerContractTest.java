package io.snapbd.server.client;

import io.snapbd.server.protocol.Nbd;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * What every NBD server must let the client do, run against each real server by a subclass that starts it:
 * a 64 MiB writable export, freshly created (never written) for every test.
 */
@Timeout(value = 5, unit = TimeUnit.MINUTES)       // safety net only: a hung client must not hang the build
abstract class ServerContractTest {

    static final long SIZE = 64L << 20;
    /** Writes and reads of the round-trip tests stay in this prefix, mirrored in memory. */
    static final int MODEL = 8 << 20;

    @TempDir
    Path dir;
    PeerServer server;

    /** Starts the server under test in {@code dir}. */
    abstract PeerServer startServer(Path dir) throws Exception;

    /** The export to connect to. */
    NbdUri uri() {
        return server.uri();
    }

    /** Whether the server answers reads of never-written areas with NBD_REPLY_TYPE_OFFSET_HOLE chunks. */
    abstract boolean sendsHoleChunks();

    @BeforeEach
    void startPeer() throws Exception {
        server = startServer(dir);
    }

    @AfterEach
    void stopPeer() {
        if (server != null) {
            server.close();
        }
    }

    NbdClient connect(String... contexts) throws IOException {
        return NbdClient.connect(uri(), NbdClient.Options.defaults().withMetaContexts(contexts));
    }

    @Test
    void handshakeReportsTheExport() throws IOException {
        try (NbdClient c = connect(Nbd.BASE_ALLOCATION, "x-nobody:nothing")) {
            assertEquals(SIZE, c.size());
            assertTrue(c.structuredReplies());
            assertFalse(c.isReadOnly());
            assertTrue(c.canFlush(), "flush");
            assertTrue(c.canTrim(), "trim");
            assertTrue(c.canZero(), "write zeroes");
            assertTrue(c.metaContexts().containsKey(Nbd.BASE_ALLOCATION), c.metaContexts().toString());
            assertFalse(c.metaContexts().containsKey("x-nobody:nothing"), "a context the server did not return is not available");
            BlockSize bs = c.blockSize();
            assertTrue(bs.minimum() >= 1 && bs.minimum() <= bs.preferred() && bs.preferred() <= bs.maximum(), bs.toString());
            assertEquals(64, c.maxInFlight());
            UnsupportedOperationException e = assertThrows(UnsupportedOperationException.class,
                    () -> c.blockStatus("x-nobody:nothing", 0, 4096, false));
            assertTrue(e.getMessage().contains("not available"), e.getMessage());
        }
    }

    @Test
    void roundTripsRandomDataAtUnalignedOffsets() throws IOException {
        Random random = new Random(42);
        byte[] model = new byte[MODEL];
        try (NbdClient c = connect()) {
            for (int i = 0; i < 300; i++) {
                int length = 1 + random.nextInt(i % 10 == 0 ? 1 << 20 : 9000);
                int offset = random.nextInt(MODEL - length);
                byte[] data = new byte[length];
                random.nextBytes(data);
                System.arraycopy(data, 0, model, offset, length);
                // Alternate heap and direct buffers, and buffers whose position is not 0.
                ByteBuffer src = i % 2 == 0 ? ByteBuffer.allocate(length + 7) : ByteBuffer.allocateDirect(length + 7);
                src.position(7);
                src.put(data).position(7);
                c.write(offset, src, i % 3 == 0 && c.canFua());
                assertFalse(src.hasRemaining(), "the write consumes its buffer");
            }
            c.flush();
            for (int i = 0; i < 300; i++) {
                int length = 1 + random.nextInt(i % 10 == 0 ? 1 << 20 : 9000);
                int offset = random.nextInt(MODEL - length);
                ByteBuffer dst = i % 2 == 0 ? ByteBuffer.allocate(length + 3) : ByteBuffer.allocateDirect(length + 3);
                dst.position(3);
                c.read(offset, dst);
                assertEquals(dst.limit(), dst.position(), "the read fills its buffer");
                byte[] got = new byte[length];
                dst.position(3);
                dst.get(got);
                assertArrayEquals(Arrays.copyOfRange(model, offset, offset + length), got, "read at " + offset + "+" + length);
            }
        }
    }

    /** 10,000 writes at 64 in flight, then 10,000 reads the same way, checking every byte. */
    @Test
    void manyRequestsInFlightOnOneConnection() throws Exception {
        int requests = 10_000;
        int blockSize = 4096;
        try (NbdClient c = connect()) {
            AtomicInteger inFlight = new AtomicInteger();
            AtomicInteger maxInFlight = new AtomicInteger();
            AtomicInteger errors = new AtomicInteger();
            CountDownLatch written = new CountDownLatch(requests);
            Completion onWrite = (error, tag) -> {
                inFlight.decrementAndGet();
                if (error != Completion.OK) {
                    errors.incrementAndGet();
                }
                written.countDown();
            };
            ByteBuffer src = ByteBuffer.allocateDirect(blockSize);
            for (int i = 0; i < requests; i++) {
                pattern(src, i);
                // Unaligned offsets: the pattern block i lives at i * 4096 + 1 (blocks do not overlap).
                c.submitWrite((long) i * blockSize + 1, src, false, i, onWrite);
                maxInFlight.accumulateAndGet(inFlight.incrementAndGet(), Math::max);
                assertFalse(src.hasRemaining(), "the data is on the wire when submit returns");
            }
            assertTrue(written.await(4, TimeUnit.MINUTES), "writes still pending: " + written.getCount());
            assertEquals(0, errors.get());
            assertTrue(maxInFlight.get() <= 64, "never more than maxInFlight: " + maxInFlight);
            assertTrue(maxInFlight.get() > 1, "requests were pipelined: " + maxInFlight);

            // Reads: a pool of 64 buffers; the callback checks the data and returns its buffer.
            ByteBuffer[] buffers = new ByteBuffer[64];
            ArrayBlockingQueue<Integer> free = new ArrayBlockingQueue<>(buffers.length);
            for (int b = 0; b < buffers.length; b++) {
                buffers[b] = ByteBuffer.allocateDirect(blockSize);
                free.add(b);
            }
            CountDownLatch read = new CountDownLatch(requests);
            AtomicInteger mismatches = new AtomicInteger();
            ByteBuffer expected = ByteBuffer.allocateDirect(blockSize);
            Completion onRead = (error, tag) -> {
                int block = (int) (tag >>> 8);
                ByteBuffer b = buffers[(int) (tag & 0xff)];
                if (error != Completion.OK || b.hasRemaining() || !b.flip().equals(pattern(expected, block))) {
                    mismatches.incrementAndGet();
                }
                free.add((int) (tag & 0xff));
                read.countDown();
            };
            for (int i = 0; i < requests; i++) {
                int b = free.take();
                buffers[b].clear();
                c.submitRead((long) i * blockSize + 1, buffers[b], ((long) i << 8) | b, onRead);
            }
            assertTrue(read.await(4, TimeUnit.MINUTES), "reads still pending: " + read.getCount());
            assertEquals(0, errors.get());
            assertEquals(0, mismatches.get(), "blocks read back wrong");
        }
    }

    @Test
    void blockingCallsFromManyThreadsShareTheConnection() throws Exception {
        int threads = 6;
        int region = 1 << 20;
        ExecutorService pool = Executors.newFixedThreadPool(threads);
        try (NbdClient c = connect()) {
            List<Future<?>> futures = new ArrayList<>();
            for (int t = 0; t < threads; t++) {
                int thread = t;
                futures.add(pool.submit(() -> {
                    Random random = new Random(100 + thread);
                    byte[] model = new byte[region];
                    long base = (long) thread * region;
                    for (int i = 0; i < 200; i++) {
                        int length = 1 + random.nextInt(20000);
                        int offset = random.nextInt(region - length);
                        if (random.nextBoolean()) {
                            byte[] data = new byte[length];
                            random.nextBytes(data);
                            System.arraycopy(data, 0, model, offset, length);
                            c.write(base + offset, ByteBuffer.wrap(data), false);
                        } else {
                            ByteBuffer dst = ByteBuffer.allocate(length);
                            c.read(base + offset, dst);
                            assertArrayEquals(Arrays.copyOfRange(model, offset, offset + length), dst.array());
                        }
                    }
                    return null;
                }));
            }
            for (Future<?> f : futures) {
                f.get();
            }
        } finally {
            pool.shutdownNow();
        }
    }

    @Test
    void neverWrittenAreasReadAsZeroes() throws IOException {
        try (NbdClient c = connect()) {
            byte[] ones = new byte[4096];
            Arrays.fill(ones, (byte) 0x55);
            long dataAt = (5 << 20) + 100;      // unaligned data between two holes
            c.write(dataAt, ByteBuffer.wrap(ones), false);
            ByteBuffer dst = ByteBuffer.allocate(8 << 20);
            Arrays.fill(dst.array(), (byte) 0xAA);
            c.read(1 << 20, dst);
            for (int i = 0; i < dst.capacity(); i++) {
                long at = (1 << 20) + i;
                assertEquals(at >= dataAt && at < dataAt + ones.length ? 0x55 : 0, dst.get(i), "byte at " + at);
            }
            // Unaligned reads that start and end inside partly written blocks.
            Random random = new Random(7);
            for (int i = 0; i < 200; i++) {
                long from = dataAt - 10_000 + random.nextInt(20_000);
                ByteBuffer part = ByteBuffer.allocateDirect(1 + random.nextInt(12_000));
                c.read(from, part);
                for (int j = 0; j < part.capacity(); j++) {
                    long at = from + j;
                    assertEquals(at >= dataAt && at < dataAt + ones.length ? 0x55 : 0, part.get(j), "byte at " + at);
                }
            }
            assertEquals(sendsHoleChunks(), c.holeChunks() > 0, "hole chunks received: " + c.holeChunks());
        }
    }

    @Test
    void blockStatusReportsAllocation() throws IOException {
        try (NbdClient c = connect(Nbd.BASE_ALLOCATION)) {
            c.write(1 << 20, ByteBuffer.wrap(new byte[65536]).put(0, (byte) 1), false);
            List<Extent> all = new ArrayList<>();
            long offset = 0;
            long end = 4 << 20;
            while (offset < end) {
                List<Extent> extents = c.blockStatus(Nbd.BASE_ALLOCATION, offset, end - offset, false);
                assertFalse(extents.isEmpty());
                assertEquals(offset, extents.get(0).offset());
                all.addAll(extents);
                offset = extents.get(extents.size() - 1).end();
            }
            for (int i = 1; i < all.size(); i++) {
                assertEquals(all.get(i - 1).end(), all.get(i).offset(), "extents are contiguous");
            }
            Extent first = all.get(0);
            assertTrue(first.isHole() && first.isZero(), "the start was never written: " + all);
            Extent written = all.stream().filter(e -> e.offset() <= 1 << 20 && e.end() > 1 << 20).findFirst().orElseThrow();
            assertFalse(written.isHole(), "written data is allocated: " + all);

            List<Extent> one = c.blockStatus(Nbd.BASE_ALLOCATION, 0, end, true);
            assertEquals(1, one.size(), "REQ_ONE: " + one);
            assertTrue(one.get(0).length() <= end);
        }
    }

    @Test
    void writeZeroesTrimFlushAndCache() throws IOException {
        try (NbdClient c = connect()) {
            byte[] ones = new byte[100_000];
            Arrays.fill(ones, (byte) 1);
            c.write(10_000, ByteBuffer.wrap(ones), false);
            c.writeZeroes(20_001, 5_000);
            c.writeZeroes(40_001, 5_000, NbdClient.ZeroFlag.NO_HOLE);
            if (c.canFua()) {
                c.writeZeroes(60_001, 5_000, NbdClient.ZeroFlag.FUA);
            }
            ByteBuffer dst = ByteBuffer.allocate(ones.length);
            c.read(10_000, dst);
            for (int i = 0; i < ones.length; i++) {
                long at = 10_000L + i;
                boolean zeroed = (at >= 20_001 && at < 25_001) || (at >= 40_001 && at < 45_001)
                        || (c.canFua() && at >= 60_001 && at < 65_001);
                assertEquals(zeroed ? 0 : 1, dst.get(i), "byte at " + at);
            }
            c.trim(1 << 20, 1 << 20, false);
            c.flush();
            if (c.canCache()) {
                c.cache(0, 1 << 20);
            }
        }
    }

    @Test
    void readPastTheEndFailsAndTheConnectionSurvives() throws IOException {
        try (NbdClient c = connect()) {
            NbdException e = assertThrows(NbdException.class, () -> c.read(SIZE - 100, ByteBuffer.allocate(4096)));
            assertTrue(e.errno() > 0, e.getMessage());
            assertTrue(e.getMessage().contains("READ [" + (SIZE - 100) + ", +4096)"), e.getMessage());
            onReadPastEnd(e);
            NbdException w = assertThrows(NbdException.class, () -> c.write(SIZE, ByteBuffer.allocate(512), false));
            onWritePastEnd(w);
            // Still usable afterwards.
            ByteBuffer ok = ByteBuffer.allocate(100);
            c.read(SIZE - 100, ok);
            assertFalse(ok.hasRemaining());
            assertNotNull(c.toString());
        }
    }

    /** Server-specific expectations of the read-past-the-end error. */
    abstract void onReadPastEnd(NbdException e);

    /** Server-specific expectations of the write-past-the-end error. */
    abstract void onWritePastEnd(NbdException e);

    @Test
    void closeWaitsForInFlightRequestsAndIsFinal() throws Exception {
        NbdClient c = connect();
        AtomicLong completed = new AtomicLong();
        ByteBuffer src = ByteBuffer.allocateDirect(65536);
        for (int i = 0; i < 200; i++) {
            src.clear();
            c.submitWrite((long) i * 65536, src, false, i, (error, tag) -> {
                if (error == Completion.OK) {
                    completed.incrementAndGet();
                }
            });
        }
        c.close();
        assertEquals(200, completed.get(), "close() waits for the replies");
        IOException e = assertThrows(IOException.class, () -> c.read(0, ByteBuffer.allocate(1)));
        assertFalse(e instanceof NbdException);
        c.close();      // idempotent
        // The server is still fine: a new connection works.
        try (NbdClient again = connect()) {
            again.read(0, ByteBuffer.allocate(1));
        }
    }

    @Test
    void listsExports() throws IOException {
        List<ExportEntry> exports = NbdClient.list(uri());
        assertTrue(exports.stream().anyMatch(e -> e.name().equals(uri().exportName())), exports.toString());
    }

    @Test
    void invalidRequestsAreRefusedBeforeTheyAreSent() throws IOException {
        try (NbdClient c = connect()) {
            assertThrows(IllegalArgumentException.class, () -> c.read(0, ByteBuffer.allocate(0)));
            assertThrows(IllegalArgumentException.class, () -> c.read(-1, ByteBuffer.allocate(1)));
            assertThrows(IllegalArgumentException.class, () -> c.read(0, ByteBuffer.allocate(1).asReadOnlyBuffer()));
            assertThrows(IllegalArgumentException.class, () -> c.trim(0, 0, false));
            assertThrows(IllegalArgumentException.class, () -> c.writeZeroes(Long.MAX_VALUE - 10, 100));
            long tooBig = Math.min(Integer.MAX_VALUE - 8, c.blockSize().maximum() + 1);
            assertThrows(IllegalArgumentException.class, () -> c.read(0, ByteBuffer.allocate((int) tooBig)));
            assertThrows(UnsupportedOperationException.class, () -> c.blockStatus(Nbd.BASE_ALLOCATION, 0, 1, false),
                    "no context was selected");
            ByteBuffer one = ByteBuffer.allocate(1);
            c.read(0, one);
            assertFalse(one.hasRemaining(), "nothing was sent for the refused requests");
        }
    }

    static ByteBuffer pattern(ByteBuffer b, int block) {
        b.clear();
        long x = block * 0x9E3779B97F4A7C15L + 1;
        while (b.hasRemaining()) {
            x ^= x << 13;
            x ^= x >>> 7;
            x ^= x << 17;
            b.putLong(x);
        }
        return b.flip();
    }
}
