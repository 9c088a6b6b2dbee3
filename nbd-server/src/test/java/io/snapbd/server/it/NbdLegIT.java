package io.snapbd.server.it;

import io.snapbd.engine.mirror.FileLegIo;
import io.snapbd.engine.mirror.FileTagStore;
import io.snapbd.engine.mirror.LegIo;
import io.snapbd.engine.mirror.Reconciler;
import io.snapbd.engine.mirror.TagTable;
import io.snapbd.server.client.NbdUri;
import io.snapbd.server.mirror.LegTestSupport;
import io.snapbd.server.mirror.NbdLeg;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * A mirror leg on a second snapbd (issue 24: "any NBD server on another host"), through {@link NbdLeg}: the
 * leg's tag table lives in the area after the volume's blocks in a snapbd volume, survives a {@code kill -9} of
 * that server once forced, reconciliation against a local file leg copies exactly the unmatched ranges, and a
 * server killed mid-write gives an IOException naming the URI.
 */
@Timeout(value = 5, unit = TimeUnit.MINUTES)
@ExtendWith(ServerLiveness.class)
class NbdLegIT {

    static final int VOL = 4 << 20;

    @TempDir
    Path tmp;

    /** A snapbd serving volume {@code leg} just big enough to be a leg of a {@code VOL}-byte volume. */
    private ServerProcess legServer() {
        Path data = tmp.resolve("data");
        ServerProcess.snapbd(data, "volume", "create", "leg", "--size", String.valueOf(NbdLeg.exportBytes(VOL)),
                "--save-size", "16M").assertOk();
        return ServerProcess.start(data, "nbdleg");
    }

    private static NbdUri uri(ServerProcess s) {
        return NbdUri.parse(s.unixUri("leg"));
    }

    private static byte[] readAll(LegIo io, long pos, int n) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(n);
        io.read(b, pos);
        return b.array();
    }

    @Test
    void forcedTableAndBlocksSurviveKill9OfTheSnapbdLeg() throws Exception {
        UUID owner = UUID.randomUUID();
        byte[] data = TestData.random(1, 200_000);
        try (ServerProcess s = legServer()) {
            try (NbdLeg leg = NbdLeg.open(uri(s), VOL)) {
                assertEquals(NbdLeg.exportBytes(VOL), leg.exportSize());
                TagTable t = TagTable.create(leg.table(), owner, 1, NbdLeg.TABLE_HALF_RECORDS);
                t.record(9, 8192, data.length);
                leg.blocks().write(ByteBuffer.wrap(data), 8192);
                leg.blocks().force();
                t.record(10, 3 << 20, 512);          // forced by record; no data, no DONE: a write in flight
                t.markDone(new long[] {9}, 1);
                leg.table().force();
                t.close();
            }
            s.kill9();
            s.restart();
            try (NbdLeg leg = NbdLeg.open(uri(s), VOL)) {
                TagTable t = TagTable.open(leg.table(), owner, 1);
                assertEquals(List.of(new TagTable.Entry(9, 8192, data.length, true),
                        new TagTable.Entry(10, 3 << 20, 512, false)), t.live());
                assertArrayEquals(data, readAll(leg.blocks(), 8192, data.length));
                t.close();
            }
        }
    }

    /** Symantec behaviours 17, 19, 21 with a snapbd leg: leg 0 (a file) holds tag 2 only, leg 1 (snapbd) tag 3 only. */
    @Test
    void reconcilesAFileLegAgainstASnapbdLeg() throws Exception {
        UUID owner = UUID.randomUUID();
        byte[] base = TestData.random(2, VOL);
        byte[] d1 = TestData.random(11, 4096);
        byte[] d2 = TestData.random(12, 12_345);
        byte[] d3 = TestData.random(13, 100_000);
        long off2 = 1_000_000;
        long off3 = 3 << 20;
        byte[] expected = base.clone();
        System.arraycopy(d1, 0, expected, 0, d1.length);
        System.arraycopy(d2, 0, expected, (int) off2, d2.length);
        System.arraycopy(d3, 0, expected, (int) off3, d3.length);
        Path local = tmp.resolve("local.leg");
        Files.write(local, base);

        try (ServerProcess s = legServer();
             FileLegIo fileIo = new FileLegIo(local);
             TagTable t0 = TagTable.create(FileTagStore.create(tmp.resolve("local.tags"), NbdLeg.TABLE_BYTES), owner, 0,
                     NbdLeg.TABLE_HALF_RECORDS)) {
            try (NbdLeg leg = NbdLeg.open(uri(s), VOL)) {
                leg.blocks().write(ByteBuffer.wrap(base), 0);
                TagTable t1 = TagTable.create(leg.table(), owner, 1, NbdLeg.TABLE_HALF_RECORDS);
                // tag 1: on both legs, done (matched)
                LegTestSupport.completeChange(t0, fileIo, 1, 0, d1);
                LegTestSupport.completeChange(t1, leg.blocks(), 1, 0, d1);
                t0.record(2, off2, d2.length);
                fileIo.write(ByteBuffer.wrap(d2), off2);
                fileIo.force();
                t1.record(3, off3, d3.length);
                leg.blocks().write(ByteBuffer.wrap(d3), off3);
                leg.blocks().force();
                t1.close();
            }
            s.kill9();            // the crash, on the NBD leg's side too
            s.restart();
            try (NbdLeg leg = NbdLeg.open(uri(s), VOL); TagTable t1 = TagTable.open(leg.table(), owner, 1)) {
                Reconciler.Report r = Reconciler.reconcile(List.of(t0, t1), List.of(fileIo, leg.blocks()));
                assertEquals(1, r.entriesMatched(), r.toString());
                assertEquals(Set.of(new Reconciler.Copy(2, off2, d2.length, 0, 2), new Reconciler.Copy(3, off3, d3.length, 1, 1)),
                        Set.copyOf(r.copies()), r.toString());
                assertEquals(d2.length + d3.length, r.bytesCopied());
                assertTrue(t0.live().isEmpty());
                assertTrue(t1.live().isEmpty());
                assertArrayEquals(expected, readAll(leg.blocks(), 0, VOL), "snapbd leg");
            }
        }
        assertArrayEquals(expected, Files.readAllBytes(local), "file leg");
    }

    @Test
    @Timeout(value = 2, unit = TimeUnit.MINUTES)
    void aSnapbdLegKilledMidWriteGivesAnIOExceptionNamingTheUri() throws Exception {
        try (ServerProcess s = legServer(); NbdLeg leg = NbdLeg.open(uri(s), VOL)) {
            Throwable t = LegTestSupport.failureOfWritesDuring(leg, s::kill9);
            assertNotNull(t);
            assertTrue(t instanceof IOException, String.valueOf(t));
            assertTrue(t.getMessage().contains(uri(s).toString()) && t.getMessage().contains("write of"), t.getMessage());
        }
    }
}
