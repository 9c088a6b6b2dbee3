package io.snapbd.server.it;

import org.junit.jupiter.api.Assertions;

import java.io.File;
import java.io.IOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * A real {@code snapbd serve} in a child JVM, on a TCP port of 127.0.0.1 and a Unix socket, over a data
 * directory the test owns. Its stderr goes to a file under {@code target/it-logs/} (kept after the run for
 * post-mortems) and can be read back with {@link #log()}.
 */
public final class ServerProcess implements AutoCloseable {

    /** Upper bound for start-up; the wait polls the log and ends as soon as the server is ready. */
    private static final Duration READY_TIMEOUT = Duration.ofSeconds(60);
    private static final Duration STOP_TIMEOUT = Duration.ofSeconds(60);
    private static final AtomicInteger SEQUENCE = new AtomicInteger();

    private final Path dataDir;
    private final Path socket;
    private final List<String> extraArgs;
    private final String label;
    private Process process;
    private Path logFile;
    private int port;
    private int starts;

    private ServerProcess(Path dataDir, Path socket, String label, List<String> extraArgs) {
        this.dataDir = dataDir;
        this.socket = socket;
        this.label = label;
        this.extraArgs = List.copyOf(extraArgs);
    }

    /**
     * Starts a server on {@code dataDir} with extra {@code serve} options (e.g. {@code --handshake-timeout 1}).
     * The Unix socket lives beside the data directory.
     */
    public static ServerProcess start(Path dataDir, String label, String... extraArgs) {
        Path sock = dataDir.toAbsolutePath().getParent().resolve(dataDir.getFileName() + ".sock");
        if (sock.toString().length() > 100) {
            // sun_path holds 108 bytes: fall back to a short directory.
            try {
                sock = Files.createTempDirectory("sbd").resolve("nbd.sock");
            } catch (IOException e) {
                throw new IllegalStateException(e);
            }
        }
        ServerProcess s = new ServerProcess(dataDir.toAbsolutePath(), sock, label, List.of(extraArgs));
        s.startProcess();
        return s;
    }

    /** Like {@link #start(Path, String, String...)}, with the Unix socket at {@code socket} (e.g. DIR/nbd.sock, serve's default). */
    public static ServerProcess start(Path dataDir, Path socket, String label, String... extraArgs) {
        ServerProcess s = new ServerProcess(dataDir.toAbsolutePath(), socket.toAbsolutePath(), label, List.of(extraArgs));
        s.startProcess();
        return s;
    }

    // ---- the jar and the CLI -------------------------------------------------------------------------------

    /** The shaded jar under test: failsafe passes it as {@code snapbd.jar}; a direct IDE run finds it in target/. */
    public static Path jar() {
        String prop = System.getProperty("snapbd.jar");
        Path jar;
        if (prop != null && !prop.isBlank()) {
            jar = Path.of(prop);
        } else {
            String home = System.getProperty("snapbd.home");
            jar = home != null ? Path.of(home, "nbd-server", "target", "snapbd.jar") : Path.of("target", "snapbd.jar");
        }
        if (!Files.isRegularFile(jar)) {
            Assertions.fail("the server jar " + jar.toAbsolutePath() + " is missing: run 'mvn -B -q -DskipTests package' first");
        }
        return jar.toAbsolutePath();
    }

    /** Repository root (for bin/snapbd). */
    public static Path home() {
        String home = System.getProperty("snapbd.home");
        return home != null ? Path.of(home) : jar().getParent().getParent().getParent();
    }

    static String javaBin() {
        return Path.of(System.getProperty("java.home"), "bin", "java").toString();
    }

    /** Runs {@code java -jar snapbd.jar ARGS --data-dir DIR} (the data directory option goes last, on the leaf command). */
    public static Tools.Result snapbd(Path dataDir, String... args) {
        List<String> cmd = new ArrayList<>(List.of(javaBin(), "-jar", jar().toString()));
        cmd.addAll(List.of(args));
        if (dataDir != null) {
            cmd.add("--data-dir");
            cmd.add(dataDir.toAbsolutePath().toString());
        }
        return Tools.run(Duration.ofMinutes(2), null, cmd);
    }

    /** The CLI against this server's data directory (through the admin socket while it runs). */
    public Tools.Result cli(String... args) {
        return snapbd(dataDir, args);
    }

    // ---- lifecycle -----------------------------------------------------------------------------------------

    private void startProcess() {
        Path logDir = jar().getParent().resolve("it-logs");
        String lastLog = "";
        for (int attempt = 1; attempt <= 3; attempt++) {
            port = freePort();
            starts++;
            try {
                Files.createDirectories(logDir);
                logFile = logDir.resolve(String.format("%s-%03d-start%d.log", label, SEQUENCE.incrementAndGet(), starts));
                List<String> cmd = new ArrayList<>(List.of(javaBin(), "-jar", jar().toString(), "serve",
                        "--data-dir", dataDir.toString(),
                        "--tcp", "127.0.0.1:" + port,
                        "--unix", socket.toString()));
                cmd.addAll(extraArgs);
                Files.writeString(logFile, "# " + String.join(" ", cmd) + "\n");
                process = new ProcessBuilder(cmd)
                        .redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null")))
                        .redirectOutput(ProcessBuilder.Redirect.appendTo(logFile.toFile()))
                        .redirectError(ProcessBuilder.Redirect.appendTo(logFile.toFile()))
                        .start();
            } catch (IOException e) {
                throw new IllegalStateException("cannot start the server: " + e.getMessage(), e);
            }
            if (awaitReady()) {
                return;
            }
            lastLog = log();
            if (!lastLog.contains("cannot listen on 127.0.0.1:" + port)) {
                break;  // not a port race: no point retrying
            }
        }
        Assertions.fail("server did not start on " + dataDir + "; its log:\n" + lastLog);
    }

    private boolean awaitReady() {
        long deadline = System.nanoTime() + READY_TIMEOUT.toNanos();
        while (System.nanoTime() < deadline) {
            if (log().contains("snapbd ready")) {
                return true;
            }
            if (!process.isAlive()) {
                return false;
            }
            try {
                process.waitFor(50, TimeUnit.MILLISECONDS);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IllegalStateException(e);
            }
        }
        process.destroyForcibly();
        Assertions.fail("server not ready after " + READY_TIMEOUT + "; its log:\n" + log());
        return false;
    }

    private static int freePort() {
        try (ServerSocket s = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            return s.getLocalPort();
        } catch (IOException e) {
            throw new IllegalStateException(e);
        }
    }

    /** SIGTERM and wait for the exit; returns the exit code. Fails if the server does not stop. */
    public int stop() {
        if (process == null) {
            return -1;
        }
        process.destroy();      // SIGTERM on Linux: the shutdown hook closes the volumes cleanly
        try {
            if (!process.waitFor(STOP_TIMEOUT.toMillis(), TimeUnit.MILLISECONDS)) {
                process.destroyForcibly();
                process.waitFor(30, TimeUnit.SECONDS);
                Assertions.fail("server ignored SIGTERM for " + STOP_TIMEOUT + "; its log:\n" + log());
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException(e);
        }
        return process.exitValue();
    }

    /** SIGKILL: no shutdown hook runs, nothing is closed or forced. */
    public void kill9() {
        process.destroyForcibly();      // SIGKILL on Linux
        try {
            if (!process.waitFor(STOP_TIMEOUT.toMillis(), TimeUnit.MILLISECONDS)) {
                Assertions.fail("server survived SIGKILL?");
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException(e);
        }
    }

    /** Starts the server again on the same data directory (new log file, possibly a new port). */
    public void restart() {
        if (process != null && process.isAlive()) {
            stop();
        }
        startProcess();
    }

    /** Starts the server again if a previous test left it stopped. */
    public void ensureRunning() {
        if (process == null || !process.isAlive()) {
            startProcess();
        }
    }

    public boolean isAlive() {
        return process != null && process.isAlive();
    }

    public Process process() {
        return process;
    }

    @Override
    public void close() {
        if (process != null && process.isAlive()) {
            process.destroy();
            try {
                if (!process.waitFor(STOP_TIMEOUT.toMillis(), TimeUnit.MILLISECONDS)) {
                    process.destroyForcibly();
                    process.waitFor(30, TimeUnit.SECONDS);
                }
            } catch (InterruptedException e) {
                process.destroyForcibly();
                Thread.currentThread().interrupt();
            }
        }
    }

    // ---- addresses and log ---------------------------------------------------------------------------------

    public int port() {
        return port;
    }

    public Path socket() {
        return socket;
    }

    public Path dataDir() {
        return dataDir;
    }

    public String tcpUri(String export) {
        return "nbd://127.0.0.1:" + port + "/" + export;
    }

    public String unixUri(String export) {
        return "nbd+unix:///" + export + "?socket=" + socket;
    }

    /** Everything the current (latest) server process wrote to stderr/stdout so far. */
    public String log() {
        try {
            return logFile == null || !Files.exists(logFile) ? "" : new String(Files.readAllBytes(logFile), StandardCharsets.UTF_8);
        } catch (IOException e) {
            return "(log unreadable: " + e + ")";
        }
    }

    public Path logFile() {
        return logFile;
    }
}
