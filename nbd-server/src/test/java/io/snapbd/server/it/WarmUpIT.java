package io.snapbd.server.it;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * serve warms the copy-on-write path up on a scratch volume before it takes clients (warm-up = on, the default):
 * the scratch volume never shows, leaves nothing in the data directory, and counts in no export's statistics.
 */
@Timeout(value = 3, unit = TimeUnit.MINUTES)
@ExtendWith(ServerLiveness.class)
class WarmUpIT {

    static final ObjectMapper JSON = new ObjectMapper();

    /** Each test prepares the data directory or picks its options, then starts the server. */
    @RegisterExtension
    static final SnapbdServerExtension SNAPBD = SnapbdServerExtension.builder("WarmUpIT").volume("real", "32M", "8M")
            .startedByTest().serveDefaults().build();

    @Test
    void aStartWarmsUpOnAScratchVolumeThatLeavesNoTrace() throws Exception {
        Path data = SNAPBD.dataDir();
        Files.createDirectories(data.resolve("warm-up.tmp").resolve("junk"));     // as a killed warm-up leaves it
        try (ServerProcess s = SNAPBD.start()) {
            assertTrue(s.log().matches("(?s).*copy-on-write path warmed up: \\d+ rounds, \\d+ writes, \\d+ copies.*"), s.log());
            assertFalse(Files.exists(data.resolve("warm-up.tmp")), "the scratch volume is deleted");
            JsonNode list = JSON.readTree(s.cli("volume", "list", "--json").assertOk().stdout());
            assertEquals(1, list.path("volumes").size(), "only the real volume: " + list);
            String exports = Tools.run("nbdinfo", "--list", "--json", s.unixUri("real")).assertOk().stdout();
            assertFalse(exports.contains("warm-up"), exports);
            JsonNode stats = JSON.readTree(s.cli("stats", "real", "--json").assertOk().stdout());
            assertEquals(0, stats.path("copyOnWriteCopies").asLong(), "the warm-up's copies are its own: " + stats);
            assertEquals(0, stats.path("requests").asLong(), stats.toString());
        }
        ServerProcess.snapbd(data, "fsck").assertOk();     // every volume of the data directory
    }

    @Test
    void offSkipsIt() {
        Path data = SNAPBD.dataDir();
        try (ServerProcess s = SNAPBD.start("--warm-up=off")) {
            assertFalse(s.log().contains("warmed up"), s.log());
        }
        ServerProcess.snapbd(null, "serve", "--warm-up=maybe", "--data-dir", data.toString()).assertExit(2);
    }
}
