package io.snapbd.server.systemd;

import io.snapbd.server.it.ServerProcess;
import io.snapbd.server.it.Tools;
import jnr.unixsocket.UnixDatagramChannel;
import jnr.unixsocket.UnixSocketAddress;
import jnr.unixsocket.UnixSocketOptions;
import org.junit.jupiter.api.Assertions;
import org.junit.jupiter.api.Assumptions;

import java.io.File;
import java.io.IOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.function.Predicate;

/** What the systemd integration tests share: required tools, a fake service manager, the server process. */
final class Support {

    private Support() {
    }

    static boolean ci() {
        return "true".equalsIgnoreCase(System.getenv("CI"));
    }

    /** Skips on a developer's machine, fails under CI=true: CI must never go green by skipping these. */
    static void require(boolean present, String what) {
        if (present) {
            return;
        }
        if (ci()) {
            Assertions.fail("missing: " + what);
        }
        Assumptions.assumeTrue(false, "missing: " + what);
    }

    static Path tool(String name) {
        for (String dir : List.of("/usr/bin", "/bin", "/usr/sbin", "/sbin", "/usr/lib/systemd", "/lib/systemd")) {
            Path p = Path.of(dir, name);
            if (Files.isExecutable(p)) {
                return p;
            }
        }
        return null;
    }

    static void requireTool(String name, String debianPackage) {
        require(tool(name) != null, name + " (apt-get install " + debianPackage + ")");
    }

    static int freePort() {
        try (ServerSocket s = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            return s.getLocalPort();
        } catch (IOException e) {
            throw new IllegalStateException(e);
        }
    }

    static String java() {
        return Path.of(System.getProperty("java.home"), "bin", "java").toString();
    }

