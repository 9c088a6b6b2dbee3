package io.snapbd.server.it;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Assertions;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.net.SocketTimeoutException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Resources running out (issue 25, part 4), each with a real server and real clients: the data directory's file
 * system filling up under a snapshot's copy-on-write, a client that sends requests and never reads the replies,
 * and 1,100 connections at once. Each time the one who caused it gets a clear error, the other clients' I/O goes
 * on, the server does not die, and nothing acknowledged before is lost. (Volume create and the other commands on
 * a full file system: {@link FullFileSystemIT}; a full save volume: {@code SnapshotIT}'s overflow tests.)
 */
@Timeout(value = 10, unit = TimeUnit.MINUTES)
@ExtendWith(ServerLiveness.class)
class ResourceExhaustionIT {

    static final int MiB = 1 << 20;

    @TempDir
    static Path tmp;
    static Path mnt;

    @BeforeAll
    static void mountSmallTmpfs() throws IOException {
        Tools.require("mount", "umount", "nbdsh");
        mnt = SmallTmpfs.mount(tmp, "64m", "snapbd-exhaustion-it");
    }

    @AfterAll
    static void unmount() {
        if (mnt != null) {
            SmallTmpfs.unmount(mnt);
        }
    }

    // ---- the data directory's file system fills up ----------------------------------------------------------

    /**
     * A volume of 512-byte blocks is written in full and snapshotted; the file system is filled; overwriting the
     * volume then needs a before-image record per block, more than {@code exceptions.log} holds, and the log
     * cannot grow. The writers that wait for those records get ENOSPC (not EIO); another volume's I/O goes on;
     * once space is freed the failed writes are repeated and succeed; after a restart the snapshot still reads
     * exactly what the volume held, fsck is clean. Before the fix the log dropped the batch it could not write,
     * the records after it continued a broken chain, and the next open cut them off as a torn tail: the
     * snapshot then read the new data for those blocks.
     */
    @Test
    void copyOnWriteOnAFullFileSystemFailsWithEnospcAndLosesNothing() throws Exception {
        Path data = mnt.resolve("cow-data");
        int size = 10 * MiB;
        ServerProcess.snapbd(data, "volume", "create", "cow", "--size", "10M", "--save-size", "10M", "--block-size", "512").assertOk();
        ServerProcess.snapbd(data, "volume", "create", "other", "--size", "4M", "--save-size", "0").assertOk();
        byte[] before = TestData.random(2501, size);
        byte[] after = TestData.random(2502, size);
        Path beforeFile = tmp.resolve("cow-before.img");
        Path afterFile = tmp.resolve("cow-after.img");
        Files.write(beforeFile, before);
        Files.write(afterFile, after);
        try (ServerProcess server = ServerProcess.start(List.of("-Dsnapbd.overlay.mib=2"), data, "ResourceExhaustionIT-fs",
                "--warm-up", "off")) {
            Tools.run("nbdcopy", beforeFile.toString(), server.unixUri("cow")).assertOk();
            server.cli("snapshot", "create", "cow", "s1").assertOk();

            // A volume bigger than what is left: a clear error naming the file, nothing left behind.
            Tools.Result big = server.cli("volume", "create", "big", "--size", "64M", "--save-size", "0");
            assertNotEquals(0, big.exit(), big.toString());
            assertTrue(big.stderr().contains(data.resolve("volumes/big").toString()) && big.stderr().contains("space"), big.toString());
            assertFalse(Files.exists(data.resolve("volumes/big")), "a failed create removes what it made");
            assertFalse(server.cli("volume", "list").assertOk().stdout().contains("big"));

            FullFileSystemIT.fillUp(mnt.resolve("filler"));

            // Overwrite all of cow in 64 KiB writes, one at a time; note each one's outcome.
            String script = """
                    import nbd
                    data = open(DATA, 'rb').read()
                    failed = []
                    for i in range(len(data) // 65536):
                        try:
                            h.pwrite(data[i * 65536:(i + 1) * 65536], i * 65536)
                        except nbd.Error as e:
                            failed.append(i)
                            print('write', i, 'errno', e.errnum)
                    try:
                        h.flush()
                    except nbd.Error as e:
                        print('flush errno', e.errnum)
                    print('failed', ','.join(map(str, failed)))
                    """;
            Path py = tmp.resolve("overwrite.py");
            Files.writeString(py, "DATA = " + pyString(afterFile) + "\n" + script);
            Tools.Result w = Tools.run("nbdsh", "-u", server.unixUri("cow"), "-c", "exec(open(" + pyString(py) + ").read())");
            assertEquals(0, w.exit(), w.toString());
            List<String> errnos = w.stdout().lines().filter(l -> l.contains("errno")).toList();
            assertFalse(errnos.isEmpty(), "the log cannot grow, so some write or the flush must fail: " + w);
            for (String l : errnos) {
                assertTrue(l.endsWith("errno 28"), "ENOSPC, not another error: " + w.stdout());
            }
            assertTrue(server.isAlive(), server.log());
            assertTrue(server.log().contains(data.resolve("volumes/cow/exceptions.log") + ": No space left on device"), server.log());
            // The committer retries every 100 ms; it warns at the first failure and then once a minute.
            assertTrue(server.log().lines().filter(l -> l.contains("applying staged writes failed")).count() <= 2, server.log());

            // Another volume on the same full file system: its I/O goes on (preallocated, no snapshot).
            Tools.run("nbdsh", "-u", server.unixUri("other"), "-c",
                    "h.pwrite(b'o' * 65536, 1 << 20); h.flush(); assert h.pread(65536, 1 << 20) == b'o' * 65536").assertOk();

            // Space again: the failed writes are repeated and succeed; the snapshot never changed.
            Files.delete(mnt.resolve("filler"));
            Files.delete(mnt.resolve("filler.1"));
            String failed = w.stdout().lines().filter(l -> l.startsWith("failed")).findFirst().orElseThrow().substring(6).strip();
            Tools.run("nbdsh", "-u", server.unixUri("cow"), "-c",
                    "data = open(" + pyString(afterFile) + ", 'rb').read()\n"
                            + "for i in [int(x) for x in '" + failed + "'.split(',') if x]:\n"
                            + "    h.pwrite(data[i * 65536:(i + 1) * 65536], i * 65536)\n"
                            + "h.flush()\n").assertOk();
            assertArrayEquals(after, read(server.unixUri("cow"), "cow-now.img"), "production");
            assertTrue(server.log().contains("volume cow: staged writes applied again after"), server.log());
            assertArrayEquals(before, read(server.unixUri("cow@s1"), "s1-now.img"), "the snapshot");

            // After a restart (and a kill -9 with a restart): the same content, the log whole.
            assertEquals(0, server.stop(), server.log());
            assertFalse(server.log().contains("InternalError"), server.log());
            Tools.Result fsck = ServerProcess.snapbd(data, "fsck");
            assertEquals(0, fsck.exit(), fsck.toString());
            assertFalse(fsck.stdout().contains("torn"), fsck.stdout());
            server.restart();
            assertFalse(server.log().contains("torn log slot"), server.log());
            assertArrayEquals(before, read(server.unixUri("cow@s1"), "s1-restart.img"), "the snapshot after a restart");
            assertArrayEquals(after, read(server.unixUri("cow"), "cow-restart.img"), "production after a restart");
        }
    }

    static String pyString(Path p) {
        return "'" + p.toString().replace("\\", "\\\\").replace("'", "\\'") + "'";
    }

    static byte[] read(String uri, String name) throws IOException {
        Path out = tmp.resolve(name);
        Files.deleteIfExists(out);
        Tools.run("nbdcopy", uri, out.toString()).assertOk();
        return Files.readAllBytes(out);
    }

    // ---- a client that never reads ---------------------------------------------------------------------------

    /**
     * A client sends 20,000 FLUSHes, then 1 MiB READs, and never reads a reply. The server must not buffer for it (RSS
     * stays bounded) nor start a thread per FLUSH it cannot answer (before the fix: one sync-pool thread per
     * FLUSH, each blocked on that client's socket; thousands of them), while another client's I/O goes on.
     * Closing the socket frees everything.
     */
    @Test
    void aClientThatNeverReadsHoldsOnlyItsOwnConnection() throws Exception {
        Path data = tmp.resolve("noread-data");
        ServerProcess.snapbd(data, "volume", "create", "vol", "--size", "64M", "--save-size", "0").assertOk();
        try (ServerProcess server = ServerProcess.start(List.of("-Xms64m", "-Xmx1g", "-XX:MaxDirectMemorySize=4g"), data,
                "ResourceExhaustionIT-noread", "--warm-up", "off")) {
            long pid = server.process().pid();
            Tools.run("nbdsh", "-u", server.unixUri("vol"), "-c", "h.pwrite(b'r' * (8 << 20), 0); h.flush()").assertOk();
            int threadsBefore = status(pid, "Threads");
            long rssBefore = status(pid, "VmRSS");

            RawNbd greedy = RawNbd.connect(server.port(), 4096).negotiate("vol", false, false);
            AtomicLong sent = new AtomicLong();
            AtomicReference<Throwable> senderDied = new AtomicReference<>();
            Thread sender = new Thread(() -> {
                try {
                    long h = 1;
                    // FLUSHes are answered from the sync pool; once a READ's reply fills the socket, every one of
                    // them still unanswered waits there for a client that never reads.
                    for (int i = 0; i < 20_000; i++) {
                        greedy.sendRequest(0, RawNbd.CMD_FLUSH, h++, 0, 0, null);
                        sent.incrementAndGet();
                    }
                    for (int i = 0; i < 1_000; i++) {
                        greedy.sendRequest(0, RawNbd.CMD_READ, h++, (i % 64) * (long) MiB, MiB, null);
                        sent.incrementAndGet();
                    }
                } catch (IOException e) {
                    senderDied.set(e);      // the server may end the connection: allowed
                }
            }, "never-reading client");
            sender.setDaemon(true);
            sender.start();

            // Meanwhile another client's writes, flushes and reads go on, checked byte for byte.
            byte[] mine = TestData.random(2601, MiB);
            try (RawNbd other = RawNbd.connect(server.port()).negotiate("vol", false, false)) {
                for (int round = 0; round < 40; round++) {
                    other.write(round, 32L * MiB + (round % 16) * (long) MiB, mine);
                    other.sendRequest(0, RawNbd.CMD_FLUSH, 1000 + round, 0, 0, null);
                    assertEquals(0, other.readReply(0).error(), "FLUSH of the other client");
                    assertArrayEquals(mine, other.read(2000 + round, 32L * MiB + (round % 16) * (long) MiB, MiB));
                    Thread.sleep(25);
                }
            }
            sender.join(TimeUnit.SECONDS.toMillis(5));     // it is expected to be still blocked: TCP holds it back

            int threadsDuring = status(pid, "Threads");
            long rssDuring = status(pid, "VmRSS");
            assertTrue(threadsDuring < threadsBefore + 200, "threads " + threadsBefore + " -> " + threadsDuring
                    + " with one client not reading (" + sent.get() + " requests sent)");
            assertTrue(rssDuring < rssBefore + 256 * 1024, "RSS " + rssBefore + " kB -> " + rssDuring + " kB");
            assertTrue(server.isAlive(), server.log());

            greedy.close();
            sender.join(TimeUnit.SECONDS.toMillis(30));
            assertFalse(sender.isAlive(), "the never-reading client's sender ends once its socket is closed");
            // Its connection thread ends; the sync pool may keep up to its bound of idle threads for a minute.
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            int bound = threadsBefore + 64 + 20;
            while (status(pid, "Threads") > bound && System.nanoTime() < deadline) {
                Thread.sleep(200);
            }
            assertTrue(status(pid, "Threads") <= bound, "threads after the client left: " + status(pid, "Threads"));
            Tools.run("nbdsh", "-u", server.unixUri("vol"), "-c", "assert h.pread(4, 0) == b'rrrr'").assertOk();
            assertEquals(0, server.stop(), server.log());
        }
    }

    /** A number from /proc/PID/status ({@code Threads}, {@code VmRSS} in kB). */
    static int status(long pid, String key) throws IOException {
        for (String l : Files.readAllLines(Path.of("/proc/" + pid + "/status"))) {
            if (l.startsWith(key + ":")) {
                return Integer.parseInt(l.substring(key.length() + 1).replace("kB", "").strip());
            }
        }
        throw new IllegalStateException(key + " not in /proc/" + pid + "/status");
    }

    // ---- 1,100 connections -------------------------------------------------------------------------------------

    /**
     * 1,100 connections, each doing a WRITE (every 50th a FLUSH) and a READ of its own block and staying open, with the
     * launcher's heap bound (-Xmx1g), while one more client keeps writing and reading; with {@code
     * --max-connections 1101} the next one is refused (closed before the greeting, the server logs why) and is
     * served again once some have left. The server's threads follow the connections (at most two readers each) and come
     * back down.
     */
    @Test
    void elevenHundredConnectionsAreServedAndTheNextOneRefused() throws Exception {
        int n = 1_100;
        Path data = tmp.resolve("many-data");
        ServerProcess.snapbd(data, "volume", "create", "vol", "--size", "64M", "--save-size", "0").assertOk();
        try (ServerProcess server = ServerProcess.start(List.of("-Xms64m", "-Xmx1g", "-XX:MaxDirectMemorySize=4g"), data,
                "ResourceExhaustionIT-many", "--warm-up", "off", "--max-connections", String.valueOf(n + 1))) {
            long pid = server.process().pid();
            int threadsBefore = status(pid, "Threads");

            // The one other client: writes and reads back, in a loop, the whole time.
            AtomicReference<Throwable> otherFailed = new AtomicReference<>();
            AtomicLong otherRounds = new AtomicLong();
            stopOther = false;
            Thread other = new Thread(() -> {
                byte[] mine = TestData.random(2701, 64 * 1024);
                try (RawNbd c = RawNbd.connect(server.port()).negotiate("vol", false, false)) {
                    for (long r = 0; !stopOther; r++) {
                        long off = 60L * MiB + (r % 32) * 65536;
                        c.write(r, off, mine);
                        assertArrayEquals(mine, c.read(r, off, mine.length));
                        otherRounds.incrementAndGet();
                    }
                } catch (Throwable e) {
                    otherFailed.set(e);
                }
            }, "other client");
            other.setDaemon(true);
            other.start();
            while (otherRounds.get() == 0 && other.isAlive()) {
                Thread.sleep(10);
            }

            List<RawNbd> conns = new ArrayList<>();
            try {
                for (int i = 0; i < n; i++) {
                    RawNbd c = RawNbd.connect(server.port()).negotiate("vol", false, false);
                    conns.add(c);
                    byte[] b = block(i);
                    long off = (long) i * 4096;
                    c.write(1, off, b);
                    if (i % 50 == 0) {
                        c.sendRequest(0, RawNbd.CMD_FLUSH, 2, 0, 0, null);
                        assertEquals(0, c.readReply(0).error(), "FLUSH on connection " + i);
                    }
                    assertArrayEquals(b, c.read(3, off, 4096), "connection " + i);
                }
                long roundsBefore = otherRounds.get();
                int threadsDuring = status(pid, "Threads");
                long rssDuring = status(pid, "VmRSS");
                // at most two reader threads per connection (they take turns on its socket: docs/architecture.md)
                assertTrue(threadsDuring <= threadsBefore + 2 * (n + 1) + 20, "threads " + threadsBefore + " -> " + threadsDuring);
                assertTrue(server.isAlive(), server.log());
                assertFalse(server.log().contains("OutOfMemoryError"), server.log());

                // Every connection still answers (one more READ each), and the other client went on.
                for (int i = 0; i < n; i++) {
                    assertArrayEquals(block(i), conns.get(i).read(4, (long) i * 4096, 4096), "connection " + i + " again");
                }
                Thread.sleep(200);
                assertTrue(otherRounds.get() > roundsBefore, "the other client's I/O goes on");
                assertEquals(null, otherFailed.get());

                // One more: refused at accept, closed before the greeting; the log says why.
                try (RawNbd extra = RawNbd.connect(server.port())) {
                    extra.socket().setSoTimeout(30_000);
                    assertEquals(-1, extra.in().read(), "connection " + (n + 2) + " is closed without a greeting");
                } catch (SocketTimeoutException e) {
                    Assertions.fail("connection " + (n + 2) + " was neither served nor refused");
                } catch (IOException reset) {
                    // reset: refused too
                }
                assertTrue(server.log().contains("refused: " + (n + 1) + " connections already open (limit " + (n + 1) + ")"),
                        server.log());
                assertFalse(server.log().contains("OutOfMemoryError"), server.log());
                System.out.printf("1,100 connections: server threads %d -> %d, RSS %d MiB%n", threadsBefore, threadsDuring,
                        rssDuring / 1024);

                // Ten leave: a new one is served again.
                for (int i = 0; i < 10; i++) {
                    conns.remove(conns.size() - 1).close();
                }
                RawNbd again = null;
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
                while (again == null) {
                    try {
                        again = RawNbd.connect(server.port()).negotiate("vol", false, false);
                    } catch (IOException | AssertionError refused) {
                        assertTrue(System.nanoTime() < deadline, "no connection served after ten left: " + refused);
                        Thread.sleep(100);
                    }
                }
                assertArrayEquals(block(7), again.read(5, 7 * 4096, 4096));
                conns.add(again);
            } finally {
                stopOther = true;
                for (RawNbd c : conns) {
                    c.close();
                }
            }
            other.join(TimeUnit.SECONDS.toMillis(30));
            assertEquals(null, otherFailed.get());
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
            while (status(pid, "Threads") > threadsBefore + 20 && System.nanoTime() < deadline) {
                Thread.sleep(200);
            }
            assertTrue(status(pid, "Threads") <= threadsBefore + 20, "threads after the clients left: " + status(pid, "Threads"));
            assertEquals(0, server.stop(), server.log());
        }
    }

    static volatile boolean stopOther;     // ends the other client's loop

    static byte[] block(int i) {
        byte[] b = new byte[4096];
        Arrays.fill(b, (byte) (i * 31 + 7));
        b[0] = (byte) i;
        b[1] = (byte) (i >> 8);
        return b;
    }
}
