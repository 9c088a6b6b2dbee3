package io.snapbd.server.service;

import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.channels.FileChannel;
import java.nio.channels.FileLock;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * bin/snapbd's adoption decision at {@code serve} under systemd (docs/kernel-attach.md, "systemctl restart: the
 * successor adopted"): it makes the successor named in DATA_DIR/successor.pid the main process (systemd-notify READY=1
 * MAINPID=, sent as the launcher itself) instead of starting a JVM only when that process serves, is in the
 * launcher's control group and holds the data directory's lock. Real launcher, real /proc and /proc/locks; the JVM
 * and systemd-notify are stand-ins that record how they were called. The "successor" is this test's JVM, which holds
 * the lock.
 */
class LauncherAdoptionTest {

    @TempDir
    Path tmp;
    private Path data;
    private Path conf;
    private Path bin;

    @BeforeEach
    void fakes() throws IOException {
        data = Files.createDirectories(tmp.resolve("data"));
        conf = tmp.resolve("snapbd.conf");
        Files.writeString(conf, "# test\ndata-dir = " + data + "\n");
        bin = Files.createDirectories(tmp.resolve("jdk/bin"));
        script(bin.resolve("java"), "echo \"$*\" > " + tmp.resolve("java.args") + "\n");
        script(bin.resolve("systemd-notify"), "echo \"$PPID $*\" > " + tmp.resolve("notify.args") + "\n");
        Files.writeString(tmp.resolve("snapbd.jar"), "not a jar");
    }

    @Test
    void aServingSuccessorHoldingTheLockIsAdoptedWithoutAJvm() throws Exception {
        long me = ProcessHandle.current().pid();
        try (FileLock lock = lockDataDir()) {
            Files.writeString(data.resolve("successor.pid"), me + " serving\n");
            Launch l = launch(true);
            assertEquals(0, l.exit, l.stderr);
            assertFalse(Files.exists(tmp.resolve("java.args")), "no JVM started: " + l.stderr);
            String notify = Files.readString(tmp.resolve("notify.args")).strip();
            assertEquals(l.pid + " --ready MAINPID=" + me + " STATUS=adopted pid " + me + ", which took over at the restart", notify,
                    "sent by the launcher's own process (the main PID for NotifyAccess=main)");
            assertFalse(Files.exists(data.resolve("successor.pid")), "the file is deleted once the notification is read");
            assertTrue(l.stderr.contains("adopted pid " + me + " as the main process"), l.stderr);
        }
    }

    @Test
    void aSuccessorStillTakingOverIsWaitedFor() throws Exception {
        long me = ProcessHandle.current().pid();
        try (FileLock lock = lockDataDir()) {
            Files.writeString(data.resolve("successor.pid"), me + "\n");     // as the old server writes it
            Process p = start(true);
            Thread.sleep(300);
            Files.writeString(data.resolve("successor.pid.tmp"), me + " serving\n");
            Files.move(data.resolve("successor.pid.tmp"), data.resolve("successor.pid"), java.nio.file.StandardCopyOption.ATOMIC_MOVE);
            Launch l = finish(p);
            assertEquals(0, l.exit, l.stderr);
            assertFalse(Files.exists(tmp.resolve("java.args")), "no JVM started: " + l.stderr);
            assertTrue(Files.readString(tmp.resolve("notify.args")).contains("MAINPID=" + me));
        }
    }

    @Test
    void aSuccessorWithoutTheDataDirectoryLockIsNotAdopted() throws Exception {
        Files.writeString(data.resolve("successor.pid"), ProcessHandle.current().pid() + " serving\n");
        Launch l = launch(true);
        assertServerStarted(l);
        assertFalse(Files.exists(data.resolve("successor.pid")), "a file naming a process that cannot be adopted is removed");
    }

    @Test
    void aDeadSuccessorIsNotAdopted() throws Exception {
        Process gone = new ProcessBuilder("true").start();
        gone.waitFor();
        try (FileLock lock = lockDataDir()) {
            Files.writeString(data.resolve("successor.pid"), gone.pid() + " serving\n");
            Launch l = launch(true);
            assertServerStarted(l);
            assertFalse(Files.exists(data.resolve("successor.pid")));
        }
    }

    @Test
    void garbageInTheFileStartsTheServer() throws Exception {
        Files.writeString(data.resolve("successor.pid"), "../../etc serving\n");
        assertServerStarted(launch(true));
    }

    @Test
    void outsideSystemdNothingIsAdopted() throws Exception {
        long me = ProcessHandle.current().pid();
        try (FileLock lock = lockDataDir()) {
            Files.writeString(data.resolve("successor.pid"), me + " serving\n");
            assertServerStarted(launch(false));
            assertTrue(Files.exists(data.resolve("successor.pid")), "left alone without NOTIFY_SOCKET");
        }
    }

    private void assertServerStarted(Launch l) throws IOException {
        assertEquals(0, l.exit, l.stderr);
        assertTrue(Files.readString(tmp.resolve("java.args")).contains("-jar " + tmp.resolve("snapbd.jar") + " serve --config " + conf),
                "the server JVM started: " + l.stderr);
        assertFalse(Files.exists(tmp.resolve("notify.args")), "no notification sent");
    }

    private FileLock lockDataDir() throws IOException {
        FileChannel ch = FileChannel.open(data.resolve("snapbd.lock"), StandardOpenOption.CREATE, StandardOpenOption.WRITE);
        return ch.lock();
    }

    record Launch(long pid, int exit, String stderr) {
    }

    private Process start(boolean underSystemd) throws IOException {
        ProcessBuilder pb = new ProcessBuilder(Path.of(System.getProperty("user.dir")).getParent().resolve("bin/snapbd").toString(),
                "serve", "--config", conf.toString()).redirectError(tmp.resolve("stderr").toFile())
                .redirectOutput(ProcessBuilder.Redirect.DISCARD);
        Map<String, String> env = pb.environment();
        env.keySet().removeIf(k -> k.startsWith("SNAPBD_") || k.equals("CACHE_DIRECTORY") || k.equals("NOTIFY_SOCKET"));
        env.put("JAVA_HOME", bin.getParent().toString());
        env.put("SNAPBD_JAR", tmp.resolve("snapbd.jar").toString());
        env.put("PATH", bin + ":" + env.getOrDefault("PATH", "/usr/bin:/bin"));
        if (underSystemd) {
            env.put("NOTIFY_SOCKET", tmp.resolve("notify").toString());
        }
        return pb.start();
    }

    private Launch finish(Process p) throws Exception {
        int exit = p.waitFor();
        return new Launch(p.pid(), exit, Files.readString(tmp.resolve("stderr"), StandardCharsets.UTF_8));
    }

    private Launch launch(boolean underSystemd) throws Exception {
        return finish(start(underSystemd));
    }

    private static void script(Path p, String body) throws IOException {
        Files.writeString(p, "#!/bin/sh\n" + body);
        Files.setPosixFilePermissions(p, PosixFilePermissions.fromString("rwxr-xr-x"));
    }
}
