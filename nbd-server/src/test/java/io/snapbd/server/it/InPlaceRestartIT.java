package io.snapbd.server.it;

import com.fasterxml.jackson.databind.JsonNode;
import io.snapbd.server.api.Json;
import io.snapbd.server.client.NbdClient;
import io.snapbd.server.client.NbdUri;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.File;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * {@code snapbd restart} (twice in a row) against the real server jar (no kernel devices here; KernelRestartIT and
 * SystemdUmlIT cover those): the successor takes over the data, the listeners and the admin socket, the old
 * process exits 0; a successor that cannot start (a bad configuration file) leaves the old server serving.
 * The server processes are managed here, not by {@link ServerProcess}: after a handover the serving process is
 * one this test did not start.
 */
class InPlaceRestartIT {

    @TempDir
    Path tmp;

    private final List<ProcessHandle> servers = new ArrayList<>();
    private Path dataDir;
    private Path config;
    private Path log;

    @AfterEach
    void stopAll() throws Exception {
        for (ProcessHandle h : servers) {
            if (h.isAlive()) {
                h.destroy();
                h.onExit().get(60, TimeUnit.SECONDS);
            }
        }
    }

    private Process startServer(String... jvmOptions) throws IOException {
        dataDir = tmp.resolve("data");
        config = tmp.resolve("snapbd.conf");
        log = tmp.resolve("server.log");
        Files.writeString(config, "data-dir = " + dataDir + "\ntcp = none\nunix = " + tmp.resolve("nbd.sock") + "\nwarm-up = off\n");
        List<String> cmd = new java.util.ArrayList<>(List.of(ServerProcess.javaBin(), "-XX:TieredStopAtLevel=1"));
        cmd.addAll(List.of(jvmOptions));
        cmd.addAll(List.of("-jar", ServerProcess.jar().toString(), "serve", "--config", config.toString()));
        Process p = new ProcessBuilder(cmd).redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null")))
                .redirectOutput(ProcessBuilder.Redirect.appendTo(log.toFile()))
                .redirectError(ProcessBuilder.Redirect.appendTo(log.toFile())).start();
        servers.add(p.toHandle());
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(90);
        while (!log().contains("snapbd ready")) {
            if (!p.isAlive() || System.nanoTime() > deadline) {
                fail("server not ready: " + log());
            }
            sleep(50);
        }
        return p;
    }

    private String log() {
        try {
            return Files.readString(log, StandardCharsets.UTF_8);
        } catch (IOException e) {
            return "";
        }
    }

    private long servingPid() {
        Tools.Result r = ServerProcess.snapbd(dataDir, "status", "--json");
        assertEquals(0, r.exit(), r.toString());
        return json(r.stdout()).path("pid").asLong();
    }

    private static JsonNode json(String s) {
        try {
            return Json.MAPPER.readTree(s);
        } catch (IOException e) {
            throw new AssertionError("not JSON: " + s, e);
        }
    }

    private NbdClient client() throws IOException {
        return NbdClient.connect(NbdUri.unix(tmp.resolve("nbd.sock"), "vol0"));
    }

    private static byte[] random(int n, long seed) {
        byte[] b = new byte[n];
        new Random(seed).nextBytes(b);
        return b;
    }

    private void write(long offset, byte[] data) throws IOException {
        try (NbdClient c = client()) {
            c.write(offset, ByteBuffer.wrap(data), false);
            c.flush();
        }
    }

    private byte[] read(long offset, int n) throws IOException {
        try (NbdClient c = client()) {
            ByteBuffer b = ByteBuffer.allocate(n);
            c.read(offset, b);
            return b.array();
        }
    }

