package io.snapbd.server.it;

import com.fasterxml.jackson.databind.JsonNode;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.io.IOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

import static io.snapbd.server.it.SnapshotSupport.json;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * One damaged volume next to a healthy one (issue 21 D): for each file the engine reads at open, a damaged copy
 * makes {@code fsck} exit 4 naming that file, and the server starts anyway: it serves the healthy volume (a real
 * client reads it) and sets the damaged one aside, listed with the reason in {@code status}, {@code volume list}
 * (text and JSON, through the admin socket) and the metrics. Then the ways out: delete --force, or restore the
 * volume's directory from a copy.
 */
@Timeout(value = 15, unit = TimeUnit.MINUTES)
@ExtendWith(ServerLiveness.class)
class DamagedVolumeIT {

    @TempDir
    static Path tmp;
    /** A data directory with volumes "healthy" and "damaged" (one snapshot, so every file exists), stopped cleanly. */
    static Path pristine;

    @BeforeAll
    static void createVolumes() {
        Tools.require("nbdinfo", "nbdcopy");
        pristine = tmp.resolve("pristine");
        ServerProcess.snapbd(pristine, "volume", "create", "healthy", "--size", "8M", "--save-size", "4M").assertOk();
        ServerProcess.snapbd(pristine, "volume", "create", "damaged", "--size", "8M", "--save-size", "4M").assertOk();
        ServerProcess.snapbd(pristine, "snapshot", "create", "damaged", "s1").assertOk();
        ServerProcess.snapbd(pristine, "fsck").assertOk();
    }

    /** A fresh copy of the pristine data directory. */
    static Path copy(String name) {
        Path d = tmp.resolve(name);
        Tools.run("cp", "-a", "--sparse=always", pristine.toString(), d.toString()).assertOk();
        return d;
    }

    /** Flips byte 33 of the file (inside every header: an owner UUID or a counter, under a checksum). */
    static void flipByte33(Path file) throws IOException {
        byte[] b = Files.readAllBytes(file);
        b[33] ^= (byte) 0x5a;
        Files.write(file, b);
    }

    static void damage(Path data, String file) throws IOException {
        Path f = data.resolve("volumes/damaged").resolve(file);
        assertTrue(Files.isRegularFile(f), f + " exists");
        if (file.endsWith(".img")) {
            try (FileChannel ch = FileChannel.open(f, StandardOpenOption.WRITE)) {
                ch.truncate(ch.size() / 2);
            }
        } else {
            flipByte33(f);
        }
    }

    static int freePort() throws IOException {
        try (ServerSocket ss = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            return ss.getLocalPort();
        }
    }

