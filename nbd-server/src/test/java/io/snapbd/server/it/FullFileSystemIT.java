package io.snapbd.server.it;

import com.fasterxml.jackson.databind.JsonNode;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Assertions;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.io.OutputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;

import static io.snapbd.server.it.SnapshotSupport.json;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * A data directory on a full file system (issue 21 E), a 40 MiB tmpfs mounted by the test (root needed): volumes
 * are created until one no longer fits, the server runs while the rest fills up, and then every command must
 * fail clearly, naming the file, and leave nothing behind: {@code snapshot create} (no empty snap-N.meta),
 * SIGTERM (says which volumes it could not close cleanly, and why), a restart (sets the volumes aside with the
 * reason instead of dying with a bare "No space left on device"), {@code fsck} (no SIGBUS through the mapping of
 * a sparse file). Once space is freed, a restart serves every volume again.
 */
@Timeout(value = 10, unit = TimeUnit.MINUTES)
@ExtendWith(ServerLiveness.class)
class FullFileSystemIT {

    @TempDir
    static Path tmp;
    static Path mnt;

    @BeforeAll
    static void mountSmallTmpfs() throws IOException {
        Tools.require("mount", "umount", "nbdinfo", "nbdsh");
        mnt = SmallTmpfs.mount(tmp, "40m", "snapbd-full-fs-it");
    }

    @AfterAll
    static void unmount() {
        if (mnt != null) {
            SmallTmpfs.unmount(mnt);
        }
    }

    /** Writes zeros into {@code file} until the file system refuses: afterwards not one more block fits. */
    static void fillUp(Path file) {
        byte[] block = new byte[1 << 16];
        try (OutputStream out = Files.newOutputStream(file)) {
            while (true) {
                out.write(block);
            }
        } catch (IOException e) {
            assertTrue(String.valueOf(e.getMessage()).contains("No space left on device"), e.toString());
        }
        try (OutputStream out = Files.newOutputStream(file.resolveSibling(file.getFileName() + ".1"))) {
            while (true) {
                out.write(1);
                out.flush();
            }
        } catch (IOException e) {
            assertTrue(String.valueOf(e.getMessage()).contains("No space left on device"), e.toString());
        }
    }

    /** Files an atomic replace, a zeroing probe or a failed snapshot create could leave behind. */
    static List<Path> debris(Path data) throws IOException {
        try (Stream<Path> s = Files.walk(data)) {
            return s.filter(p -> {
                String n = p.getFileName().toString();
                return n.endsWith(".tmp") || n.startsWith(".zero-probe-") || n.startsWith("snap-");
            }).toList();
        }
    }

