package io.snapbd.server.it;

import com.fasterxml.jackson.databind.JsonNode;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import static io.snapbd.server.it.SnapshotSupport.copyOut;
import static io.snapbd.server.it.SnapshotSupport.json;
import static io.snapbd.server.it.SnapshotSupport.nbdsh;
import static io.snapbd.server.it.SnapshotSupport.sha256;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The README's "Backup workflow with LUN state", run as written: its two shell blocks are taken from README.md
 * and run by bash in a directory laid out like the repository root ({@code bin/snapbd}, {@code snapbd-data/}
 * with the server's socket at {@code snapbd-data/nbd.sock}), with the real CLI and nbdcopy. Then a real client
 * writes to the backup volume (the answer flips to "changed"), and the volume is deleted and cloned again
 * under the same name, reaching the very counter that was saved (the saved token still answers "changed").
 */
@Timeout(value = 10, unit = TimeUnit.MINUTES)
@ExtendWith(ServerLiveness.class)
class ReadmeBackupWorkflowIT {

    static final String UNTOUCHED = "vol0-backup is untouched: restore from it";
    static final String CHANGED = "vol0-backup changed or is not the saved volume: restore from vol0-nightly.img";

    @TempDir
    Path root;
    ServerProcess server;

    @AfterEach
    void stop() {
        if (server != null) {
            server.close();
        }
    }

    /** The ```sh blocks of the README section {@code heading}, in order. */
    static List<String> shellBlocks(String heading) throws IOException {
        String readme = Files.readString(ServerProcess.home().resolve("README.md"), StandardCharsets.UTF_8);
        int start = readme.indexOf("\n" + heading + "\n");
        assertTrue(start >= 0, "README.md has no section '" + heading + "'");
        int end = readme.indexOf("\n## ", start + heading.length() + 2);
        String section = readme.substring(start, end < 0 ? readme.length() : end);
        List<String> blocks = new ArrayList<>();
        Matcher m = Pattern.compile("```sh\n(.*?)```", Pattern.DOTALL).matcher(section);
        while (m.find()) {
            blocks.add(m.group(1));
        }
        return blocks;
    }

    /** Runs a README block with bash in {@code root}, stopping at the first failing command. */
    Tools.Result bash(String block) {
        Map<String, String> env = Map.of(
                "SNAPBD_JAR", ServerProcess.jar().toString(),
                "JAVA_HOME", System.getProperty("java.home"));
        return Tools.run(Duration.ofMinutes(5), env, List.of("bash", "-e", "-o", "pipefail", "-c",
                "cd '" + root + "'\n" + block));
    }

    @Test
    void theReadmeWorkflowAsWrittenProvesTheBackupUntouchedAndNothingElse() throws IOException {
        Tools.require("nbdcopy", "nbdsh");
        List<String> blocks = shellBlocks("## Backup workflow with LUN state");
        assertEquals(2, blocks.size(), "the section has a 'take the backup' block and a 'later' block: " + blocks);
        String take = blocks.get(0);
        String later = blocks.get(1);
        assertTrue(take.contains("--track"), "the README clones with --track: " + take);

        // The repository root as the README assumes it: bin/snapbd and the server on snapbd-data.
        Files.createDirectories(root.resolve("bin"));
        Files.createSymbolicLink(root.resolve("bin/snapbd"), ServerProcess.home().resolve("bin/snapbd"));
        Path data = root.resolve("snapbd-data");
        ServerProcess.snapbd(data, "volume", "create", "vol0", "--size", "64M", "--save-size", "16M").assertOk();
        server = ServerProcess.start(data, data.resolve("nbd.sock"), "ReadmeBackupWorkflowIT");
        // Production data: 6 MiB at 0 and 1 MiB at 40 MiB, so the clone writes 3 chunks of at most 4 MiB.
        nbdsh(server.unixUri("vol0"), "import os\nh.pwrite(os.urandom(6 << 20), 0)\nh.pwrite(os.urandom(1 << 20), 40 << 20)");
        String production = sha256(copyOut(server.unixUri("vol0"), root.resolve("vol0-now.img")));

        // 1. Take the backup, as written.
        Tools.Result took = bash(take);
        took.assertOk();
        String saved = Files.readString(root.resolve("vol0-backup.token")).strip();
        assertTrue(saved.matches("[0-9a-f-]{36}:[0-9]+"), "the saved value is a UUID:COUNTER token: '" + saved + "'");
        assertEquals(production, sha256(root.resolve("vol0-nightly.img")), "the backup image is the snapshot's content");
        JsonNode backup = json(server.cli("lun-state", "get", "vol0-backup", "--json"));
        assertTrue(backup.path("enabled").asBoolean(), "--track left tracking on: " + backup);
        assertEquals(backup.path("identity").asText() + ":3", saved,
                "tracking was on before the copy: its 3 writes were counted before the saved point (and nothing after)");
        assertEquals(saved, backup.path("token").asText(), "reading it back (nbdcopy) did not count");

        // 2. Later: untouched.
        Tools.Result check = bash(later).assertOk();
        assertTrue(check.stdout().contains(UNTOUCHED), check.toString());

        // 3. A real client writes to the backup volume: the same block now answers "changed".
        nbdsh(server.unixUri("vol0-backup"), "h.pwrite(b'tamper', 4096)");
        check = bash(later).assertOk();
        assertTrue(check.stdout().contains(CHANGED), check.toString());
        assertFalse(check.stdout().contains(UNTOUCHED), check.toString());
        server.cli("lun-state", "check", "vol0-backup", "--expect", saved).assertExit(3);

        // 4. Delete the backup volume and clone it again under the same name: the new life reaches the very
        // counter that was saved (tracking from 0, the same 3 copy writes), and still the token answers "changed".
        server.cli("volume", "delete", "vol0-backup", "--force").assertOk();
        JsonNode again = json(server.cli("snapshot", "clone", "vol0", "nightly", "vol0-backup", "--track", "--wait", "--json"));
        String newToken = again.path("lunState").path("token").asText();
        assertEquals(saved.substring(saved.indexOf(':')), newToken.substring(newToken.indexOf(':')),
                "the same counter as the saved one (a bare counter would have matched): " + again);
        assertNotEquals(saved, newToken, "a new life of the name, a new token");
        check = bash(later).assertOk();
        assertTrue(check.stdout().contains(CHANGED), check.toString());
        Tools.Result direct = server.cli("lun-state", "check", "vol0-backup", "--expect", saved).assertExit(3);
        assertTrue(direct.stdout().contains("not the volume the token was saved from"), direct.toString());
        server.cli("lun-state", "check", "vol0-backup", "--expect", newToken).assertExit(0);
    }
}