    /** GET http://127.0.0.1:PORT/PATH: status and body. */
    static HttpResponse<String> get(int port, String path) throws IOException, InterruptedException {
        HttpClient c = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(10)).build();
        return c.send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + port + path)).timeout(Duration.ofSeconds(30)).build(),
                HttpResponse.BodyHandlers.ofString());
    }

    // ---- a fake service manager: the datagram socket systemd listens on for sd_notify ----------------------

    /** Receives sd_notify datagrams on a path or an abstract name, like systemd's notification socket. */
    static final class NotifyReceiver implements AutoCloseable {
        private final UnixDatagramChannel channel;
        private final String notifySocket;
        private final List<String> messages = new ArrayList<>();
        private final Thread reader;
        private volatile boolean closed;
        private int consumed;

        private NotifyReceiver(String bindAddress, String notifySocket) throws IOException {
            this.channel = UnixDatagramChannel.open();
            channel.bind(new UnixSocketAddress(bindAddress));
            channel.setOption(UnixSocketOptions.SO_RCVTIMEO, 200);
            this.notifySocket = notifySocket;
            this.reader = new Thread(this::read, "notify-receiver");
            reader.setDaemon(true);
            reader.start();
        }

        static NotifyReceiver atPath(Path p) throws IOException {
            return new NotifyReceiver(p.toString(), p.toString());
        }

        static NotifyReceiver abstractName(String name) throws IOException {
            return new NotifyReceiver("\0" + name, "@" + name);
        }

        /** The value for $NOTIFY_SOCKET. */
        String address() {
            return notifySocket;
        }

        private void read() {
            ByteBuffer buf = ByteBuffer.allocate(4096);
            while (!closed) {
                buf.clear();
                try {
                    channel.receive(buf);
                } catch (IOException e) {
                    if (closed) {
                        return;
                    }
                    continue;       // the receive timeout
                }
                buf.flip();
                if (buf.hasRemaining()) {
                    String m = StandardCharsets.UTF_8.decode(buf).toString();
                    synchronized (messages) {
                        messages.add(m);
                        messages.notifyAll();
                    }
                }
            }
        }

        /**
         * Waits for the next message (after those already consumed) that {@code match} accepts, consuming it and
         * those before it; fails with every message seen when none comes within {@code timeout}.
         */
        String await(Predicate<String> match, Duration timeout, String what) throws InterruptedException {
            long deadline = System.nanoTime() + timeout.toNanos();
            synchronized (messages) {
                while (true) {
                    for (int i = consumed; i < messages.size(); i++) {
                        if (match.test(messages.get(i))) {
                            consumed = i + 1;
                            return messages.get(i);
                        }
                    }
                    long left = deadline - System.nanoTime();
                    if (left <= 0) {
                        Assertions.fail("no " + what + " within " + timeout + "; received: " + messages);
                    }
                    messages.wait(Math.max(1, TimeUnit.NANOSECONDS.toMillis(left)));
                }
            }
        }

        List<String> all() {
            synchronized (messages) {
                return List.copyOf(messages);
            }
        }

        @Override
        public void close() throws IOException {
            closed = true;
            try {
                reader.join(5000);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            channel.close();
        }
    }

    // ---- the server as systemd would run it -----------------------------------------------------------------

    /** {@code snapbd serve --config FILE} in a child process with the environment systemd would give it. */
    static final class Service implements AutoCloseable {
        final Process process;
        final Path log;

        private Service(Process process, Path log) {
            this.process = process;
            this.log = log;
        }

        /** {@code prefix} runs first (e.g. systemd-socket-activate ...), then the server; env is added. */
        static Service start(Path config, Map<String, String> env, List<String> prefix, String label) throws IOException {
            Path logDir = ServerProcess.jar().getParent().resolve("it-logs");
            Files.createDirectories(logDir);
            Path log = logDir.resolve("systemd-" + label + "-" + System.nanoTime() + ".log");
            // SIGHUP at its default as under systemd, even when the test run itself was started under nohup
            // (the JVM installs no handler for a signal ignored at start).
            List<String> cmd = new ArrayList<>(List.of("env", "--default-signal=HUP"));
            cmd.addAll(prefix);
            cmd.addAll(List.of(java(), "-XX:+UseSerialGC", "-Xmx256m", "-jar", ServerProcess.jar().toString(),
                    "serve", "--config", config.toString()));
            Files.writeString(log, "# " + String.join(" ", cmd) + "\n");
            ProcessBuilder pb = new ProcessBuilder(cmd)
                    .redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null")))
                    .redirectOutput(ProcessBuilder.Redirect.appendTo(log.toFile()))
                    .redirectError(ProcessBuilder.Redirect.appendTo(log.toFile()));
            pb.environment().remove("NOTIFY_SOCKET");
            pb.environment().remove("LISTEN_FDS");
            pb.environment().remove("LISTEN_PID");
            pb.environment().remove("WATCHDOG_USEC");
            pb.environment().remove("JOURNAL_STREAM");
            pb.environment().putAll(env);
            return new Service(pb.start(), log);
        }

        String log() {
            try {
                return Files.readString(log, StandardCharsets.UTF_8);
            } catch (IOException e) {
                return "(cannot read " + log + ": " + e.getMessage() + ")";
            }
        }

        void signal(String sig) {
            Tools.run(Duration.ofSeconds(30), "kill", "-" + sig, Long.toString(process.pid())).assertOk();
        }

        /** Waits (bounded) for the exit; fails with the log when the process does not end. */
        int awaitExit(Duration timeout) throws InterruptedException {
            if (!process.waitFor(timeout.toMillis(), TimeUnit.MILLISECONDS)) {
                process.destroyForcibly();
                process.waitFor(30, TimeUnit.SECONDS);
                Assertions.fail("the server did not exit within " + timeout + "; its log:\n" + log());
            }
            return process.exitValue();
        }

        /** Waits (bounded) until the log contains {@code text}; fails when the process ends or time runs out. */
        void awaitLog(String text, Duration timeout) throws InterruptedException {
            long deadline = System.nanoTime() + timeout.toNanos();
            while (!log().contains(text)) {
                if (!process.isAlive()) {
                    Assertions.fail("the server exited (" + process.exitValue() + ") before logging '" + text + "'; its log:\n" + log());
                }
                if (System.nanoTime() > deadline) {
                    Assertions.fail("'" + text + "' not logged within " + timeout + "; the log:\n" + log());
                }
                Thread.sleep(50);
            }
        }

        @Override
        public void close() throws InterruptedException {
            if (process.isAlive()) {
                process.destroy();
                if (!process.waitFor(60, TimeUnit.SECONDS)) {
                    process.destroyForcibly();
                    process.waitFor(30, TimeUnit.SECONDS);
                }
            }
        }
    }

    /** A configuration file with a small volume; {@code extra} lines are appended. */
    static Path config(Path dir, int tcpPort, String... extra) throws IOException {
        Files.createDirectories(dir);
        StringBuilder b = new StringBuilder();
        b.append("data-dir = ").append(dir.resolve("data")).append('\n');
        b.append("tcp = 127.0.0.1:").append(tcpPort).append('\n');
        b.append("unix = ").append(dir.resolve("data").resolve("nbd.sock")).append('\n');
        b.append("volume.vol0 = 32M save=8M\n");
        b.append("default-volume = vol0\n");
        for (String e : extra) {
            b.append(e).append('\n');
        }
        Path f = dir.resolve("snapbd.conf");
        Files.writeString(f, b.toString());
        return f;
    }

    /** The offline volume list (the server must be stopped): every volume must say cleanlyClosed true. */
    static void assertVolumesClean(Path dataDir) {
        Tools.Result r = ServerProcess.snapbd(dataDir, "volume", "list", "--json").assertOk();
        Assertions.assertTrue(r.stdout().contains("\"cleanlyClosed\" : true"), r.toString());
        Assertions.assertFalse(r.stdout().contains("\"cleanlyClosed\" : false"), r.toString());
        Assertions.assertFalse(r.stdout().contains("\"open\" : true"), r.toString());
    }
}
