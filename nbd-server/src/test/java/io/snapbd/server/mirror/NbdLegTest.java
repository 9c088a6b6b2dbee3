package io.snapbd.server.mirror;

import io.snapbd.engine.mirror.FileLegIo;
import io.snapbd.engine.mirror.FileTagStore;
import io.snapbd.engine.mirror.LegIo;
import io.snapbd.engine.mirror.Reconciler;
import io.snapbd.engine.mirror.TagTable;
import io.snapbd.server.client.NbdClient;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * {@link NbdLeg} against nbdkit's file plugin (a real NBD peer, its backing file read directly to check what
 * reached the export): the tag table in the area after the blocks, durability through FLUSH, reconciliation
 * between a file leg and an NBD leg, a peer that dies mid-write, and the exports a leg refuses.
 */
@Timeout(value = 2, unit = TimeUnit.MINUTES)
class NbdLegTest {

    static final int VOL = 4 << 20;

    @TempDir
    Path tmp;

    private Path exportFile(long size) throws IOException {
        Path f = tmp.resolve("export.img");
        try (RandomAccessFile r = new RandomAccessFile(f.toFile(), "rw")) {
            r.setLength(size);
        }
        return f;
    }

    /** nbdkit's file plugin; the blocksize-policy filter advertises a 64 KiB maximum, so larger calls must be split. */
    private LegPeer fileServer(Path file) throws Exception {
        return LegPeer.nbdkit(tmp, "file", "--filter=blocksize-policy", "file", file.toString(), "blocksize-maximum=65536");
    }

    private static byte[] random(long seed, int n) {
        byte[] b = new byte[n];
        new Random(seed).nextBytes(b);
        return b;
    }

    private static byte[] readFile(Path f, long pos, int n) throws IOException {
        try (RandomAccessFile r = new RandomAccessFile(f.toFile(), "r")) {
            byte[] b = new byte[n];
            r.seek(pos);
            r.readFully(b);
            return b;
        }
    }

    @Test
    void tagTableInTheExportSurvivesCloseAndServerRestart() throws Exception {
        Path file = exportFile(NbdLeg.exportBytes(VOL));
        UUID owner = UUID.randomUUID();
        try (LegPeer k = fileServer(file)) {
            NbdLeg leg = NbdLeg.open(k.uri(), VOL);
            assertEquals(VOL, leg.blocks().size());
            assertEquals(NbdLeg.TABLE_BYTES, leg.table().size());
            TagTable t = TagTable.create(leg.table(), owner, 1, NbdLeg.TABLE_HALF_RECORDS);
            t.record(5, 4096, 8192);
            t.record(6, 1 << 20, 100);
            t.record(7, 3 << 20, 70000);
            t.markDone(new long[] {5, 7}, 2);
            t.retire(new long[] {6}, 1);
            t.live();       // forces the DONE records too
            t.close();
            leg.close();
        }
        // The table lives right after the volume's blocks in the export (generation 1's header is copy 1, at
        // +2048 of the area); the blocks were not touched.
        assertEquals("SNBDTAGT", new String(readFile(file, VOL + 2048L, 8), StandardCharsets.US_ASCII));
        assertArrayEquals(new byte[VOL], readFile(file, 0, VOL), "the table must not spill into the volume's blocks");

        try (LegPeer k = fileServer(file); NbdLeg leg = NbdLeg.open(k.uri(), VOL)) {
            TagTable t = TagTable.open(leg.table(), owner, 1);
            assertEquals(List.of(new TagTable.Entry(5, 4096, 8192, true), new TagTable.Entry(7, 3 << 20, 70000, true)),
                    t.live());
            t.close();
        }
    }

    /** The same round trip through qemu-nbd serving a raw file: blocks and table where they belong, table reopened. */
    @Test
    void qemuNbdLegKeepsBlocksAndTable() throws Exception {
        Path file = exportFile(NbdLeg.exportBytes(VOL));
        UUID owner = UUID.randomUUID();
        byte[] data = random(3, 100_000);
        try (LegPeer q = LegPeer.qemuNbd(tmp, "qemu", file); NbdLeg leg = NbdLeg.open(q.uri(), VOL)) {
            TagTable t = TagTable.create(leg.table(), owner, 2, NbdLeg.TABLE_HALF_RECORDS);
            t.record(41, 5000, data.length);
            leg.blocks().write(ByteBuffer.wrap(data), 5000);
            leg.blocks().force();
            t.markDone(new long[] {41}, 1);
            t.record(42, 0, 1);                              // forces the DONE appended before it
            t.close();
        }
        assertArrayEquals(data, readFile(file, 5000, data.length));
        assertEquals("SNBDTAGT", new String(readFile(file, VOL + 2048L, 8), StandardCharsets.US_ASCII));
        try (LegPeer q = LegPeer.qemuNbd(tmp, "qemu", file); NbdLeg leg = NbdLeg.open(q.uri(), VOL)) {
            TagTable t = TagTable.open(leg.table(), owner, 2);
            assertEquals(List.of(new TagTable.Entry(41, 5000, data.length, true), new TagTable.Entry(42, 0, 1, false)),
                    t.live());
            t.close();
        }
    }

