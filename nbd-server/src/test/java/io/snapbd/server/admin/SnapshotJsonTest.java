package io.snapbd.server.admin;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.snapbd.engine.volume.VolumeCatalog;
import io.snapbd.server.api.Json;
import io.snapbd.server.service.FileSpaces;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * The snapshot and LUN state answers of the control plane, byte for byte as the hand-built JSON trees wrote them
 * before the records (scripts read these field names): snapshot.create, .list, .diff, .restore, .delete, lun.get of
 * a volume and of a snapshot export, volume.delete. Identities, times and durations are masked.
 */
class SnapshotJsonTest {

    @TempDir
    Path dir;

    private static String masked(JsonNode answer) throws Exception {
        return Json.MAPPER.writeValueAsString(answer)
                .replaceAll("[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "U")
                .replaceAll("\"created\":\"[^\"]+\"", "\"created\":\"T\"")
                .replaceAll("\"(createMicros|scanMicros|millis|timestamp)\":[0-9]+", "\"$1\":0");
    }

    private static String call(ControlPlane cp, String command, String... kv) throws Exception {
        ObjectNode r = Json.MAPPER.createObjectNode().put("command", command);
        for (int i = 0; i < kv.length; i += 2) {
            r.put(kv[i], kv[i + 1]);
        }
        return masked(cp.handle(r));
    }

    @Test
    void snapshotAndLunStateAnswersKeepTheirFieldsAndOrder() throws Exception {
        try (VolumeCatalog c = VolumeCatalog.open(dir, FileSpaces.best(), true)) {
            c.create("v", 1 << 20, 4096, 1 << 20, false);
            ControlPlane cp = ControlPlane.offline(c);
            String lunAt = "\"lunStateAtCreation\":{\"enabled\":false,\"counter\":0,\"timestamp\":0}";
            assertEquals("{\"volume\":\"v\",\"name\":\"s1\",\"sequence\":1,\"created\":\"T\",\"state\":\"active\","
                    + "\"saveChunksUsed\":0,\"saveBytesUsed\":0," + lunAt + ",\"export\":\"v@s1\",\"createMicros\":0}",
                    call(cp, "snapshot.create", "volume", "v", "name", "s1"));
            call(cp, "snapshot.create", "volume", "v", "name", "s2");
            String save = "\"saveVolume\":{\"chunksUsed\":0,\"chunks\":256,\"bytesUsed\":0,\"bytes\":1048576}";
            assertEquals("{\"volume\":\"v\",\"snapshots\":["
                    + "{\"volume\":\"v\",\"name\":\"s1\",\"sequence\":1,\"created\":\"T\",\"state\":\"active\","
                    + "\"saveChunksUsed\":0,\"saveBytesUsed\":0," + lunAt + "},"
                    + "{\"volume\":\"v\",\"name\":\"s2\",\"sequence\":2,\"created\":\"T\",\"state\":\"active\","
                    + "\"saveChunksUsed\":0,\"saveBytesUsed\":0," + lunAt + "}]," + save + "}",
                    call(cp, "snapshot.list", "volume", "v"));
            assertEquals("{\"volume\":\"v\",\"older\":\"s1\",\"younger\":\"s2\",\"blockSize\":4096,"
                    + "\"extents\":[{\"offset\":0,\"length\":1048576,\"state\":\"unused\"}],"
                    + "\"changedBytes\":0,\"unusedBytes\":1048576,\"scanMicros\":0}",
                    call(cp, "snapshot.diff", "volume", "v", "older", "s1", "younger", "s2"));

            call(cp, "lun.enable", "export", "v");
            assertEquals("{\"export\":\"v\",\"enabled\":true,\"counter\":0,\"timestamp\":0,\"identity\":\"U\",\"token\":\"U:0\"}",
                    call(cp, "lun.get", "export", "v"));
            assertEquals("{\"export\":\"v\",\"enabled\":false,\"counter\":1,\"timestamp\":0,\"identity\":\"U\",\"token\":null}",
                    call(cp, "lun.disable", "export", "v"));
            assertEquals("{\"export\":\"v@s1\",\"enabled\":false,\"counter\":0,\"timestamp\":0,\"readOnly\":true,"
                    + "\"identity\":\"U\",\"token\":\"U@1\"}", call(cp, "lun.get", "export", "v@s1"));

            assertEquals("{\"volume\":\"v\",\"restoredFrom\":\"s2\",\"blocksChanged\":0,\"millis\":0}",
                    call(cp, "snapshot.restore", "volume", "v", "name", "s2"));
            assertEquals("{\"deleted\":\"v@s1\"," + save + "}", call(cp, "snapshot.delete", "volume", "v", "name", "s1"));
            assertEquals("{\"deleted\":\"v\"}", call(cp, "volume.delete", "name", "v"));
        }
    }
}
