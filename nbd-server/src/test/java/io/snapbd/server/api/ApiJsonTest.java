package io.snapbd.server.api;

import com.fasterxml.jackson.databind.JsonNode;
import org.junit.jupiter.api.Test;

import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;

/** The records of the admin protocol write exactly the JSON the hand-built trees wrote before them, and read it back. */
class ApiJsonTest {

    @Test
    void cloneStatusKeepsItsFieldsAndOrder() throws Exception {
        CloneStatus copying = new CloneStatus("vol0@s1", "copy", CloneState.COPYING, 4096, -1, 0.0, 1.5, null, null);
        assertEquals("{\"source\":\"vol0@s1\",\"target\":\"copy\",\"state\":\"copying\",\"bytesDone\":4096,\"bytesTotal\":-1,"
                + "\"percent\":0.0,\"elapsedSeconds\":1.5}", Json.MAPPER.writeValueAsString(copying));

        CloneStatus done = new CloneStatus("vol0@s1", "copy", CloneState.DONE, 8192, 8192, 100.0, 2.0, null,
                new LunStatus(null, true, 3, 77, null, "1b4e28ba-2fa1-11d2-883f-0016d3cca427", null));
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
    void snapshotStatusKeepsTheFieldsAndOrderOfTheHandBuiltTree() throws Exception {
        SnapshotStatus.LunAtCreation lun = new SnapshotStatus.LunAtCreation(true, 7, 99);
        SnapshotStatus created = new SnapshotStatus("vol0", "s1", 3, "2026-12-06T18:00:00Z", SnapshotState.ACTIVE, null,
                0, 0, lun, null, null, null).created("vol0@s1", 42);
        String json = "{\"volume\":\"vol0\",\"name\":\"s1\",\"sequence\":3,\"created\":\"2026-12-06T18:00:00Z\","
                + "\"state\":\"active\",\"saveChunksUsed\":0,\"saveBytesUsed\":0,"
                + "\"lunStateAtCreation\":{\"enabled\":true,\"counter\":7,\"timestamp\":99},"
                + "\"export\":\"vol0@s1\",\"createMicros\":42}";
        assertEquals(json, Json.MAPPER.writeValueAsString(created));
        assertEquals(created, Json.MAPPER.readValue(json, SnapshotStatus.class));

        SnapshotStatus invalid = new SnapshotStatus("vol0", "s0", 2, "t", SnapshotState.INVALID, "save volume full",
                5, 20480, lun, null, null, null).asRestoreSource();
        SnapshotList list = new SnapshotList("vol0", List.of(invalid), null, new SaveSpace(5, 10, 20480, 40960));
        String listed = "{\"volume\":\"vol0\",\"snapshots\":[{\"volume\":\"vol0\",\"name\":\"s0\",\"sequence\":2,"
                + "\"created\":\"t\",\"state\":\"invalid\",\"reason\":\"save volume full\",\"saveChunksUsed\":5,"
                + "\"saveBytesUsed\":20480,\"lunStateAtCreation\":{\"enabled\":true,\"counter\":7,\"timestamp\":99},"
                + "\"restoring\":true}],"
                + "\"saveVolume\":{\"chunksUsed\":5,\"chunks\":10,\"bytesUsed\":20480,\"bytes\":40960}}";
        assertEquals(listed, Json.MAPPER.writeValueAsString(list));
        assertEquals(list, Json.MAPPER.readValue(listed, SnapshotList.class));
    }

    @Test
    void lunStatusOfAnExportKeepsTheFieldsAndOrderOfTheHandBuiltTree() throws Exception {
        String id = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";
        LunStatus volume = new LunStatus(null, false, 4, 55, null, id, null).forExport("vol0");
        assertEquals("{\"export\":\"vol0\",\"enabled\":false,\"counter\":4,\"timestamp\":55,\"identity\":\"" + id
                + "\",\"token\":null}", Json.MAPPER.writeValueAsString(volume));
        LunStatus snapshot = new LunStatus("vol0@s1", true, 4, 55, true, id, id + "@3");
        String json = "{\"export\":\"vol0@s1\",\"enabled\":true,\"counter\":4,\"timestamp\":55,\"readOnly\":true,"
                + "\"identity\":\"" + id + "\",\"token\":\"" + id + "@3\"}";
        assertEquals(json, Json.MAPPER.writeValueAsString(snapshot));
        assertEquals(snapshot, Json.MAPPER.readValue(json, LunStatus.class));
    }

    @Test
    void diffDeleteRestoreAndVolumeListKeepTheFieldsAndOrderOfTheHandBuiltTrees() throws Exception {
        SnapshotDiff diff = new SnapshotDiff("v", "a", "b", 4096, List.of(
                new SnapshotDiff.Extent(0, 4096, SnapshotDiff.State.CHANGED),
                new SnapshotDiff.Extent(8192, 4096, SnapshotDiff.State.UNUSED)), 4096, 4096, 7);
        String json = "{\"volume\":\"v\",\"older\":\"a\",\"younger\":\"b\",\"blockSize\":4096,\"extents\":["
                + "{\"offset\":0,\"length\":4096,\"state\":\"changed\"},{\"offset\":8192,\"length\":4096,\"state\":\"unused\"}],"
                + "\"changedBytes\":4096,\"unusedBytes\":4096,\"scanMicros\":7}";
        assertEquals(json, Json.MAPPER.writeValueAsString(diff));
        assertEquals(diff, Json.MAPPER.readValue(json, SnapshotDiff.class));

        assertEquals("{\"deleted\":\"v\"}", Json.MAPPER.writeValueAsString(new Deleted("v", null)));
        assertEquals("{\"deleted\":\"v@s\",\"saveVolume\":{\"chunksUsed\":0,\"chunks\":1,\"bytesUsed\":0,\"bytes\":4096}}",
                Json.MAPPER.writeValueAsString(new Deleted("v@s", new SaveSpace(0, 1, 0, 4096))));
        assertEquals("{\"volume\":\"v\",\"restoredFrom\":\"s\",\"blocksChanged\":3,\"millis\":5}",
                Json.MAPPER.writeValueAsString(new RestoreResult("v", "s", 3, 5)));
        assertEquals("{\"volumes\":[{\"name\":\"v\",\"state\":\"damaged\",\"reason\":\"r\",\"open\":false}]}",
                Json.MAPPER.writeValueAsString(new VolumeList(List.of(VolumeStatus.unreadable("v", VolumeState.DAMAGED, "r")))));
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
