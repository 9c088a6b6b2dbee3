package io.snapbd.server.mirror;

import io.snapbd.server.client.NbdUri;
import io.snapbd.server.it.Tools;
import org.junit.jupiter.api.Assertions;
import org.junit.jupiter.api.Assumptions;

import java.io.File;
import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * An NBD server started by a test on a Unix socket in its temporary directory: nbdkit ({@link #nbdkit}) or
 * qemu-nbd ({@link #qemuNbd}). A missing tool skips the test, or fails it under CI=true.
 */
public final class LegPeer implements AutoCloseable {
    private final Process process;
    private final Path socket;
    private final Path log;

    private LegPeer(Process process, Path socket, Path log) {
        this.process = process;
        this.socket = socket;
        this.log = log;
    }

    /**
     * {@code nbdkit --foreground --exit-with-parent --unix DIR/NAME.sock -P DIR/NAME.pid ARGS...}, ready once nbdkit
     * has written its pid file (it does so after it listens).
     */
    public static LegPeer nbdkit(Path dir, String name, String... args) throws IOException, InterruptedException {
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
        LegPeer k = new LegPeer(p, sock, log);
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

    /** {@code qemu-nbd --socket DIR/NAME.sock --format=raw --persistent --shared=8 FILE}, ready once it accepts a connection. */
    static LegPeer qemuNbd(Path dir, String name, Path file) throws IOException, InterruptedException {
        if (!Files.isExecutable(Path.of("/usr/bin/qemu-nbd"))) {
            String msg = "missing tool qemu-nbd: apt-get install qemu-utils";
            if ("true".equalsIgnoreCase(System.getenv("CI"))) {
                Assertions.fail(msg);
            }
            Assumptions.assumeTrue(false, msg);
        }
        Path sock = dir.resolve(name + ".sock");
        Path log = dir.resolve(name + ".log");
        Files.deleteIfExists(sock);
        Process p = new ProcessBuilder("/usr/bin/qemu-nbd", "--socket=" + sock, "--format=raw", "--persistent",
                "--shared=8", file.toString()).directory(dir.toFile())
                .redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null")))
                .redirectOutput(log.toFile()).redirectErrorStream(true).start();
        LegPeer q = new LegPeer(p, sock, log);
        for (int i = 0; i < 3000; i++) {
            if (!p.isAlive()) {
                Assertions.fail("qemu-nbd exited during start-up: " + q.log());
            }
            if (Files.exists(sock)) {
                try (SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX)) {
                    ch.connect(UnixDomainSocketAddress.of(sock));
                    return q;
                } catch (IOException e) {
                    // not listening yet
                }
            }
            Thread.sleep(20);
        }
        p.destroyForcibly();
        throw new AssertionError("qemu-nbd did not start: " + q.log());
    }

    public NbdUri uri() {
        return NbdUri.unix(socket, "");
    }

    public String log() {
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

    /** SIGKILL, and waits until the process is gone (its connections are closed then). */
    public void kill9() throws InterruptedException {
        process.destroyForcibly();
        process.waitFor();
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
