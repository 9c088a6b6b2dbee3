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
}
