package io.snapbd.server.api;

import com.fasterxml.jackson.databind.JsonNode;
import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;

/** The records of the admin protocol write exactly the JSON the hand-built trees wrote before them, and read it back. */
class ApiJsonTest {

    @Test
    void cloneStatusKeepsItsFieldsAndOrder() throws Exception {
        CloneStatus copying = new CloneStatus("vol0@s1", "copy", CloneState.COPYING, 4096, -1, 0.0, 1.5, null, null);
        assertEquals("{\"source\":\"vol0@s1\",\"target\":\"copy\",\"state\":\"copying\",\"bytesDone\":4096,\"bytesTotal\":-1,"
                + "\"percent\":0.0,\"elapsedSeconds\":1.5}", Json.MAPPER.writeValueAsString(copying));

        CloneStatus done = new CloneStatus("vol0@s1", "copy", CloneState.DONE, 8192, 8192, 100.0, 2.0, null,
                new LunStatus(true, 3, 77, "1b4e28ba-2fa1-11d2-883f-0016d3cca427", null));
        String json = "{\"source\":\"vol0@s1\",\"target\":\"copy\",\"state\":\"done\",\"bytesDone\":8192,\"bytesTotal\":8192,"
                + "\"percent\":100.0,\"elapsedSeconds\":2.0,\"lunState\":{\"enabled\":true,\"counter\":3,\"timestamp\":77,"
                + "\"identity\":\"1b4e28ba-2fa1-11d2-883f-0016d3cca427\",\"token\":null}}";
        assertEquals(json, Json.MAPPER.writeValueAsString(done));
        assertEquals(done, Json.MAPPER.readValue(json, CloneStatus.class));

        CloneStatus failed = new CloneStatus("vol0@s1", "copy", CloneState.FAILED, 0, 8192, 0.0, 0.5, "disk full", null);
        JsonNode tree = Json.MAPPER.valueToTree(failed);
        assertEquals("failed", tree.path("state").asText());
        assertEquals("disk full", tree.path("error").asText());
        assertEquals(failed, Json.MAPPER.convertValue(tree, CloneStatus.class));
    }

    @Test
    void saveSpaceKeepsItsFieldsAndOrder() throws Exception {
        String json = "{\"chunksUsed\":2,\"chunks\":10,\"bytesUsed\":8192,\"bytes\":40960}";
        assertEquals(json, Json.MAPPER.writeValueAsString(new SaveSpace(2, 10, 8192, 40960)));
        assertEquals(new SaveSpace(2, 10, 8192, 40960), Json.MAPPER.readValue(json, SaveSpace.class));
    }

    @Test
    void restoreStatusKeepsItsFieldsAndOrder() throws Exception {
        String running = "{\"snapshot\":\"s1\",\"state\":\"in progress\",\"phase\":\"copying\",\"blocksChanged\":12,"
                + "\"started\":\"2026-12-06T18:00:00Z\"}";
        RestoreStatus r = new RestoreStatus("s1", "in progress", "copying", 12, "2026-12-06T18:00:00Z", null);
        assertEquals(running, Json.MAPPER.writeValueAsString(r));
        assertEquals(r, Json.MAPPER.readValue(running, RestoreStatus.class));
        RestoreStatus failed = new RestoreStatus("s1", "failed", "discarding", 0, "2026-12-06T18:00:00Z", "disk gone");
        assertEquals("{\"snapshot\":\"s1\",\"state\":\"failed\",\"phase\":\"discarding\",\"blocksChanged\":0,"
                + "\"started\":\"2026-12-06T18:00:00Z\",\"error\":\"disk gone\"}", Json.MAPPER.writeValueAsString(failed));
    }

    @Test
    void volumeStatusLeavesOutWhatTheStateDoesNotHave() throws Exception {
        String damaged = "{\"name\":\"v\",\"state\":\"damaged\",\"reason\":\"volume.meta: bad checksum\",\"open\":false}";
        VolumeStatus d = VolumeStatus.unreadable("v", VolumeState.DAMAGED, "volume.meta: bad checksum");
        assertEquals(damaged, Json.MAPPER.writeValueAsString(d));
        assertEquals(d, Json.MAPPER.readValue(damaged, VolumeStatus.class));
        VolumeStatus open = new VolumeStatus("v", VolumeState.OPEN, null, "u", 8192L, 4096, 4096L, false, "t", true,
                1L, 4096L, true, 2, 3L, new SaveSpace(1, 1, 4096, 4096),
                new RestoreStatus("s", "failed", "copying", 1, "t0", "e"), null, null, null, null, null).served(1, 5, 0);
        String json = "{\"name\":\"v\",\"state\":\"open\",\"uuid\":\"u\",\"size\":8192,\"blockSize\":4096,\"saveSize\":4096,"
                + "\"sparse\":false,\"created\":\"t\",\"open\":true,\"blocksInUse\":1,\"bytesInUse\":4096,"
                + "\"recoveredFromUncleanStop\":true,\"snapshots\":2,\"copyOnWriteCopies\":3,"
                + "\"saveVolume\":{\"chunksUsed\":1,\"chunks\":1,\"bytesUsed\":4096,\"bytes\":4096},"
                + "\"restore\":{\"snapshot\":\"s\",\"state\":\"failed\",\"phase\":\"copying\",\"blocksChanged\":1,"
                + "\"started\":\"t0\",\"error\":\"e\"},\"export\":\"v\",\"connections\":1,\"requests\":5,\"errors\":0}";
        assertEquals(json, Json.MAPPER.writeValueAsString(open));
        assertEquals(open, Json.MAPPER.readValue(json, VolumeStatus.class));
    }

    @Test
    void attachmentStatusWritesANullTimeoutAndTheStateLabel() throws Exception {
        AttachmentStatus a = new AttachmentStatus("/dev/nbd0", "vol0", false, "2026-12-06T18:00:00Z", AttachmentState.ATTACHED,
                1048576, 4096, null, 0x1ed, "config", "netlink");
        String json = "{\"device\":\"/dev/nbd0\",\"export\":\"vol0\",\"readOnly\":false,\"since\":\"2026-12-06T18:00:00Z\","
                + "\"state\":\"attached\",\"size\":1048576,\"blockSize\":4096,\"timeoutSeconds\":null,\"transmissionFlags\":493,"
                + "\"origin\":\"config\",\"kernelInterface\":\"netlink\"}";
        assertEquals(json, Json.MAPPER.writeValueAsString(a));
        assertEquals(a, Json.MAPPER.readValue(json, AttachmentStatus.class));
        assertEquals("{\"device\":\"/dev/nbd0\",\"export\":\"vol0\",\"detached\":true,\"flushed\":false,\"millis\":12}",
                Json.MAPPER.writeValueAsString(new DetachResult("/dev/nbd0", "vol0", true, false, 12)));
    }
}
