package io.snapbd.server.client;

import org.junit.jupiter.api.Assertions;
import org.junit.jupiter.api.Assumptions;

import java.io.File;
import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;

/**
 * An NBD server process started by a test (nbdkit, qemu-nbd, or snapbd itself) listening on a Unix socket in
 * the test's temporary directory (or on a TCP port of 127.0.0.1). Its output goes to a log file that failures quote.
 * <p>
 * A missing tool skips the test on a developer's machine and fails it under {@code CI=true}, with the package
 * to install: CI must never go green by skipping the real-server tests.
 */
final class PeerServer implements AutoCloseable {

    /** Safety bound on start-up; the wait ends as soon as the server answers. */
    private static final Duration START_TIMEOUT = Duration.ofSeconds(60);

    private final String name;
    private final Process process;
    /** Where the server listens; the export name is chosen per connection. */
    private final NbdUri address;
    private final Path log;

    private PeerServer(String name, Process process, NbdUri address, Path log) {
        this.name = name;
        this.process = process;
        this.address = address;
        this.log = log;
    }

    /** {@code nbdkit --foreground --exit-with-parent --unix SOCK ARGS...}, e.g. {@code memory 64M}. */
    static PeerServer nbdkit(Path dir, String... args) {
        String nbdkit = requireTool("nbdkit", "nbdkit");
        Path sock = dir.resolve("nbdkit.sock");
        List<String> cmd = new ArrayList<>(List.of(nbdkit, "--foreground", "--exit-with-parent", "--unix", sock.toString()));
        cmd.addAll(List.of(args));
        PeerServer s = start("nbdkit", cmd, NbdUri.unix(sock, ""), dir);
        s.awaitGreeting();
        return s;
    }

    /** nbdkit on a TCP port of 127.0.0.1 instead of a Unix socket. */
    static PeerServer nbdkitTcp(Path dir, String... args) throws IOException {
        String nbdkit = requireTool("nbdkit", "nbdkit");
        int port;
        try (ServerSocket probe = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            port = probe.getLocalPort();
        }
        List<String> cmd = new ArrayList<>(List.of(nbdkit, "--foreground", "--exit-with-parent",
                "--ipaddr", "127.0.0.1", "--port", Integer.toString(port)));
        cmd.addAll(List.of(args));
        PeerServer s = start("nbdkit", cmd, NbdUri.tcp("127.0.0.1", port, ""), dir);
        s.awaitGreeting();
        return s;
    }

    /** {@code qemu-nbd} serving the raw {@code file}, with extra options such as {@code -x NAME}. */
    static PeerServer qemuNbd(Path dir, Path file, String... options) {
        String qemuNbd = requireTool("qemu-nbd", "qemu-utils");
        Path sock = dir.resolve("qemu-nbd.sock");
        // --shared: qemu-nbd serves one client at a time unless told otherwise.
        List<String> cmd = new ArrayList<>(List.of(qemuNbd, "--socket=" + sock, "--format=raw", "--persistent", "--shared=8"));
        cmd.addAll(List.of(options));
        cmd.add(file.toString());
        PeerServer s = start("qemu-nbd", cmd, NbdUri.unix(sock, ""), dir);
        s.awaitGreeting();
        return s;
    }

    /**
     * A stopped snapbd data directory holding one volume, made with {@code snapbd volume create} (offline, so
     * that serve finds a volume and does not create its 1 GiB default one). Tests copy it rather than pay a
     * JVM start for a fresh one each.
     */
    static Path snapbdDataDir(Path dir, String volume, String size) {
        Path data = dir.resolve("data");
        List<String> cmd = new ArrayList<>(snapbdCommand());
        cmd.addAll(List.of("volume", "create", volume, "--size", size, "--save-size", "16M", "--data-dir", data.toString()));
        runToCompletion(dir, cmd);
        return data;
    }

    /** {@code snapbd serve --tcp none --unix DIR/nbd.sock} on a copy of {@code template}, once it logs that it is ready. */
    static PeerServer snapbd(Path dir, Path template) throws IOException {
        Path data = dir.resolve("data");
        try (Stream<Path> files = Files.walk(template)) {
            for (Path from : (Iterable<Path>) files::iterator) {
                Files.copy(from, data.resolve(template.relativize(from).toString()));
            }
        }
        Path sock = dir.resolve("nbd.sock");
        List<String> cmd = new ArrayList<>(snapbdCommand());
        cmd.addAll(List.of("serve", "--data-dir", data.toString(), "--tcp", "none", "--unix", sock.toString()));
        PeerServer s = start("snapbd", cmd, NbdUri.unix(sock, ""), dir);
        s.awaitLogLine("snapbd ready");
        return s;
    }

    private static List<String> snapbdCommand() {
        Path jar = snapbdJar();
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        // C1 only and the serial collector: the server starts in half the time on small CI machines.
        return List.of(java, "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-jar", jar.toString());
    }

