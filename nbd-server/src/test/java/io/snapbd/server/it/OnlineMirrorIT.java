package io.snapbd.server.it;

import com.fasterxml.jackson.databind.JsonNode;
import io.snapbd.server.mirror.LegPeer;
import io.snapbd.server.mirror.NbdLeg;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;

import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

import static io.snapbd.server.it.MirrorIT.assertVerified;
import static io.snapbd.server.it.MirrorIT.sha256;
import static io.snapbd.server.it.SnapshotSupport.json;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * {@code mirror add} and {@code mirror remove} through the admin socket while the server serves the volume
 * (docs/mirrors.md, "Adding and removing legs"): fio writes with verify during an online add of a file leg and of
 * an NBD leg (nbdkit's file plugin), then every leg is byte-identical to data.img over the volume's range; an online
 * remove under the same load; bad arguments fail naming the leg or the volume.
 */
@Timeout(value = 20, unit = TimeUnit.MINUTES)
@ExtendWith(ServerLiveness.class)
class OnlineMirrorIT {

    static final String VOL = MirrorIT.VOL;
    static final long SIZE = MirrorIT.SIZE;

    @TempDir
    Path tmp;

    /** 64 MiB of 16 KiB random writes at most 200 per second (about 20 s, however fast the machine: the online
     *  add and remove must run while it writes), then verified at full speed. */
    private Process fio(ServerProcess server, String name) {
        return Tools.start(tmp.resolve(name + ".log"), new ArrayList<>(List.of("fio", "--name=" + name,
                "--ioengine=nbd", "--uri=" + server.unixUri(VOL), "--rw=randwrite", "--bs=16k", "--size=64M",
                "--iodepth=8", "--rate_iops=0,200", "--verify=crc32c", "--verify_fatal=1", "--verify_state_save=0", "--do_verify=1")));
    }

    /** Waits until the volume has taken at least {@code n} more requests (the load runs). */
    private static void awaitLoad(ServerProcess server, Process fio, Path log, long n) throws Exception {
        long before = MirrorIT.requests(server);
        for (int i = 0; i < 1200 && MirrorIT.requests(server) < before + n; i++) {
            assertTrue(fio.isAlive(), "fio ended early: " + Files.readString(log));
            Thread.sleep(50);
        }
    }

    private static void awaitVerified(Process fio, Path log) throws Exception {
        assertTrue(fio.waitFor(10, TimeUnit.MINUTES), "fio did not finish");
        String out = Files.readString(log);
        assertEquals(0, fio.exitValue(), out);
        assertTrue(!out.contains("verify: bad") && out.contains("Run status group"), out);
    }

    @Test
    void onlineAddOfAFileAndAnNbdLegUnderFioThenOnlineRemove() throws Exception {
        Tools.require("fio", "nbdkit");
        Path data = tmp.resolve("data");
        Path leg1 = tmp.resolve("leg1.img");
        Path leg2 = tmp.resolve("leg2.img");
        Path kitFile = tmp.resolve("kit.img");
        try (RandomAccessFile r = new RandomAccessFile(kitFile.toFile(), "rw")) {
            r.setLength(NbdLeg.exportBytes(SIZE));
        }
        Path local = data.resolve("volumes").resolve(VOL).resolve("data.img");
        ServerProcess.snapbd(data, "volume", "create", VOL, "--size", "64M", "--save-size", "1M",
                "--mirror", leg1.toString()).assertOk();
        ServerProcess.snapbd(data, "volume", "create", "plain", "--size", "8M", "--save-size", "1M").assertOk();
        try (LegPeer kit = LegPeer.nbdkit(tmp, "kit", "file", kitFile.toString());
             ServerProcess server = ServerProcess.start(data, "OnlineMirrorIT", "--warm-up", "off")) {
            String kitUri = kit.uri().toString();

            // online add of a file leg, then of an NBD leg, while fio writes
            Process fio = fio(server, "add");
            try {
                awaitLoad(server, fio, tmp.resolve("add.log"), 200);
                Tools.Result add = server.cli("mirror", "add", VOL, leg2.toString()).assertOk();
                System.out.println("OnlineMirrorIT: " + add.stdout());
                JsonNode st = json(server.cli("mirror", "add", VOL, kitUri, "--json").assertOk());
                assertEquals(4, st.path("legs").size(), st.toString());
                for (JsonNode l : st.path("legs")) {
                    assertEquals("in-sync", l.path("state").asText(), st.toString());
                }
                assertTrue(fio.isAlive(), "the adds ran while fio wrote (make the load longer if this fails)");
                awaitVerified(fio, tmp.resolve("add.log"));
            } finally {
                SnapshotSupport.stopNow(fio);
            }
            JsonNode st = json(server.cli("mirror", "status", VOL, "--json"));
            assertEquals(List.of(leg1.toString(), leg2.toString(), kitUri),
                    List.of(st.path("legs").get(1).path("uri").asText(), st.path("legs").get(2).path("uri").asText(),
                            st.path("legs").get(3).path("uri").asText()), st.toString());

            // bad arguments
            Tools.Result unknown = server.cli("mirror", "remove", VOL, tmp.resolve("nope.img").toString());
            assertTrue(unknown.exit() != 0 && unknown.stderr().contains("nope.img")
                    && unknown.stderr().contains("not a leg"), unknown.toString());
            Tools.Result plain = server.cli("mirror", "add", "plain", tmp.resolve("p.img").toString());
            assertTrue(plain.exit() != 0 && plain.stderr().contains("not mirrored"), plain.toString());
            Tools.Result again = server.cli("mirror", "add", VOL, leg2.toString());
            assertTrue(again.exit() != 0 && again.stderr().contains("already"), again.toString());

            // online remove under load
            Process fio2 = fio(server, "remove");
            try {
                awaitLoad(server, fio2, tmp.resolve("remove.log"), 200);
                JsonNode after = json(server.cli("mirror", "remove", VOL, leg1.toString(), "--json").assertOk());
                assertEquals(3, after.path("legs").size(), after.toString());
                assertEquals(leg2.toString(), after.path("legs").get(1).path("uri").asText(), after.toString());
                awaitVerified(fio2, tmp.resolve("remove.log"));
            } finally {
                SnapshotSupport.stopNow(fio2);
            }
            server.cli("mirror", "remove", VOL, kitUri).assertOk();
            Tools.Result last = server.cli("mirror", "remove", VOL, leg2.toString());
            assertTrue(last.exit() != 0 && last.stderr().contains("last extra leg"), last.toString());
            String removedKit = sha256(kitFile, SIZE);
            assertEquals(0, server.stop());

            String h = sha256(local, SIZE);
            assertEquals(h, sha256(leg2, SIZE), "the file leg added online differs from data.img");
            assertEquals(h, removedKit, "the NBD leg added online (removed with no write after) differs from data.img");
            assertTrue(!h.equals(sha256(leg1, SIZE)), "the leg removed under load took no write after its removal");
            Tools.Result fsck = ServerProcess.snapbd(data, "fsck", VOL).assertExit(0);
            System.out.println("OnlineMirrorIT: " + fsck.stdout());
        }
    }
}
