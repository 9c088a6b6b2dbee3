package io.snapbd.server.it;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.extension.RegisterExtension;

import java.util.Arrays;
import java.util.concurrent.TimeUnit;

import static io.snapbd.server.it.SnapshotSupport.createSnapshot;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Writes answered while staged behind a copy-on-write force survive a {@code kill -9} of the server: the first
 * writes after a snapshot are staged in the overlay and answered before they reach data.img; the overlay's RAM
 * file outlives the process and the restarted server writes them again before it serves. Before, they were lost,
 * and a kernel device kept across the restart completed its next FLUSH on the new connection, so the file system
 * above took the lost writes as durable (KernelRestartIT's kill9-twice step: fio verify read old blocks).
 * The committer is told to hold its batch for an hour, so the writes are still staged at the kill.
 */
@Timeout(value = 10, unit = TimeUnit.MINUTES)
@ExtendWith(ServerLiveness.class)
class StagedWritesKillIT {

    static final String VOL = "k";
    static final int BLOCK = 4096;
    static final int BLOCKS = 64;

    @RegisterExtension
    static final SnapbdServerExtension SNAPBD = SnapbdServerExtension.builder("StagedWritesKillIT").volume(VOL, "64M", "64M")
            .jvmOptions("-Dsnapbd.overlay.batch.micros=3600000000").serveArgs("--warm-up", "off").build();

    private static byte[] filled(int n, int value) {
        byte[] b = new byte[n];
        Arrays.fill(b, (byte) value);
        return b;
    }

    @Test
    void writesAnsweredWhileStagedSurviveAKill9() throws Exception {
        ServerProcess server = SNAPBD.server();
        long handle = 1;
        try (RawNbd c = RawNbd.connect(server.port())) {
            c.negotiate(VOL, false, false);
            c.write(handle++, 0, filled(BLOCKS * BLOCK, 'a'));
            c.sendRequest(0, RawNbd.CMD_FLUSH, handle, 0, 0, null);
            assertEquals(0, c.readReply(0).error(), "FLUSH");
            handle++;
            createSnapshot(server, VOL, "s");
            // First writes after the snapshot: each needs a before-image, so each is staged and answered at once.
            for (int b = 0; b < BLOCKS; b++) {
                c.write(handle++, (long) b * BLOCK, filled(BLOCK, 'b' + b % 20));
            }
            server.kill9();     // no FLUSH: the committer still holds them
        }
        server.restart();
        String log = server.log();
        assertTrue(log.contains("volume " + VOL + " was not stopped cleanly"), log);
        assertTrue(log.contains("volume " + VOL + ": wrote again " + BLOCKS + " block(s) that the previous run had "
                + "acknowledged"), log);
        byte[] want = new byte[BLOCKS * BLOCK];
        for (int b = 0; b < BLOCKS; b++) {
            Arrays.fill(want, b * BLOCK, (b + 1) * BLOCK, (byte) ('b' + b % 20));
        }
        try (RawNbd c = RawNbd.connect(server.port())) {
            c.negotiate(VOL, false, false);
            assertArrayEquals(want, c.read(1, 0, BLOCKS * BLOCK), "every answered write is there after kill -9");
        }
        try (RawNbd c = RawNbd.connect(server.port())) {
            c.negotiate(VOL + "@s", false, false);
            assertArrayEquals(filled(BLOCKS * BLOCK, 'a'), c.read(1, 0, BLOCKS * BLOCK), "the snapshot kept its content");
        }
        assertEquals(0, server.stop());
        Tools.Result fsck = ServerProcess.snapbd(SNAPBD.dataDir(), "fsck", VOL).assertExit(0);
        assertTrue(fsck.stdout().contains(VOL + ": clean"), fsck.toString());
        server.restart();
    }
}