    @Test
    void blockWritesAreSplitForcedAndLandAtTheSameOffsetsInTheExport() throws Exception {
        Path file = exportFile(NbdLeg.exportBytes(VOL) + 12345);      // a bigger export is fine
        byte[] data = random(1, 300_000);                              // > 64 KiB: several requests
        try (LegPeer k = fileServer(file); NbdLeg leg = NbdLeg.open(k.uri(), VOL)) {
            LegIo io = leg.blocks();
            io.write(ByteBuffer.wrap(data), 12_345);
            io.force();
            assertArrayEquals(data, readFile(file, 12_345, data.length), "the export's file holds the write after force");
            ByteBuffer back = ByteBuffer.allocateDirect(data.length);
            io.read(back, 12_345);
            assertEquals(data.length, back.position());
            byte[] got = new byte[data.length];
            back.flip().get(got);
            assertArrayEquals(data, got);

            // Never into the table area: a write reaching past the volume's blocks is refused.
            IOException e = assertThrows(IOException.class, () -> io.write(ByteBuffer.wrap(new byte[10]), VOL - 5));
            assertTrue(e.getMessage().contains(k.uri().toString()) && e.getMessage().contains("outside"), e.getMessage());
            assertThrows(IOException.class, () -> io.read(ByteBuffer.allocate(10), VOL - 5));
            assertThrows(IOException.class, () -> leg.table().write(ByteBuffer.wrap(new byte[10]), NbdLeg.TABLE_BYTES - 5));
            // The table area reads zeros past its end, as TagStore asks.
            ByteBuffer z = ByteBuffer.allocate(16);
            Arrays.fill(z.array(), (byte) 7);
            leg.table().read(z, NbdLeg.TABLE_BYTES - 8);
            assertArrayEquals(new byte[16], z.array());
        }
        assertArrayEquals(new byte[5], readFile(file, VOL, 5), "the refused write left the table area alone");
    }

    /**
     * Asynchronous writes of the blocks view (docs/mirrors.md, "NBD legs"): {@code submitWrite} returns once the bytes
     * are sent (the buffer is overwritten at once and the export still gets what was sent), the slot hears of the
     * reply exactly once, from the client's reader; a write the server fails (nbdkit's error filter) completes with an
     * IOException naming the URI and the offset; a write larger than the export's maximum request (64 KiB here) is
     * split synchronously and completed before it returns. The table view has no asynchronous writes.
     */
    @Test
    void asynchronousWritesCompleteOnTheirRepliesAndAFailedOneNamesTheUri() throws Exception {
        Path file = exportFile(NbdLeg.exportBytes(VOL));
        Path failNow = tmp.resolve("fail-writes");
        try (LegPeer k = LegPeer.nbdkit(tmp, "async", "--filter=error", "--filter=blocksize-policy", "file",
                file.toString(), "blocksize-maximum=65536", "error-pwrite=EIO", "error-pwrite-rate=100%",
                "error-pwrite-file=" + failNow);
             NbdLeg leg = NbdLeg.open(k.uri(), VOL)) {
            LegIo io = leg.blocks();
            assertTrue(io.asyncWrites());
            assertFalse(((LegIo) leg.table()).asyncWrites(), "the table writes then forces: never asynchronous");
            java.util.concurrent.BlockingQueue<Object[]> done = new java.util.concurrent.LinkedBlockingQueue<>();
            LegIo.WriteSlot slot = io.writeSlot((legIndex, failure) -> done.add(new Object[] {legIndex, failure,
                    Thread.currentThread().getName()}), 3);
            byte[] a = random(7, 4096);
            ByteBuffer buf = ByteBuffer.allocateDirect(4096);
            buf.put(a).flip();
            io.submitWrite(slot, buf, 8192);
            buf.clear();
            buf.put(new byte[4096]);            // reused at once: the request already took its bytes
            Object[] ok = done.take();
            assertEquals(3, ok[0]);
            assertEquals(null, ok[1]);
            assertTrue(((String) ok[2]).startsWith("nbd-client"), "completed on the client's reader: " + ok[2]);
            io.force();
            assertArrayEquals(a, readFile(file, 8192, 4096));

            byte[] big = random(8, 100_000);     // two requests of at most 64 KiB: done synchronously
            io.submitWrite(slot, ByteBuffer.wrap(big), 20_000);
            Object[] split = done.poll();
            assertNotNull(split, "a split write is completed before submitWrite returns");
            assertEquals(null, split[1]);
            io.force();
            assertArrayEquals(big, readFile(file, 20_000, big.length));

            Files.createFile(failNow);          // the error filter fails writes while this file exists
            io.submitWrite(slot, ByteBuffer.wrap(a), 4096);
            Object[] failed = done.take();
            IOException e = (IOException) failed[1];
            assertNotNull(e, "the server's EIO");
            assertTrue(e.getMessage().contains(k.uri().toString()) && e.getMessage().contains("at 4096"), e.getMessage());
            assertTrue(done.isEmpty(), "one completion per write");
        }
    }

