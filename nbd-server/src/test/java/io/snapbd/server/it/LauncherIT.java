package io.snapbd.server.it;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.io.File;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * bin/snapbd gives {@code serve} a bounded heap by default (docs/production.md, "Memory"): -Xms64m, -Xmx1g
 * and 4 GiB of direct memory, and SNAPBD_JAVA_OPTS overrides them. Read from the running JVM (jcmd VM.flags). With
 * SNAPBD_CDS_DIR it keeps a class data sharing archive there.
 */
@Timeout(value = 5, unit = TimeUnit.MINUTES)
class LauncherIT {

    @TempDir
    Path tmp;

    @Test
    void serveGetsTheDefaultHeapBounds() throws Exception {
        Map<String, Long> flags = serveFlags("defaults", null);
        assertEquals(64L << 20, flags.get("InitialHeapSize"), flags.toString());
        assertEquals(1L << 30, flags.get("MaxHeapSize"), flags.toString());
        assertEquals(4L << 30, flags.get("MaxDirectMemorySize"), flags.toString());
    }

    @Test
    void snapbdJavaOptsWin() throws Exception {
        Map<String, Long> flags = serveFlags("opts", "-Xmx512m -XX:MaxDirectMemorySize=256m");
        assertEquals(512L << 20, flags.get("MaxHeapSize"), flags.toString());
        assertEquals(256L << 20, flags.get("MaxDirectMemorySize"), flags.toString());
        assertEquals(64L << 20, flags.get("InitialHeapSize"), "the default the options leave alone: " + flags);
    }

    /**
     * With a directory for class data sharing (SNAPBD_CDS_DIR; CACHE_DIRECTORY under systemd), serve's first stop
     * writes the archive as NAME.new, and the next start checks it, renames it and maps it.
     */
    @Test
    void classDataSharingArchiveIsMadeAtStopAndMappedByTheNextStart() throws Exception {
        Path cds = Files.createDirectories(tmp.resolve("cds"));
        Path data = tmp.resolve("cds-data");
        ServerProcess.snapbd(data, "volume", "create", "v", "--size", "16M", "--save-size", "4M").assertOk();
        runServe(data, cds, pid -> assertTrue(cdsFiles(cds).isEmpty(), "no archive while the first run goes on"));
        assertTrue(cdsFiles(cds).size() == 1 && cdsFiles(cds).get(0).endsWith(".jsa.new"), "after the first stop: " + cdsFiles(cds));
        runServe(data, cds, pid -> {
            assertTrue(cdsFiles(cds).size() == 1 && cdsFiles(cds).get(0).endsWith(".jsa"), "checked and renamed: " + cdsFiles(cds));
            String archive = cds.resolve(cdsFiles(cds).get(0)).toString();
            assertTrue(Files.readString(Path.of("/proc", Long.toString(pid), "maps")).contains(archive),
                    "the server JVM maps " + archive);
        });
        assertEquals(1, cdsFiles(cds).size(), "the archive is kept: " + cdsFiles(cds));
    }

    /** An archive cut short (a crash or a power cut during the dump at exit) is deleted, never mapped. */
    @Test
    void aCutShortArchiveIsDeletedNotUsed() throws Exception {
        Path cds = Files.createDirectories(tmp.resolve("cds"));
        Path data = tmp.resolve("cut-data");
        ServerProcess.snapbd(data, "volume", "create", "v", "--size", "16M", "--save-size", "4M").assertOk();
        runServe(data, cds, pid -> { });
        Path made = cds.resolve(cdsFiles(cds).get(0));
        try (var ch = java.nio.channels.FileChannel.open(made, java.nio.file.StandardOpenOption.WRITE)) {
            ch.truncate(ch.size() / 2);
        }
        runServe(data, cds, pid -> {
            assertTrue(cdsFiles(cds).isEmpty(), "the cut-short archive is deleted: " + cdsFiles(cds));
            assertTrue(!Files.readString(Path.of("/proc", Long.toString(pid), "maps")).contains(cds.toString()),
                    "nothing of " + cds + " is mapped");
        });
        assertTrue(cdsFiles(cds).size() == 1 && cdsFiles(cds).get(0).endsWith(".jsa.new"), "written again: " + cdsFiles(cds));
    }

    private interface WhileServing {
        void check(long pid) throws Exception;
    }

