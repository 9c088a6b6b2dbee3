package io.snapbd.server.admin;

import com.fasterxml.jackson.databind.node.ObjectNode;
import io.snapbd.engine.volume.Volume;
import io.snapbd.engine.volume.VolumeCatalog;
import io.snapbd.server.api.Json;
import io.snapbd.server.export.ExportRegistry;
import io.snapbd.server.service.FileSpaces;
import io.snapbd.server.snapshot.CloneJobs;
import io.snapbd.server.transport.NbdServer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.RandomAccessFile;
import java.nio.file.Path;
import java.time.Duration;
import java.util.regex.Pattern;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

/**
 * {@code volume.list} writes, byte for byte, what the hand-built JSON trees wrote before {@code VolumeStatus}: every
 * state (open, closed, set aside, damaged), offline and from the running server (export counters). Identities and
 * times are masked; everything else is literal.
 */
class VolumeListJsonTest {

    @TempDir
    Path dir;

    private static String masked(String json) {
        return json.replaceAll("\"uuid\":\"[0-9a-f-]{36}\"", "\"uuid\":\"U\"")
                .replaceAll("\"created\":\"[^\"]+\"", "\"created\":\"T\"");
    }

    private static void flipByte(Path file, long at) throws Exception {
        try (RandomAccessFile f = new RandomAccessFile(file.toFile(), "rw")) {
            f.seek(at);
            int b = f.read();
            f.seek(at);
            f.write(b ^ 0xff);
        }
    }

    private static String list(ControlPlane cp) throws Exception {
        return masked(Json.MAPPER.writeValueAsString(cp.handle(Json.MAPPER.createObjectNode().put("command", "volume.list"))));
    }

    @Test
    void everyStateOfflineAndOnline() throws Exception {
        try (VolumeCatalog c = VolumeCatalog.open(dir, FileSpaces.best())) {
            c.create("alpha", 1 << 20, 4096, 1 << 20, false).createSnapshot("s1");
            c.create("beta", 2 << 20, 512, 0, true);
            c.create("gamma", 1 << 20, 4096, 1 << 20, false);
            c.create("delta", 1 << 20, 4096, 1 << 20, false);
        }
        Path volumes = dir.resolve(VolumeCatalog.VOLUMES_DIR);
        flipByte(volumes.resolve("gamma").resolve(Volume.HEADER_FILE), 40);
        flipByte(volumes.resolve("delta").resolve(Volume.HEADER_FILE), 40);

        try (VolumeCatalog c = VolumeCatalog.open(dir, FileSpaces.best())) {
            c.open("alpha");
            assertThrows(Exception.class, () -> c.open("delta"));     // set aside: its open failed
            String offline = list(ControlPlane.offline(c));
            String alpha = "{\"name\":\"alpha\",\"state\":\"open\",\"uuid\":\"U\",\"size\":1048576,\"blockSize\":4096,"
                    + "\"saveSize\":1048576,\"sparse\":false,\"created\":\"T\",\"open\":true,\"blocksInUse\":0,\"bytesInUse\":0,"
                    + "\"recoveredFromUncleanStop\":false,\"snapshots\":1,\"copyOnWriteCopies\":0,"
                    + "\"saveVolume\":{\"chunksUsed\":0,\"chunks\":256,\"bytesUsed\":0,\"bytes\":1048576}";
            String beta = "{\"name\":\"beta\",\"state\":\"closed\",\"uuid\":\"U\",\"size\":2097152,\"blockSize\":512,"
                    + "\"saveSize\":0,\"sparse\":true,\"created\":\"T\",\"open\":false,\"cleanlyClosed\":true}";
            String delta = "{\"name\":\"delta\",\"state\":\"set-aside\",\"reason\":\"" + c.setAsideReason("delta").replace("\"", "\\\"")
                    + "\",\"open\":false}";
            String gammaPrefix = "{\"name\":\"gamma\",\"state\":\"damaged\",\"reason\":\"";
            String[] parts = offline.split(Pattern.quote(gammaPrefix), 2);
            assertEquals(2, parts.length, offline);
            assertEquals("{\"volumes\":[" + alpha + "}," + beta + "," + delta + ",", parts[0]);
            assertEquals("\",\"open\":false}]}", parts[1].substring(parts[1].indexOf('"')), "gamma: name, state, reason, open");

            ExportRegistry exports = new ExportRegistry();
            ControlPlane.exportVolume(exports, c.open("alpha"));
            exports.lookup("alpha").requests().set(7);
            exports.lookup("alpha").errors().set(2);
            try (NbdServer nbd = new NbdServer(exports, Duration.ofSeconds(5), 8)) {
                ControlPlane online = new ControlPlane(c, exports, nbd, CloneJobs.online(c, exports), null);
                String served = list(online);
                assertEquals("{\"volumes\":[" + alpha + ",\"export\":\"alpha\",\"connections\":0,\"requests\":7,\"errors\":2},"
                        + beta + "," + delta + ",", served.split(Pattern.quote(gammaPrefix), 2)[0]);
                ObjectNode created = (ObjectNode) online.handle(Json.MAPPER.createObjectNode().put("command", "volume.create")
                        .put("name", "eps").put("size", 1 << 20).put("saveSize", 0));
                assertEquals("{\"name\":\"eps\",\"state\":\"open\",\"uuid\":\"U\",\"size\":1048576,\"blockSize\":4096,"
                        + "\"saveSize\":0,\"sparse\":false,\"created\":\"T\",\"open\":true,\"blocksInUse\":0,\"bytesInUse\":0,"
                        + "\"recoveredFromUncleanStop\":false,\"snapshots\":0,\"copyOnWriteCopies\":0,"
                        + "\"saveVolume\":{\"chunksUsed\":0,\"chunks\":0,\"bytesUsed\":0,\"bytes\":0},"
                        + "\"export\":\"eps\",\"connections\":0,\"requests\":0,\"errors\":0}",
                        masked(Json.MAPPER.writeValueAsString(created)));
            }
        }
    }
}
