package io.snapbd.server.it;

import com.fasterxml.jackson.databind.JsonNode;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Random;
import java.util.concurrent.TimeUnit;

import static io.snapbd.server.it.SnapshotSupport.MiB;
import static io.snapbd.server.it.SnapshotSupport.copyOut;
import static io.snapbd.server.it.SnapshotSupport.createSnapshot;
import static io.snapbd.server.it.SnapshotSupport.sha256;
import static io.snapbd.server.it.SnapshotSupport.snapshotEntry;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Issue 21 B through the real CLI and real clients: one byte of snapshot metadata flipped while the server is
 * stopped. {@code fsck} exits 4 naming the file; {@code serve} refuses the damaged snapshot (listed invalid with
 * the reason, nbdinfo and nbdcopy of its export fail) while production and the unaffected snapshot are served
 * with their exact content; the damage is still reported after the server ran.
 */
@Timeout(value = 10, unit = TimeUnit.MINUTES)
@ExtendWith(ServerLiveness.class)
class SnapshotDamageIT {

    /** Each test's own volume and server; the server is stopped to damage a file and started again on it. */
    @RegisterExtension
    static final SnapbdServerExtension SNAPBD = SnapbdServerExtension.builder("SnapshotDamageIT").volume("vol", "32M", "8M")
            .perTest().build();

    @TempDir
    Path tmp;

    /**
     * Hashes of vol, vol@s1, vol@s2 after a volume with two snapshots, copied blocks and frozen meta pages; the
     * server is stopped cleanly afterwards.
     */
    private String[] makeVolume(ServerProcess server) throws IOException {
        Random random = new Random(21);
        try (RawNbd c = RawNbd.connect(server.port())) {
            c.negotiate("vol", false, false);
            long h = 1;
            for (long off = 0; off < 16 * MiB; off += MiB) {
                c.write(h++, off, bytes(random, (int) MiB));
            }
            createSnapshot(server, "vol", "s1");
            c.write(h++, 0, bytes(random, (int) MiB));             // copied for s1
            c.write(h++, 20 * MiB, bytes(random, (int) MiB));      // new blocks: meta page 0 frozen into s1
            createSnapshot(server, "vol", "s2");
            c.write(h++, 2 * MiB, bytes(random, (int) MiB));       // copied for s2 (and s1)
            c.write(h++, 24 * MiB, bytes(random, (int) MiB));      // meta page 0 frozen into s2
            c.sendRequest(0, RawNbd.CMD_FLUSH, h, 0, 0, null);
            assertEquals(0, c.readReply(0).error(), "FLUSH");
        }
        String[] hashes = new String[3];
        String[] exports = {"vol", "vol@s1", "vol@s2"};
        for (int i = 0; i < 3; i++) {
            hashes[i] = sha256(copyOut(server.unixUri(exports[i]), tmp.resolve("copy-" + i)));
        }
        assertNotEquals(hashes[1], hashes[2]);
        assertEquals(0, server.stop(), "clean stop:\n" + server.log());
        return hashes;
    }

    private static byte[] bytes(Random r, int n) {
        byte[] b = new byte[n];
        r.nextBytes(b);
        return b;
    }

    private static void flip(Path file, long offset) throws IOException {
        try (RandomAccessFile f = new RandomAccessFile(file.toFile(), "rw")) {
            f.seek(offset);
            int b = f.read();
            f.seek(offset);
            f.write(b ^ 0x5a);
        }
    }

    @Test
    void bitRotInAFrozenMetaPageIsReportedAndTheSnapshotRefused() throws IOException {
        Tools.require("nbdcopy", "nbdinfo");
        ServerProcess server = SNAPBD.server();
        Path data = SNAPBD.dataDir();
        String[] hashes = makeVolume(server);
        Path meta = data.resolve("volumes/vol/snap-1.meta");
        flip(meta, 8192 + 50);              // page 0 of s1's frozen meta bits (the offset 8242)

        Tools.Result fsck = ServerProcess.snapbd(data, "fsck").assertExit(4);
        assertTrue(fsck.stdout().contains("snap-1.meta"), fsck.toString());
        assertTrue(fsck.stdout().contains("s1"), fsck.toString());

        server.restart();
        JsonNode s1 = snapshotEntry(server, "vol", "s1");
        assertEquals("invalid", s1.path("state").asText(), s1.toString());
        assertTrue(s1.path("reason").asText().contains("snap-1.meta"), s1.toString());
        assertTrue(server.cli("snapshot", "list", "vol").assertOk().stdout().contains("damaged"));
        assertEquals("active", snapshotEntry(server, "vol", "s2").path("state").asText());

        Tools.Result info = Tools.run(java.time.Duration.ofMinutes(1), java.util.Map.of("LIBNBD_DEBUG", "1"),
                java.util.List.of("nbdinfo", "--size", server.unixUri("vol@s1")));
        assertNotEquals(0, info.exit(), "nbdinfo of the refused snapshot: " + info);
        assertTrue(info.stderr().contains("damaged"), "the refusal says why: " + info);
        Tools.Result copy = Tools.run("nbdcopy", server.unixUri("vol@s1"), tmp.resolve("refused").toString());
        assertNotEquals(0, copy.exit(), "nbdcopy of the refused snapshot: " + copy);

        assertEquals(hashes[0], sha256(copyOut(server.unixUri("vol"), tmp.resolve("vol-after"))), "production");
        assertEquals(hashes[2], sha256(copyOut(server.unixUri("vol@s2"), tmp.resolve("s2-after"))), "s2");
        assertEquals(0, server.stop(), server.log());
        Tools.Result again = ServerProcess.snapbd(data, "fsck").assertExit(4);
        assertTrue(again.stdout().contains("s1"), again.toString());
    }

    @Test
    void bitRotInTheMiddleOfTheExceptionLogIsReportedAndNeverCompactedAway() throws IOException {
        Tools.require("nbdcopy", "nbdinfo");
        ServerProcess server = SNAPBD.server();
        Path data = SNAPBD.dataDir();
        String[] hashes = makeVolume(server);
        Path log = data.resolve("volumes/vol/exceptions.log");
        long offset = 4096 + 64 * 100 + 30;          // a before-image record of s1, forced long ago
        flip(log, offset);
        byte[] damaged = Files.readAllBytes(log);

        Tools.Result fsck = ServerProcess.snapbd(data, "fsck").assertExit(4);
        assertTrue(fsck.stdout().contains("exceptions.log"), fsck.toString());

        server.restart();
        JsonNode s1 = snapshotEntry(server, "vol", "s1");
        assertEquals("invalid", s1.path("state").asText(), s1.toString());
        assertTrue(s1.path("reason").asText().contains("exceptions.log"), s1.toString());
        Tools.Result copy = Tools.run("nbdcopy", server.unixUri("vol@s1"), tmp.resolve("refused").toString());
        assertNotEquals(0, copy.exit(), "nbdcopy of the refused snapshot: " + copy);
        assertEquals(hashes[0], sha256(copyOut(server.unixUri("vol"), tmp.resolve("vol-after"))), "production");
        if ("active".equals(snapshotEntry(server, "vol", "s2").path("state").asText())) {
            assertEquals(hashes[2], sha256(copyOut(server.unixUri("vol@s2"), tmp.resolve("s2-after"))), "s2");
        }
        assertEquals(0, server.stop(), server.log());
        byte[] after = Files.readAllBytes(log);
        assertTrue(after.length >= damaged.length, "the log was not compacted");
        assertEquals(damaged[(int) offset], after[(int) offset], "the damaged record is still there");
        ServerProcess.snapbd(data, "fsck").assertExit(4);
    }
}