    @Test
    void everyCommandFailsClearlyNamingTheFileAndLeavesNothingBehind() throws Exception {
        Path data = mnt.resolve("data");
        // A sparse volume (its holes are what a mapping faults on), then preallocated ones until one does not fit.
        ServerProcess.snapbd(data, "volume", "create", "sparse", "--size", "64M", "--save-size", "4M", "--sparse").assertOk();
        List<String> volumes = new ArrayList<>(List.of("sparse"));
        for (int i = 1; ; i++) {
            Tools.Result r = ServerProcess.snapbd(data, "volume", "create", "v" + i, "--size", "8M", "--save-size", "4M");
            if (r.exit() != 0) {
                assertTrue(r.stderr().contains(data.resolve("volumes/v" + i).toString()) && r.stderr().contains("space"), r.toString());
                assertFalse(Files.exists(data.resolve("volumes/v" + i)), "a failed create removes what it made");
                break;
            }
            volumes.add("v" + i);
            assertTrue(i < 10, "40 MiB should not hold 10 volumes of 12 MiB");
        }
        assertTrue(volumes.size() >= 2, volumes.toString());

        try (ServerProcess server = ServerProcess.start(data, "FullFileSystemIT", "--warm-up", "off")) {
            for (String v : volumes) {
                Tools.run("nbdinfo", server.unixUri(v)).assertOk();
            }
            fillUp(mnt.resolve("filler"));

            // a WRITE into a hole of the sparse volume: the page cannot be allocated. That connection ends with an
            // error logged; the server and the other clients go on.
            Tools.Result w = Tools.run("nbdsh", "-u", server.unixUri("sparse"), "-c", "h.pwrite(b'x' * 65536, 1 << 20)");
            assertNotEquals(0, w.exit(), w.toString());
            assertTrue(server.isAlive(), server.log());
            assertTrue(server.log().contains("no space left on the file system for a page of a sparse volume"), server.log());
            Tools.run("nbdinfo", server.unixUri("v1")).assertOk();

            // snapshot create: a clear error naming the file, no empty snap-N.meta left behind
            Tools.Result snap = server.cli("snapshot", "create", "v1", "s1");
            assertNotEquals(0, snap.exit(), snap.toString());
            assertTrue(snap.stderr().contains(data.resolve("volumes/v1").toString()) && snap.stderr().contains("No space left on device"),
                    snap.toString());
            assertEquals(List.of(), debris(data));
            assertEquals(0, json(server.cli("snapshot", "list", "v1", "--json")).path("snapshots").size());

            // SIGTERM: no claim that volumes were closed cleanly; each one that was not is named, with the file
            assertEquals(0, server.stop(), server.log());
            String log = server.log();
            assertFalse(log.contains("volumes closed cleanly"), log);      // what it said, and the restart too
            assertTrue(log.contains(volumes.size() + " volume(s) not closed cleanly, recovered at their next open"), log);
            for (String v : volumes) {
                assertTrue(log.contains(v + " (" + data.resolve("volumes/" + v)), v + ": " + log);
            }
            assertFalse(log.contains("InternalError"), log);
            assertEquals(List.of(), debris(data));

            // fsck: reads the sparse data file without a mapping, so no SIGBUS; unclean volumes are a note
            Tools.Result fsck = ServerProcess.snapbd(data, "fsck");
            assertFalse(fsck.stderr().contains("InternalError") || fsck.stderr().contains("unsafe memory access"), fsck.toString());
            assertEquals(0, fsck.exit(), fsck.toString());
            assertTrue(fsck.stdout().contains("sparse: clean (0 blocks in use, 16384 unused blocks scanned)"), fsck.stdout());

            // restart on the full file system: it runs, every volume set aside with the file and the reason
            server.restart();
            log = server.log();
            JsonNode status = json(server.cli("status", "--json"));
            assertEquals(volumes.size(), status.path("volumesSetAside").asInt(), status.toString());
            for (JsonNode v : status.path("volumes")) {
                assertEquals("set-aside", v.path("state").asText(), v.toString());
                String reason = v.path("reason").asText();
                // the sparse volume's recovery scan of the region written above faults on its hole (SIGBUS), the
                // others cannot write their header
                assertTrue(reason.contains(data.resolve("volumes/" + v.path("name").asText()).toString())
                        && (reason.contains("No space left on device") || reason.contains("SIGBUS: no space left")), reason);
            }
            assertEquals(0, server.stop(), server.log());
            log = server.log();
            assertTrue(log.contains("snapbd stopped; volumes closed cleanly (0)"), log);
            assertEquals(List.of(), debris(data));

            // space freed: every volume is served again, recovered from the unclean stop, and closes cleanly
            Files.delete(mnt.resolve("filler"));
            Files.delete(mnt.resolve("filler.1"));
            server.restart();
            for (String v : volumes) {
                Tools.run("nbdinfo", server.unixUri(v)).assertOk();
                assertTrue(server.log().contains("volume " + v + " was not stopped cleanly"), server.log());
            }
            assertEquals(0, server.stop(), server.log());
            assertTrue(server.log().contains("snapbd stopped; volumes closed cleanly (" + volumes.size() + ")"), server.log());
        }
        Tools.Result fsck = ServerProcess.snapbd(data, "fsck").assertOk();
        assertFalse(fsck.stdout().contains("not cleanly closed"), fsck.stdout());
        assertEquals(List.of(), debris(data));
    }
}
