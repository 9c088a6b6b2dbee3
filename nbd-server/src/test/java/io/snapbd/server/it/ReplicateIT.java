package io.snapbd.server.it;

import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Incremental replication end to end (issue 6): a full copy of snapshot L to a third-party server
 * (nbdkit's memory plugin) and to a second snapbd, then `replicate --from L` (through the replica state
 * file); the target must equal VOLUME@M byte for byte. Also: up to date on a re-run, and a failed run
 * (target down) completed by the next one.
 */
@Timeout(value = 10, unit = TimeUnit.MINUTES)
@ExtendWith(ServerLiveness.class)
class ReplicateIT {

    static final int SIZE = 32 << 20;

    @RegisterExtension
    static final SnapbdServerExtension SNAPBD = SnapbdServerExtension.builder("ReplicateIT").perTest().build();

    @TempDir
    Path tmp;

    private Process nbdkit(Path sock) throws Exception {
        Tools.require("nbdkit");
        Process p = Tools.start(tmp.resolve("nbdkit-" + sock.getFileName() + ".log"),
                List.of("nbdkit", "--foreground", "--unix", sock.toString(), "memory", String.valueOf(SIZE)));
        for (int i = 0; i < 300 && !Files.exists(sock); i++) {
            Thread.sleep(100);
        }
        assertTrue(Files.exists(sock), "nbdkit did not create its socket");
        return p;
    }

    private static String nbdkitUri(Path sock) {
        return "nbd+unix:///?socket=" + sock;
    }

    private byte[] export(String uri, String name) throws Exception {
        Path out = tmp.resolve(name + ".img");
        Files.deleteIfExists(out);
        Tools.run("nbdcopy", uri, out.toString()).assertOk();
        return Files.readAllBytes(out);
    }

    /** Writes the first snapshot's data, takes L, changes data and trims, takes M. */
    private void prepare(ServerProcess a) throws Exception {
        a.cli("volume", "create", "v", "--size", String.valueOf(SIZE), "--save-size", "16M").assertOk();
        Path img = TestData.write(tmp.resolve("l.img"), TestData.imageWithZeroRegions(61, 12 << 20));
        Tools.run("nbdcopy", img.toString(), a.unixUri("v")).assertOk();
        a.cli("snapshot", "create", "v", "L").assertOk();
        Path img2 = TestData.write(tmp.resolve("m.img"), TestData.random(62, 3 << 20));
        Tools.run("qemu-io", "-f", "raw", a.unixUri("v"), "-c", "write -P 0x5a 20M 1M").assertOk();
        Tools.run("nbdcopy", img2.toString(), a.unixUri("v")).assertOk();                    // first 3 MiB change
        Tools.run("qemu-io", "-f", "raw", a.unixUri("v"), "-c", "discard 8M 2M").assertOk(); // 8..10 MiB no longer in use
        a.cli("snapshot", "create", "v", "M").assertOk();
    }

    private void replicateTwice(ServerProcess a, String targetUri, Path state) throws Exception {
        String sock = a.socket().toString();
        Tools.Result full = a.cli("replicate", "v", "--to", targetUri, "--snapshot", "L", "--state", state.toString(),
                "--source-socket", sock, "--verify").assertOk();
        assertTrue(full.stdout().contains("full copy"), full.stdout());
        assertArrayEquals(export(a.unixUri("v@L"), "src-l"), export(targetUri, "dst-l"), "after the full copy the target equals v@L");
        Tools.Result delta = a.cli("replicate", "v", "--to", targetUri, "--state", state.toString(),
                "--source-socket", sock, "--verify", "--json").assertOk();
        assertTrue(delta.stdout().contains("\"from\" : \"L\""), delta.stdout());
        // Only the changed extents travel: 3 MiB written plus 1 MiB patterned, not the whole 12 MiB.
        long copied = Long.parseLong(delta.stdout().replaceAll("(?s).*\"bytesCopied\" : (\\d+).*", "$1"));
        assertTrue(copied >= 4 << 20 && copied < 8 << 20, "delta copied " + copied + " bytes");
        assertArrayEquals(export(a.unixUri("v@M"), "src-m"), export(targetUri, "dst-m"), "after the delta the target equals v@M");
        Tools.Result again = a.cli("replicate", "v", "--to", targetUri, "--state", state.toString(), "--source-socket", sock).assertOk();
        assertTrue(again.stdout().contains("up to date"), again.stdout());
    }

    @Test
    void toNbdkitMemory() throws Exception {
        Tools.require("nbdcopy", "qemu-io", "nbdkit");
        ServerProcess a = SNAPBD.server();
        prepare(a);
        Path sock = tmp.resolve("kit.sock");
        Process kit = nbdkit(sock);
        try {
            replicateTwice(a, nbdkitUri(sock), tmp.resolve("state.json"));
            Tools.Result diff = a.cli("diff", "v", "L", "M", "--json").assertOk();
            assertTrue(diff.stdout().contains("\"state\" : \"changed\""), diff.stdout());
        } finally {
            kit.destroy();
            kit.waitFor();
        }
    }

    @Test
    void toASecondSnapbd() throws Exception {
        Tools.require("nbdcopy", "qemu-io");
        ServerProcess a = SNAPBD.server();
        ServerProcess b = SNAPBD.startAnother("b");
        prepare(a);
        b.cli("volume", "create", "copy", "--size", String.valueOf(SIZE), "--save-size", "4M").assertOk();
        replicateTwice(a, b.unixUri("copy"), tmp.resolve("state-b.json"));
    }

    @Test
    void aFailedRunIsCompletedByTheNext() throws Exception {
        Tools.require("nbdcopy", "qemu-io", "nbdkit");
        ServerProcess a = SNAPBD.server();
        prepare(a);
        Path sock = tmp.resolve("down.sock");
        Path state = tmp.resolve("state-f.json");
        Tools.Result failed = a.cli("replicate", "v", "--to", nbdkitUri(sock), "--snapshot", "M", "--state", state.toString(),
                "--source-socket", a.socket().toString());
        assertNotEquals(0, failed.exit());
        assertTrue(failed.stderr().contains("replication failed"), failed.stderr());
        assertTrue(!Files.exists(state), "no state is recorded for a failed run");
        Process kit = nbdkit(sock);
        try {
            a.cli("replicate", "v", "--to", nbdkitUri(sock), "--snapshot", "M", "--state", state.toString(),
                    "--source-socket", a.socket().toString()).assertOk();
            assertArrayEquals(export(a.unixUri("v@M"), "src"), export(nbdkitUri(sock), "dst"));
            assertEquals(0, a.cli("replicate", "v", "--to", nbdkitUri(sock), "--state", state.toString(),
                    "--source-socket", a.socket().toString()).exit());
        } finally {
            kit.destroy();
            kit.waitFor();
        }
    }

    @Test
    void badArgumentsAreOneClearLine() throws Exception {
        ServerProcess a = SNAPBD.server();
        a.cli("volume", "create", "v", "--size", "8M", "--save-size", "1M").assertOk();
        Tools.Result r = a.cli("replicate", "v", "--to", "nbds://x/y?tls-psk-file=/k", "--snapshot", "s");
        assertEquals(2, r.exit(), r.toString());
        assertTrue(r.stderr().contains("tls-psk-file is not supported"), r.stderr());
        Tools.Result r2 = a.cli("replicate", "v", "--to", "nbd://127.0.0.1:1/x", "--snapshot", "nope");
        assertNotEquals(0, r2.exit());
        assertTrue(r2.stderr().contains("no active snapshot named nope"), r2.stderr());
    }
}