    /** Durability is the peer's FLUSH: nbdkit's log filter shows each force() as a Flush after the writes (no FUA). */
    @Test
    void forceIsAFlushOnThePeer() throws Exception {
        Path file = exportFile(NbdLeg.exportBytes(VOL));
        Path log = tmp.resolve("requests.log");
        try (LegPeer k = LegPeer.nbdkit(tmp, "logged", "--filter=log", "file", file.toString(), "logfile=" + log);
             NbdLeg leg = NbdLeg.open(k.uri(), VOL)) {
            leg.blocks().write(ByteBuffer.wrap(new byte[] {1}), 100);
            leg.blocks().force();
            leg.table().write(ByteBuffer.wrap(new byte[] {2}), 200);
            leg.table().force();
        }
        List<String> ops = new ArrayList<>();
        for (String line : Files.readAllLines(log)) {
            Matcher m = Pattern
                    .compile("connection=\\d+ (Write|Flush) id=\\d+( offset=(0x[0-9a-f]+) count=0x1 fua=(\\d))?").matcher(line);
            if (m.find()) {
                ops.add(m.group(1) + (m.group(3) == null ? "" : " " + Long.decode(m.group(3)) + " fua=" + m.group(4)));
            }
        }
        assertEquals(List.of("Write 100 fua=0", "Flush", "Write " + (VOL + 200) + " fua=0", "Flush"), ops);
    }

    /**
     * A crash left tagged writes on one leg only (Symantec behaviours 17, 19, 21): the file leg holds tag 2, the
     * NBD leg tags 3 and 4 (4 overlaps 2: higher tag wins), tag 1 is matched. The NBD leg is reopened (a new
     * connection, as after a restart) before reconciling; exactly the unmatched pieces are copied, each in its
     * direction, and the legs end byte-identical with empty tables.
     */
    @Test
    void reconcilesAFileLegAgainstAnNbdLeg() throws Exception {
        Path file = exportFile(NbdLeg.exportBytes(VOL));
        byte[] base = random(2, VOL);
        try (RandomAccessFile r = new RandomAccessFile(file.toFile(), "rw")) {
            r.write(base);
        }
        Path local = tmp.resolve("local.leg");
        Files.write(local, base);
        UUID owner = UUID.randomUUID();
        byte[] expected = base.clone();

        long t2Off = (1 << 20) + 100;
        long t4Off = (1 << 20) + 3000;
        long t3Off = 2 << 20;
        byte[] d1 = random(11, 65536);
        byte[] d2 = random(12, 5000);
        byte[] d3 = random(13, 70000);
        byte[] d4 = random(14, 4000);
        System.arraycopy(d1, 0, expected, 0, d1.length);
        System.arraycopy(d2, 0, expected, (int) t2Off, d2.length);
        System.arraycopy(d4, 0, expected, (int) t4Off, d4.length);     // after d2: the higher tag wins
        System.arraycopy(d3, 0, expected, (int) t3Off, d3.length);

        try (LegPeer k = fileServer(file)) {
            FileLegIo fileIo = new FileLegIo(local);
            TagTable t0 = TagTable.create(FileTagStore.create(tmp.resolve("local.tags"), NbdLeg.TABLE_BYTES), owner, 0,
                    NbdLeg.TABLE_HALF_RECORDS);
            NbdLeg nbd = NbdLeg.open(k.uri(), VOL);
            TagTable t1 = TagTable.create(nbd.table(), owner, 1, NbdLeg.TABLE_HALF_RECORDS);
            // tag 1 on both legs, done: matched
            LegTestSupport.completeChange(t0, fileIo, 1, 0, d1);
            LegTestSupport.completeChange(t1, nbd.blocks(), 1, 0, d1);
            // the crash: tag 2 reached the file leg only, tags 3 and 4 the NBD leg only
            t0.record(2, t2Off, d2.length);
            fileIo.write(ByteBuffer.wrap(d2), t2Off);
            t1.record(3, t3Off, d3.length);
            nbd.blocks().write(ByteBuffer.wrap(d3), t3Off);
            t1.record(4, t4Off, d4.length);
            nbd.blocks().write(ByteBuffer.wrap(d4), t4Off);
            fileIo.force();
            nbd.blocks().force();
            t1.live();
            t1.close();
            nbd.close();

            try (NbdLeg again = NbdLeg.open(k.uri(), VOL)) {
                TagTable t1b = TagTable.open(again.table(), owner, 1);
                Reconciler.Report report = Reconciler.reconcile(List.of(t0, t1b), List.of(fileIo, again.blocks()));
                assertEquals(1, report.entriesMatched(), report.toString());
                assertEquals(3, report.entriesUnmatched(), report.toString());
                assertEquals(Set.of(new Reconciler.Copy(2, t2Off, t4Off - t2Off, 0, 2),
                        new Reconciler.Copy(4, t4Off, d4.length, 1, 1),
                        new Reconciler.Copy(3, t3Off, d3.length, 1, 1)), Set.copyOf(report.copies()), report.toString());
                assertEquals((t4Off - t2Off) + d4.length + d3.length, report.bytesCopied());
                assertEquals(t4Off - t2Off, report.bytes(0, 1));
                assertEquals(d4.length + d3.length, report.bytes(1, 0));
                assertTrue(t0.live().isEmpty());
                assertTrue(t1b.live().isEmpty());
                t1b.close();
            }
            t0.close();
            fileIo.close();
        }
        assertArrayEquals(expected, Files.readAllBytes(local), "file leg");
        assertArrayEquals(expected, readFile(file, 0, VOL), "NBD leg (nbdkit's backing file)");
    }