    /**
     * Where {@code tool} is installed (Debian's directories first, then PATH); skips the test on a developer's
     * machine or fails it under CI=true when it is not.
     */
    static String requireTool(String tool, String debianPackage) {
        for (String dir : ("/usr/bin:/usr/sbin:/bin:/sbin:" + System.getenv("PATH")).split(File.pathSeparator)) {
            if (!dir.isEmpty() && Files.isExecutable(Path.of(dir, tool))) {
                return Path.of(dir, tool).toString();
            }
        }
        missing("missing tool " + tool + ": apt-get install " + debianPackage);
        throw new AssertionError("unreachable");
    }

    private static void missing(String message) {
        if ("true".equalsIgnoreCase(System.getenv("CI"))) {
            Assertions.fail(message);
        }
        Assumptions.assumeTrue(false, message);
    }

    private static Path snapbdJar() {
        String base = System.getProperty("basedir", ".");
        Path jar = Path.of(base, "target", "snapbd.jar").toAbsolutePath();
        if (!Files.isRegularFile(jar)) {
            missing("missing " + jar + ": run 'mvn -B -q -DskipTests package' first");
        }
        return jar;
    }

    private static PeerServer start(String name, List<String> cmd, NbdUri address, Path dir) {
        Path log = dir.resolve(name + ".log");
        try {
            Files.writeString(log, "# " + String.join(" ", cmd) + "\n");
            Process p = new ProcessBuilder(cmd)
                    .directory(dir.toFile())
                    .redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null")))
                    .redirectOutput(ProcessBuilder.Redirect.appendTo(log.toFile()))
                    .redirectErrorStream(true)
                    .start();
            return new PeerServer(name, p, address, log);
        } catch (IOException e) {
            throw new IllegalStateException("cannot start " + cmd + ": " + e, e);
        }
    }

    private static void runToCompletion(Path dir, List<String> cmd) {
        PeerServer p = start("setup", cmd, null, dir);
        try {
            if (!p.process.waitFor(START_TIMEOUT.toMillis(), TimeUnit.MILLISECONDS) || p.process.exitValue() != 0) {
                p.process.destroyForcibly();
                Assertions.fail("setup command failed: " + p.log());
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException(e);
        }
    }

    /** Polls until a connection on the socket gets the NBD greeting (independent of the client under test). */
    private void awaitGreeting() {
        long deadline = System.nanoTime() + START_TIMEOUT.toNanos();
        while (System.nanoTime() < deadline) {
            if (!process.isAlive()) {
                Assertions.fail(name + " exited during start-up: " + log());
            }
            try (SocketChannel ch = open()) {
                ByteBuffer b = ByteBuffer.allocate(8);
                while (b.hasRemaining() && ch.read(b) >= 0) {
                    // the first bytes of the greeting
                }
                if (!b.hasRemaining() && new String(b.array(), StandardCharsets.US_ASCII).equals("NBDMAGIC")) {
                    return;
                }
            } catch (IOException e) {
                // not listening yet
            }
            pause();
        }
        process.destroyForcibly();
        Assertions.fail(name + " did not start: " + log());
    }

    private void awaitLogLine(String text) {
        long deadline = System.nanoTime() + START_TIMEOUT.toNanos();
        while (System.nanoTime() < deadline) {
            if (log().contains(text)) {
                return;
            }
            if (!process.isAlive()) {
                Assertions.fail(name + " exited during start-up: " + log());
            }
            pause();
        }
        process.destroyForcibly();
        Assertions.fail(name + " did not start: " + log());
    }

    private static void pause() {
        try {
            Thread.sleep(20);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException(e);
        }
    }

    private SocketChannel open() throws IOException {
        if (address.transport() == NbdUri.Transport.UNIX) {
            SocketChannel ch = SocketChannel.open(StandardProtocolFamily.UNIX);
            ch.connect(UnixDomainSocketAddress.of(address.socket()));
            return ch;
        }
        return SocketChannel.open(new InetSocketAddress(address.host(), address.port()));
    }

    NbdUri uri(String export) {
        return address.withExport(export);
    }

    NbdUri uri() {
        return uri("");
    }

    String log() {
        try {
            return Files.readString(log, StandardCharsets.UTF_8);
        } catch (IOException e) {
            return "(log unreadable: " + e + ")";
        }
    }

    /** SIGKILL, waiting until the process is gone. */
    void kill() {
        process.destroyForcibly();
        try {
            process.waitFor();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    @Override
    public void close() {
        process.destroy();
        try {
            if (!process.waitFor(30, TimeUnit.SECONDS)) {
                process.destroyForcibly();
                process.waitFor();
            }
        } catch (InterruptedException e) {
            process.destroyForcibly();
            Thread.currentThread().interrupt();
        }
    }
}