    private static void sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new AssertionError(e);
        }
    }

    @Test
    void restartHandsOverToASuccessorWhichRestartsInPlaceAgain() throws Exception {
        Process first = startServer();
        byte[] a = random(256 * 1024, 1);
        write(1 << 20, a);

        Tools.Result r = ServerProcess.snapbd(dataDir, "restart", "--json");
        assertEquals(0, r.exit(), r + "\n" + log());
        JsonNode answer = json(r.stdout());
        long second = answer.path("successorPid").asLong();
        assertEquals(first.pid(), answer.path("pid").asLong());
        assertNotEquals(first.pid(), second);
        servers.add(ProcessHandle.of(second).orElseThrow());
        assertTrue(first.waitFor(60, TimeUnit.SECONDS), "the old server did not exit after the handover");
        assertEquals(0, first.exitValue(), "the old server's exit status after the handover");
        assertEquals(second, servingPid());
        assertArrayEquals(a, read(1 << 20, a.length), "data written before the restart");
        assertTrue(log().contains("handed over to pid " + second), log());
        assertTrue(log().contains("takeover: serving"), "the successor times its takeover: " + log());
        assertFalse(Files.exists(dataDir.resolve("handover.sock")), "handover socket left behind");
        assertFalse(Files.exists(dataDir.resolve("successor.tmp")), "rehearsal directory left behind");

        byte[] b = random(128 * 1024, 2);
        write(4 << 20, b);
        ProcessHandle secondHandle = ProcessHandle.of(second).orElseThrow();
        Tools.Result again = ServerProcess.snapbd(dataDir, "restart");     // the successor restarts in place too
        assertEquals(0, again.exit(), again + "\n" + log());
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(120);
        while (secondHandle.isAlive()) {
            assertTrue(System.nanoTime() < deadline, "the successor did not hand over: " + log());
            sleep(100);
        }
        long third = -1;
        while (third < 0 || third == second) {
            assertTrue(System.nanoTime() < deadline, "no successor serves after the second restart: " + log());
            Tools.Result s = ServerProcess.snapbd(dataDir, "status", "--json");
            third = s.exit() == 0 ? json(s.stdout()).path("pid").asLong() : -1;
        }
        servers.add(ProcessHandle.of(third).orElseThrow());
        assertArrayEquals(a, read(1 << 20, a.length));
        assertArrayEquals(b, read(4 << 20, b.length), "data written between the two restarts");
    }

    /**
     * The first half of systemctl restart (ExecStop= in a restart job): {@code snapbd restart --prepare} returns once
     * the successor is ready, and the old server serves on until its SIGTERM, at which it hands over to the successor
     * instead of stopping for good. The successor then tells the unit's next ExecStart (bin/snapbd) through
     * DATA_DIR/successor.pid that it serves, and speaks to systemd once the launcher removed it (SystemdUmlIT runs the
     * real unit; here the file is removed by hand).
     */
    @Test
    void aPreparedSuccessorTakesOverAtTheStop() throws Exception {
        Process first = startServer();
        byte[] a = random(128 * 1024, 6);
        write(0, a);

        Tools.Result r = ServerProcess.snapbd(dataDir, "restart", "--prepare", "--json");
        assertEquals(0, r.exit(), r + "\n" + log());
        long second = json(r.stdout()).path("successorPid").asLong();
        ProcessHandle secondHandle = ProcessHandle.of(second).orElseThrow();
        servers.add(secondHandle);
        assertTrue(first.isAlive(), "the server stopped at the preparation: " + log());
        assertEquals(first.pid(), servingPid(), "the old server serves until its stop");
        byte[] b = random(64 * 1024, 7);
        write(1 << 20, b);                      // while prepared

        first.destroy();                        // SIGTERM, as systemd sends it after ExecStop=
        assertTrue(first.waitFor(60, TimeUnit.SECONDS), "the old server did not exit after the handover");
        assertEquals(0, first.exitValue(), "the old server's exit status after the handover");
        assertTrue(log().contains("handing over to the prepared successor (pid " + second + ")"), log());
        assertTrue(log().contains("handed over to pid " + second), log());
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(120);
        Path adoption = dataDir.resolve("successor.pid");
        while (!(Files.exists(adoption) && Files.readString(adoption).equals(second + " serving\n"))) {
            assertTrue(System.nanoTime() < deadline && secondHandle.isAlive(), "the successor does not say it serves: " + log());
            sleep(50);
        }
        assertEquals(second, servingPid());
        assertArrayEquals(a, read(0, a.length));
        assertArrayEquals(b, read(1 << 20, b.length), "data written while the successor was prepared");
        assertFalse(log().contains("adopted by the service manager"), "adopted before the launcher said so: " + log());

        Files.delete(adoption);                 // what bin/snapbd does once systemd read its MAINPID=
        while (!log().contains("adopted by the service manager as the main process")) {
            assertTrue(System.nanoTime() < deadline, "the successor did not see its adoption: " + log());
            sleep(50);
        }
    }

    /**
     * bin/snapbd runs a server with -XX:ArchiveClassesAtExit when no class data sharing archive exists for the jar; a
     * JVM writes it as it exits, about 1 s of CPU. A server that handed over must not spend that while its successor
     * takes over: it exits 0 without writing it (the successor, started with the same options, writes it at its stop).
     */
    @Test
    void aServerThatHandedOverExitsWithoutWritingItsClassArchive() throws Exception {
        Path archive = tmp.resolve("classes.jsa");
        Process first = startServer("-XX:ArchiveClassesAtExit=" + archive, "-Xlog:cds=off", "-Xlog:cds+dynamic=off");
        byte[] a = random(64 * 1024, 5);
        write(0, a);

        Tools.Result r = ServerProcess.snapbd(dataDir, "restart", "--json");
        assertEquals(0, r.exit(), r + "\n" + log());
        long second = json(r.stdout()).path("successorPid").asLong();
        servers.add(ProcessHandle.of(second).orElseThrow());
        assertTrue(first.waitFor(60, TimeUnit.SECONDS), "the old server did not exit after the handover");
        assertEquals(0, first.exitValue(), "the old server's exit status after the handover");
        assertFalse(Files.exists(archive), "the old server wrote its class data sharing archive at its exit: " + log());
        assertTrue(log().contains("exiting without writing the class data sharing archive"), log());
        assertEquals(second, servingPid());
        assertArrayEquals(a, read(0, a.length));
    }

    /**
     * HotSpot suspends threads with SIGUSR2 (JFR's method sampler does, every few milliseconds): a server that took
     * SIGUSR2 as its restart signal restarted itself under a profiler. Profiled, it keeps serving as itself.
     */
    @Test
    void aProfiledServerDoesNotRestartItself() throws Exception {
        Process first = startServer("-XX:StartFlightRecording=settings=profile,filename=" + tmp.resolve("profile.jfr"));
        byte[] a = random(256 * 1024, 4);
        for (int i = 0; i < 40; i++) {         // requests while the sampler suspends and resumes the threads
            write((long) i * a.length, a);
            assertArrayEquals(a, read((long) i * a.length, a.length));
        }
        sleep(2000);
        assertTrue(first.isAlive(), "the profiled server ended: " + log());
        assertEquals(first.pid(), servingPid(), "another process serves: " + log());
        assertFalse(log().contains("successor"), log());
    }

    @Test
    void successorThatCannotStartLeavesTheServerServing() throws Exception {
        Process first = startServer();
        byte[] a = random(64 * 1024, 3);
        write(0, a);
        Files.writeString(config, Files.readString(config) + "no-such-setting = 1\n");

        Tools.Result r = ServerProcess.snapbd(dataDir, "restart");
        assertEquals(1, r.exit(), r.toString());
        assertTrue(r.stderr().contains("keeps serving") && r.stderr().contains("exited before it was ready"), r.stderr());
        assertTrue(first.isAlive(), "the old server stopped: " + log());
        assertEquals(first.pid(), servingPid());
        assertArrayEquals(a, read(0, a.length));
        assertTrue(log().contains("no-such-setting"), "the successor's log says why: " + log());
        assertFalse(Files.exists(dataDir.resolve("handover.sock")));

        // fixed, the restart goes through
        Files.writeString(config, Files.readString(config).replace("no-such-setting = 1\n", ""));
        Tools.Result ok = ServerProcess.snapbd(dataDir, "restart");
        assertEquals(0, ok.exit(), ok + "\n" + log());
        assertTrue(first.waitFor(60, TimeUnit.SECONDS));
        long second = servingPid();
        servers.add(ProcessHandle.of(second).orElseThrow());
        assertNotEquals(first.pid(), second);
        assertArrayEquals(a, read(0, a.length));
    }
}