    /** Runs {@code bin/snapbd serve} with SNAPBD_CDS_DIR={@code cds} until ready, runs {@code check}, stops it cleanly. */
    private void runServe(Path data, Path cds, WhileServing check) throws Exception {
        Path log = Files.createTempFile(tmp, "serve", ".log");
        ProcessBuilder pb = new ProcessBuilder(ServerProcess.home().resolve("bin/snapbd").toString(), "serve",
                "--data-dir", data.toString(), "--tcp", "none", "--unix", data.resolve("nbd.sock").toString())
                .redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null")))
                .redirectErrorStream(true).redirectOutput(log.toFile());
        pb.environment().remove("SNAPBD_JAVA_OPTS");
        pb.environment().remove("CACHE_DIRECTORY");
        pb.environment().put("SNAPBD_CDS_DIR", cds.toString());
        pb.environment().put("SNAPBD_JAR", ServerProcess.jar().toString());
        pb.environment().put("JAVA_HOME", System.getProperty("java.home"));
        Process p = pb.start();
        try {
            long deadline = System.nanoTime() + TimeUnit.MINUTES.toNanos(1);
            while (!Files.readString(log).contains("snapbd ready")) {
                if (!p.isAlive() || System.nanoTime() > deadline) {
                    fail("serve did not start: " + Files.readString(log));
                }
                Thread.sleep(50);
            }
            check.check(p.pid());
        } finally {
            p.destroy();
            assertTrue(p.waitFor(1, TimeUnit.MINUTES));
            assertEquals(0, p.exitValue(), "a clean stop: " + Files.readString(log));
        }
    }

    private static java.util.List<String> cdsFiles(Path dir) throws java.io.IOException {
        try (var s = Files.list(dir)) {
            return s.map(f -> f.getFileName().toString()).sorted().toList();
        }
    }

    /** Starts {@code bin/snapbd serve} with SNAPBD_JAVA_OPTS={@code opts} (unset if null) and reads its JVM flags. */
    private Map<String, Long> serveFlags(String name, String opts) throws Exception {
        Path data = tmp.resolve(name);
        ServerProcess.snapbd(data, "volume", "create", "v", "--size", "16M", "--save-size", "4M").assertOk();
        Path log = tmp.resolve(name + ".log");
        ProcessBuilder pb = new ProcessBuilder(ServerProcess.home().resolve("bin/snapbd").toString(), "serve",
                "--data-dir", data.toString(), "--tcp", "none", "--unix", tmp.resolve(name + ".sock").toString())
                .redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null")))
                .redirectErrorStream(true).redirectOutput(log.toFile());
        Map<String, String> env = pb.environment();
        env.remove("SNAPBD_JAVA_OPTS");
        env.remove("SNAPBD_CDS_DIR");
        env.remove("CACHE_DIRECTORY");
        if (opts != null) {
            env.put("SNAPBD_JAVA_OPTS", opts);
        }
        env.put("SNAPBD_JAR", ServerProcess.jar().toString());
        env.put("JAVA_HOME", System.getProperty("java.home"));
        Process p = pb.start();
        try {
            long deadline = System.nanoTime() + TimeUnit.MINUTES.toNanos(1);
            while (!Files.readString(log).contains("snapbd ready")) {
                if (!p.isAlive() || System.nanoTime() > deadline) {
                    fail("serve did not start: " + Files.readString(log));
                }
                Thread.sleep(50);
            }
            String jcmd = Path.of(System.getProperty("java.home"), "bin", "jcmd").toString();
            Tools.Result r = Tools.run(Duration.ofMinutes(1), jcmd, Long.toString(p.pid()), "VM.flags").assertOk();
            Map<String, Long> flags = new HashMap<>();
            for (String f : r.stdout().split("\\s+")) {
                String[] kv = f.replaceFirst("^-XX:", "").split("=", 2);
                if (kv.length == 2 && kv[1].matches("\\d+")) {
                    flags.put(kv[0], Long.parseLong(kv[1]));
                }
            }
            assertTrue(flags.containsKey("MaxHeapSize"), r.toString());
            return flags;
        } finally {
            p.destroy();
            assertTrue(p.waitFor(1, TimeUnit.MINUTES));
            assertEquals(0, p.exitValue(), "a clean stop: " + Files.readString(log));
        }
    }
}