    /** The peer dies while writes are in flight: the writer gets an IOException naming the URI, not a hang. */
    @Test
    @Timeout(value = 60, unit = TimeUnit.SECONDS)
    void aPeerThatDiesMidWriteGivesAnIOExceptionNamingTheUri() throws Exception {
        Path file = exportFile(NbdLeg.exportBytes(VOL));
        LegPeer k = fileServer(file);
        try (NbdLeg leg = NbdLeg.open(k.uri(), VOL)) {
            Throwable t = LegTestSupport.failureOfWritesDuring(leg, k::killNow);
            assertNotNull(t);
            assertTrue(t instanceof IOException, String.valueOf(t));
            assertTrue(t.getMessage().contains(k.uri().toString()), t.getMessage());
            assertTrue(t.getMessage().contains("(volume blocks [0, " + VOL + ")): write of"), t.getMessage());
            IOException later = assertThrows(IOException.class, () -> leg.blocks().force());
            assertTrue(later.getMessage().contains(k.uri().toString()) && later.getMessage().contains("FLUSH"),
                    later.getMessage());
        } finally {
            k.close();
        }
    }

    /**
     * A peer that stops answering but keeps the connection open (nbdkit's delay filter holds every write for an
     * hour): the leg's request timeout gives up the connection and the write fails naming the URI. The
     * preemptive bound is only there so that a regression fails instead of hanging the build.
     */
    @Test
    void aPeerThatStopsAnsweringFailsAfterTheRequestTimeout() throws Exception {
        Path file = exportFile(NbdLeg.exportBytes(VOL));
        LegPeer k = LegPeer.nbdkit(tmp, "stuck", "--filter=delay", "file", file.toString(), "delay-write=3600");
        NbdLeg leg = null;
        try {
            NbdLeg l = NbdLeg.open(k.uri(), VOL, NbdClient.Options.defaults(), Duration.ofMillis(500));
            leg = l;
            l.blocks().force();                             // flushes are answered: the connection works
            IOException e = assertTimeoutPreemptively(Duration.ofSeconds(60),
                    () -> assertThrows(IOException.class, () -> l.blocks().write(ByteBuffer.allocate(4096), 0)));
            assertTrue(e.getMessage().contains(k.uri().toString()) && e.getMessage().contains("request timeout"),
                    e.getMessage());
        } finally {
            // nbdkit first: closing the leg waits for requests in flight, which only a dead peer ends if the
            // timeout did not; and nbdkit would sit out the delayed write before exiting on SIGTERM.
            k.killNow();
            if (leg != null) {
                leg.close();
            }
        }
    }

