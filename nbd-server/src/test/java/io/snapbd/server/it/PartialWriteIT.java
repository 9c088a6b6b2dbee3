package io.snapbd.server.it;

import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import java.io.IOException;
import java.util.Arrays;
import java.util.Map;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * A WRITE whose payload stops part way (the client closes after 700 bytes) must leave the volume as it was:
 * snapbd applies a write only once its payload has been received in full (docs/engine.md).
 */
@Timeout(value = 5, unit = TimeUnit.MINUTES)
@ExtendWith(ServerLiveness.class)
class PartialWriteIT {

    static final int MiB = 1 << 20;

    @RegisterExtension
    static final SnapbdServerExtension SNAPBD = SnapbdServerExtension.builder("PartialWriteIT")
            .volume("torn", "16M", "1M").serveArgs("--warm-up", "off").build();
    static final ServerProcess server = SNAPBD.server();

    @Test
    void aWriteWhosePayloadStopsAfter700BytesIsNotApplied() throws Exception {
        String vol = "torn";
        byte[] old = TestData.random(31, 8 * MiB);
        try (RawNbd c = RawNbd.connect(server.port())) {
            c.negotiate(vol, false, false);
            for (int off = 0; off < old.length; off += MiB) {
                c.write(1 + off / MiB, off, Arrays.copyOfRange(old, off, off + MiB));
            }
            c.sendRequest(0, RawNbd.CMD_FLUSH, 99, 0, 0, null);
            assertEquals(0, c.readReply(0).error(), "FLUSH");
            c.disconnect();
        }
        // An aligned 4 KiB block, an unaligned write across blocks, and a 1 MiB write: each announced in full,
        // only 700 bytes of it sent, then the connection closed.
        long[][] cases = {{64 << 10, 4096}, {MiB + 123, 10_000}, {4 * MiB, MiB}};
        byte[] fresh = TestData.random(32, MiB);
        for (long[] w : cases) {
            try (RawNbd c = RawNbd.connect(server.port())) {
                c.negotiate(vol, false, false);
                c.sendRequest(0, RawNbd.CMD_WRITE, 0x7777, w[0], w[1], Arrays.copyOf(fresh, 700));
            }
            awaitNoConnection(vol);     // the server has seen the payload stop and ended that connection
        }
        try (RawNbd c = RawNbd.connect(server.port())) {
            c.negotiate(vol, false, false);
            for (long[] w : cases) {
                int at = (int) w[0];
                int n = (int) w[1];
                assertArrayEquals(Arrays.copyOfRange(old, at, at + n), c.read(2, at, n),
                        "[" + at + ", +" + n + ") after a WRITE whose payload stopped at 700 bytes: the old content");
            }
            // And a whole write is applied as usual.
            c.write(3, 64 << 10, Arrays.copyOf(fresh, 4096));
            assertArrayEquals(Arrays.copyOf(fresh, 4096), c.read(4, 64 << 10, 4096), "a complete WRITE");
            c.disconnect();
        }
    }

    static void awaitNoConnection(String vol) throws IOException, InterruptedException {
        try (SnapshotSupport.Admin admin = new SnapshotSupport.Admin(server)) {
            long deadline = System.nanoTime() + TimeUnit.MINUTES.toNanos(2);
            while (admin.call(Map.of("command", "stats", "export", vol)).path("connections").asInt() != 0) {
                if (System.nanoTime() > deadline) {
                    fail("the connection whose WRITE payload stopped is still open; server log:\n" + server.log());
                }
                Thread.sleep(20);
            }
        }
    }
}
