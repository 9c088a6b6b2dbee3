package io.snapbd.server.mirror;

import io.snapbd.server.client.NbdUri;
import io.snapbd.server.it.Tools;
import org.junit.jupiter.api.Assertions;

import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * {@code nbdkit --foreground --exit-with-parent --unix SOCK -P PIDFILE ARGS...} started by a test; ready once
 * nbdkit has written its pid file (it does so after it listens). Missing nbdkit: skipped, or failed under CI=true.
 */
final class Nbdkit implements AutoCloseable {
    private final Process process;
    private final Path socket;
    private final Path log;

    private Nbdkit(Process process, Path socket, Path log) {
        this.process = process;
        this.socket = socket;
        this.log = log;
    }

    static Nbdkit start(Path dir, String name, String... args) throws IOException, InterruptedException {
        Tools.require("nbdkit");
        Path sock = dir.resolve(name + ".sock");
        Path pid = dir.resolve(name + ".pid");
        Path log = dir.resolve(name + ".log");
        Files.deleteIfExists(pid);
        Files.deleteIfExists(sock);       // a previous nbdkit on the same name (a restart) may have left it
        List<String> cmd = new ArrayList<>(List.of("nbdkit", "--foreground", "--exit-with-parent",
                "--unix", sock.toString(), "-P", pid.toString()));
        cmd.addAll(List.of(args));
        Process p = new ProcessBuilder(cmd).directory(dir.toFile())
                .redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null")))
                .redirectOutput(log.toFile()).redirectErrorStream(true).start();
        Nbdkit k = new Nbdkit(p, sock, log);
        // Bounded only against a broken nbdkit; the wait ends as soon as the pid file appears.
        for (int i = 0; i < 3000; i++) {
            if (Files.exists(pid) && Files.size(pid) > 0) {
                return k;
            }
            if (!p.isAlive()) {
                Assertions.fail("nbdkit exited during start-up: " + k.log());
            }
            Thread.sleep(20);
        }
        p.destroyForcibly();
        throw new AssertionError("nbdkit did not start: " + k.log());
    }

    NbdUri uri() {
        return NbdUri.unix(socket, "");
    }

    String log() {
        try {
            return Files.readString(log, StandardCharsets.UTF_8);
        } catch (IOException e) {
            return "(no log: " + e + ")";
        }
    }

    /** SIGKILL, without waiting. */
    void killNow() {
        process.destroyForcibly();
    }

    @Override
    public void close() throws InterruptedException {
        process.destroy();
        if (!process.waitFor(30, TimeUnit.SECONDS)) {
            process.destroyForcibly();
            process.waitFor();
        }
    }
}