    /** The request timeout only counts while calls wait: an idle leg is never cut off. */
    @Test
    void anIdleLegIsNotCutOff() throws Exception {
        Path file = exportFile(NbdLeg.exportBytes(VOL));
        try (LegPeer k = fileServer(file);
             NbdLeg leg = NbdLeg.open(k.uri(), VOL, NbdClient.Options.defaults(), Duration.ofMillis(100))) {
            Thread.sleep(1000);
            leg.blocks().write(ByteBuffer.wrap(new byte[] {1, 2, 3}), 0);
            leg.blocks().force();
            assertArrayEquals(new byte[] {1, 2, 3}, readFile(file, 0, 3));
        }
    }

    @Test
    void refusesAnExportTooSmallForBlocksAndTable() throws Exception {
        Path file = exportFile(NbdLeg.exportBytes(VOL) - 1);
        try (LegPeer k = fileServer(file)) {
            IOException e = assertThrows(IOException.class, () -> NbdLeg.open(k.uri(), VOL));
            assertTrue(e.getMessage().contains(k.uri().toString()), e.getMessage());
            assertTrue(e.getMessage().contains("needs at least " + NbdLeg.exportBytes(VOL)), e.getMessage());
        }
    }

    @Test
    void refusesAReadOnlyExport() throws Exception {
        Path file = exportFile(NbdLeg.exportBytes(VOL));
        try (LegPeer k = LegPeer.nbdkit(tmp, "ro", "-r", "file", file.toString())) {
            IOException e = assertThrows(IOException.class, () -> NbdLeg.open(k.uri(), VOL));
            assertTrue(e.getMessage().contains(k.uri().toString()) && e.getMessage().contains("read-only"), e.getMessage());
        }
    }

    @Test
    void refusesAnExportWithoutFlush() throws Exception {
        long size = NbdLeg.exportBytes(VOL);
        try (LegPeer k = LegPeer.nbdkit(tmp, "noflush", "eval", "get_size=echo " + size,
                "pread=dd if=/dev/zero count=$3 iflag=count_bytes 2>/dev/null", "pwrite=cat >/dev/null",
                "can_write=exit 0", "can_flush=exit 3")) {
            IOException e = assertThrows(IOException.class, () -> NbdLeg.open(k.uri(), VOL));
            assertTrue(e.getMessage().contains(k.uri().toString()) && e.getMessage().contains("FLUSH"), e.getMessage());
        }
    }

    @Test
    void refusesAnExportThatDemandsAlignedRequests() throws Exception {
        Path file = exportFile(NbdLeg.exportBytes(VOL));
        try (LegPeer k = LegPeer.nbdkit(tmp, "aligned", "--filter=blocksize-policy", "file", file.toString(),
                "blocksize-minimum=512")) {
            IOException e = assertThrows(IOException.class, () -> NbdLeg.open(k.uri(), VOL));
            assertTrue(e.getMessage().contains(k.uri().toString()) && e.getMessage().contains("aligned to 512"), e.getMessage());
        }
    }

    @Test
    void factoryTellsNbdUrisFromPaths() throws Exception {
        assertTrue(NbdLegs.isNbdUri("nbd://backup-host:10809/db-leg"));
        assertTrue(NbdLegs.isNbdUri("NBD+UNIX:///x?socket=/s"));
        assertTrue(NbdLegs.isNbdUri("nbds://h/x"));
        assertTrue(!NbdLegs.isNbdUri("/disk2/snapbd/db.leg"));
        IllegalArgumentException vsock = assertThrows(IllegalArgumentException.class, () -> NbdLegs.open("nbd+vsock://1:2/x", VOL));
        assertTrue(vsock.getMessage().contains("vsock"), vsock.getMessage());
        Path file = exportFile(NbdLeg.exportBytes(VOL));
        try (LegPeer k = fileServer(file)) {
            AtomicReference<Path> asked = new AtomicReference<>();
            try (NbdLegs.Opened o = NbdLegs.open(k.uri().toString(), VOL, (p, size) -> {
                throw new AssertionError("an NBD URI opened as a file: " + p);
            })) {
                assertEquals(VOL, o.blocks().size());
                assertEquals(NbdLeg.TABLE_BYTES, o.table().size());
            }
            Path local = tmp.resolve("local.leg");
            Files.write(local, new byte[VOL]);
            try (NbdLegs.Opened o = NbdLegs.open(local.toString(), VOL, (p, size) -> {
                asked.set(p);
                return new NbdLegs.Opened(new FileLegIo(p), FileTagStore.create(tmp.resolve("t"), NbdLeg.TABLE_BYTES));
            })) {
                assertEquals(local, asked.get());
                assertEquals(VOL, o.blocks().size());
            }
        }
    }
}