    static String metrics(int port) throws IOException, InterruptedException {
        HttpResponse<String> r = HttpClient.newHttpClient().send(
                HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + port + "/metrics")).build(), HttpResponse.BodyHandlers.ofString());
        assertEquals(200, r.statusCode(), r.body());
        return r.body();
    }

    static JsonNode volume(JsonNode volumes, String name) {
        for (JsonNode v : volumes) {
            if (v.path("name").asText().equals(name)) {
                return v;
            }
        }
        throw new AssertionError("no volume " + name + " in " + volumes);
    }

    /**
     * Every file whose damage refuses the volume's open. A damaged {@code snap-SEQ.meta} (or a damaged record
     * inside the exception log) refuses only the snapshots that lose content, and production is served:
     * {@code SnapshotDamageIT} covers that.
     */
    @ParameterizedTest(name = "damaged {0}")
    @ValueSource(strings = {"volume.meta", "lun.state", "meta.bitmap", "intent.map", "snapshots.meta", "exceptions.log",
            "data.img", "save.img"})
    void damagedFileIsReportedByFsckAndSetAsideWhileTheOtherVolumeIsServed(String file) throws Exception {
        Path data = copy("d-" + file);
        damage(data, file);

        Tools.Result fsck = ServerProcess.snapbd(data, "fsck", "--quick");
        assertEquals(4, fsck.exit(), "fsck must find the damaged " + file + ": " + fsck);
        assertTrue(fsck.stdout().contains("problem: ") && fsck.stdout().contains("volumes/damaged/" + file), fsck.stdout());
        assertTrue(fsck.stdout().contains("healthy: clean"), fsck.stdout());
        JsonNode fsckJson = SnapshotSupport.JSON.readTree(ServerProcess.snapbd(data, "fsck", "--quick", "--json").stdout());
        assertTrue(fsckEntry(fsckJson, "healthy").path("ok").asBoolean(), fsckJson.toString());
        assertFalse(fsckEntry(fsckJson, "damaged").path("ok").asBoolean(), fsckJson.toString());

        int metricsPort = freePort();
        Path conf = tmp.resolve("conf-" + file);
        Files.writeString(conf, "metrics = 127.0.0.1:" + metricsPort + "\n");
        try (ServerProcess server = ServerProcess.start(data, "DamagedVolumeIT-" + file, "--warm-up", "off", "--config", conf.toString())) {
            // the healthy volume is served, to a real client
            Tools.Result info = Tools.run("nbdinfo", "--size", server.unixUri("healthy")).assertOk();
            assertEquals(String.valueOf(8 << 20), info.stdout().strip());
            Tools.run("nbdcopy", server.unixUri("healthy"), "null:").assertOk();
            // the damaged one is not, and a client is told why
            for (String export : List.of("damaged", "damaged@s1")) {
                // libnbd shows the server's error message in its debug output only
                Tools.Result refused = Tools.run(Tools.DEFAULT_TIMEOUT, Map.of("LIBNBD_DEBUG", "1"), List.of("nbdinfo", server.unixUri(export)));
                assertNotEquals(0, refused.exit());
                assertTrue(refused.stderr().contains("server error message: no export named '" + export + "': volume damaged is set aside: ")
                        && refused.stderr().contains("volumes/damaged/" + file), refused.stderr());
            }
            assertTrue(server.log().contains("volume damaged set aside"), server.log());
            assertTrue(server.log().contains("volumes/damaged/" + file), server.log());

            JsonNode status = json(server.cli("status", "--json"));
            assertEquals("running", status.path("server").asText());
            assertEquals(1, status.path("volumesSetAside").asInt(), status.toString());
            JsonNode d = volume(status.path("volumes"), "damaged");
            assertEquals("set-aside", d.path("state").asText(), d.toString());
            assertTrue(d.path("reason").asText().contains("volumes/damaged/" + file), d.toString());
            assertEquals("open", volume(status.path("volumes"), "healthy").path("state").asText(), status.toString());
            String statusText = server.cli("status").assertOk().stdout();
            assertTrue(statusText.contains("damaged: SET ASIDE (not exported): ") && statusText.contains("volumes/damaged/" + file), statusText);

            JsonNode list = json(server.cli("volume", "list", "--json"));
            assertEquals("set-aside", volume(list.path("volumes"), "damaged").path("state").asText(), list.toString());
            assertEquals("open", volume(list.path("volumes"), "healthy").path("state").asText(), list.toString());
            String listText = server.cli("volume", "list").assertOk().stdout();
            assertTrue(listText.lines().anyMatch(l -> l.startsWith("damaged") && l.contains("set-aside")
                    && l.contains("volumes/damaged/" + file)), listText);

            // operations on it say why instead of opening it again
            Tools.Result snap = server.cli("snapshot", "create", "damaged", "s2");
            assertNotEquals(0, snap.exit());
            assertTrue(snap.stderr().contains("set aside"), snap.toString());

            String m = metrics(metricsPort);
            assertTrue(m.contains("snapbd_volume_state{volume=\"damaged\",state=\"set_aside\"} 1"), m);
            assertTrue(m.contains("snapbd_volume_state{volume=\"damaged\",state=\"open\"} 0"), m);
            assertTrue(m.contains("snapbd_volume_state{volume=\"healthy\",state=\"open\"} 1"), m);
            assertTrue(m.contains("snapbd_volumes_set_aside 1"), m);
            assertTrue(m.lines().anyMatch(l -> l.startsWith("snapbd_volume_set_aside_info{volume=\"damaged\",reason=\"")
                    && l.contains(file)), m);
            assertEquals(0, server.stop(), server.log());
        }
        // the set-aside volume was not touched: fsck still sees the same damage
        assertEquals(4, ServerProcess.snapbd(data, "fsck", "--quick").exit());
    }

    static JsonNode fsckEntry(JsonNode fsck, String name) {
        for (JsonNode r : fsck) {
            if (r.path("volume").asText().equals(name)) {
                return r;
            }
        }
        throw new AssertionError("no volume " + name + " in " + fsck);
    }

    @Test
    void waysOutDeleteForceOrRestoreTheDirectoryFromACopy() throws Exception {
        Path data = copy("way-out");
        Path backup = tmp.resolve("backup-of-damaged");
        Tools.run("cp", "-a", "--sparse=always", data.resolve("volumes/damaged").toString(), backup.toString()).assertOk();
        damage(data, "lun.state");
        try (ServerProcess server = ServerProcess.start(data, "DamagedVolumeIT-way-out", "--warm-up", "off")) {
            // restore from a copy: stop, put the directory back, start
            assertEquals(0, server.stop());
            Tools.run("rm", "-rf", data.resolve("volumes/damaged").toString()).assertOk();
            Tools.run("cp", "-a", "--sparse=always", backup.toString(), data.resolve("volumes/damaged").toString()).assertOk();
            assertEquals(0, ServerProcess.snapbd(data, "fsck", "--quick").exit());
            server.restart();
            Tools.run("nbdinfo", server.unixUri("damaged")).assertOk();
            assertEquals("open", volume(json(server.cli("status", "--json")).path("volumes"), "damaged").path("state").asText());
            assertEquals(0, server.stop());

            // delete: refused without --force (its data would be gone for good), done with it
            damage(data, "lun.state");
            server.restart();
            Tools.Result refused = server.cli("volume", "delete", "damaged");
            assertNotEquals(0, refused.exit());
            assertTrue(refused.stderr().contains("set aside") && refused.stderr().contains("--force"), refused.toString());
            assertTrue(Files.exists(data.resolve("volumes/damaged/lun.state")));
            server.cli("volume", "delete", "damaged", "--force").assertOk();
            assertFalse(Files.exists(data.resolve("volumes/damaged")));
            JsonNode status = json(server.cli("status", "--json"));
            assertEquals(0, status.path("volumesSetAside").asInt(), status.toString());
            assertEquals(1, status.path("volumes").size(), status.toString());
            // the name is free again
            server.cli("volume", "create", "damaged", "--size", "8M", "--save-size", "4M").assertOk();
            Tools.run("nbdinfo", server.unixUri("damaged")).assertOk();
            assertEquals(0, server.stop());
        }
        assertEquals(0, ServerProcess.snapbd(data, "fsck", "--quick").exit());
    }
}
