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
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * A real {@code snapbd serve} in a child JVM, on a TCP port of 127.0.0.1 and a Unix socket, over a data
 * directory the test owns. Its stderr goes to a file under {@code target/it-logs/} (kept after the run for
 * post-mortems) and can be read back with {@link #log()}.
 *
 * <p>A server that dies on its own is a failure, never healed in silence: {@link ServerLiveness} (registered
 * on every IT class) checks after each test that every server still open is alive unless the test stopped
 * or killed it itself, {@link #ensureRunning()} restarts only a server a test stopped or killed, and
 * {@link #close()} fails unless the server was alive and exited 0 on SIGTERM.
 *
 * <p>Test time: a server gets {@code --warm-up off} unless the test names {@code --warm-up} itself or asks
 * for serve's defaults (WarmUpIT): the warm-up spends 3 to 5 s of CPU at every start and no other test
 * depends on it. CLI runs ({@link #snapbd}) use the C1 compiler only.
 */
public final class ServerProcess implements AutoCloseable {

    /** Upper bound for start-up; the wait polls the log and ends as soon as the server is ready. */
    private static final Duration READY_TIMEOUT = Duration.ofSeconds(60);
    private static final Duration STOP_TIMEOUT = Duration.ofSeconds(60);
    private static final AtomicInteger SEQUENCE = new AtomicInteger();
    /** Servers started and not closed yet, for {@link ServerLiveness}. */
    private static final Set<ServerProcess> OPEN = ConcurrentHashMap.newKeySet();

    private final Path dataDir;
    private final Path socket;
    private final List<String> extraArgs;
    private final List<String> jvmOptions;
    private final String label;
    /** False: serve's own default for {@code --warm-up} (on) instead of the tests' {@code off}. */
    private final boolean warmUpOff;
    private Process process;
    private Path logFile;
    private int port;
    private int starts;
    /** True while the server is down because a test stopped or killed it (or its death was reported). */
    private volatile boolean down;

    private ServerProcess(Path dataDir, Path socket, String label, List<String> jvmOptions, List<String> extraArgs,
            boolean warmUpOff) {
        this.warmUpOff = warmUpOff && extraArgs.stream().noneMatch(a -> a.startsWith("--warm-up"));
        this.jvmOptions = List.copyOf(jvmOptions);
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
        return start(List.of(), dataDir, label, extraArgs);
    }

    /** {@link #start(Path, String, String...)} with JVM options for the server (e.g. {@code -Dsnapbd.x=y}). */
    public static ServerProcess start(List<String> jvmOptions, Path dataDir, String label, String... extraArgs) {
        return unstarted(jvmOptions, dataDir, socketBeside(dataDir), label, List.of(extraArgs)).begin();
    }

    /** Like {@link #start(Path, String, String...)}, with the Unix socket at {@code socket} (e.g. DIR/nbd.sock, serve's default). */
    public static ServerProcess start(Path dataDir, Path socket, String label, String... extraArgs) {
        return unstarted(List.of(), dataDir, socket, label, List.of(extraArgs)).begin();
    }

    /** A server not started yet: {@link #begin()} starts it ({@link SnapbdServerExtension} does so before all tests). */
    static ServerProcess unstarted(List<String> jvmOptions, Path dataDir, Path socket, String label, List<String> extraArgs) {
        return unstarted(jvmOptions, dataDir, socket, label, extraArgs, true);
    }

    /** {@link #unstarted(List, Path, Path, String, List)}; {@code warmUpOff} false keeps serve's default warm-up. */
    static ServerProcess unstarted(List<String> jvmOptions, Path dataDir, Path socket, String label, List<String> extraArgs,
            boolean warmUpOff) {
        return new ServerProcess(dataDir.toAbsolutePath(), socket.toAbsolutePath(), label, jvmOptions, extraArgs, warmUpOff);
    }

    /** The Unix socket DIR.sock beside the data directory DIR, or in a short directory if that path is too long. */
    static Path socketBeside(Path dataDir) {
        Path sock = dataDir.toAbsolutePath().getParent().resolve(dataDir.getFileName() + ".sock");
        if (sock.toString().length() > 100) {
            // sun_path holds 108 bytes: fall back to a short directory.
            try {
                sock = Files.createTempDirectory("sbd").resolve("nbd.sock");
            } catch (IOException e) {
                throw new IllegalStateException(e);
            }
        }
        return sock;
    }

    /** Starts this (unstarted) server; from now on {@link ServerLiveness} watches it until {@link #close()}. */
    ServerProcess begin() {
        OPEN.add(this);
        try {
            startProcess();
        } catch (RuntimeException | Error e) {
            OPEN.remove(this);
            throw e;
        }
        return this;
    }

    // ---- the jar and the CLI -------------------------------------------------------------------------------

    /** The shaded jar under test: failsafe passes it as {@code snapbd.jar}; a direct IDE run finds it in target/. */
    public static Path jar() {
        Path jar = jarPath();
        if (!Files.isRegularFile(jar)) {
            Assertions.fail("the server jar " + jar + " is missing: run 'mvn -B -q -DskipTests package' first");
        }
        return jar;
    }

    /**
     * The build's target directory, whether or not the jar is built yet: unit tests (which run before the
     * package phase in a fresh clone) put their tools' scratch files there too.
     */
    public static Path targetDir() {
        return jarPath().getParent();
    }

    private static Path jarPath() {
        String prop = System.getProperty("snapbd.jar");
        if (prop != null && !prop.isBlank()) {
            return Path.of(prop).toAbsolutePath();
        }
        String home = System.getProperty("snapbd.home");
        Path jar = home != null ? Path.of(home, "nbd-server", "target", "snapbd.jar") : Path.of("target", "snapbd.jar");
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

    /**
     * JVM options of the CLI runs: the C1 compiler only. A CLI command lives about a second, mostly class
     * loading and interpreted code; C2's compilations cost it about 30% more CPU (1.4 s against 1.0 s per
     * {@code volume list} on the CI machine) and never pay back. Nothing the CLI does depends on the compiler.
     */
    static final List<String> CLI_JVM_OPTIONS = List.of("-XX:TieredStopAtLevel=1");

    /** Runs {@code java -jar snapbd.jar ARGS --data-dir DIR} (the data directory option goes last, on the leaf command). */
    public static Tools.Result snapbd(Path dataDir, String... args) {
        List<String> cmd = new ArrayList<>(List.of(javaBin()));
        cmd.addAll(CLI_JVM_OPTIONS);
        cmd.addAll(List.of("-jar", jar().toString()));
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
                List<String> cmd = new ArrayList<>(List.of(javaBin()));
                cmd.addAll(jvmOptions);
                cmd.addAll(List.of("-jar", jar().toString(), "serve",
                        "--data-dir", dataDir.toString(),
                        "--tcp", "127.0.0.1:" + port,
                        "--unix", socket.toString()));
                cmd.addAll(extraArgs);
                if (warmUpOff) {
                    cmd.addAll(List.of("--warm-up", "off"));
                }
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
                down = false;
                return;
            }
            lastLog = log();
            if (!lastLog.contains("cannot listen on 127.0.0.1:" + port)) {
                break;  // not a port race: no point retrying
            }
        }
        down = true;    // reported here
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
        down = true;    // reported here
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
        down = true;
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
        down = true;
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

    /**
     * Starts the server again if a previous test left it stopped or killed (a durability test that failed
     * half-way); a server that died on its own fails instead, once (then the next test gets a new one).
     */
    public void ensureRunning() {
        assertAlive();
        if (process == null || !process.isAlive()) {
            startProcess();
        }
    }

    /**
     * Fails if the server died without a test stopping or killing it: names its exit status and shows its
     * log. The death is reported once; afterwards the server counts as stopped.
     */
    public void assertAlive() {
        if (process != null && !down && !process.isAlive()) {
            down = true;
            Assertions.fail("the server " + label + " died on its own (exit status " + process.exitValue() + "); its log "
                    + logFile + ":\n" + tail(log()));
        }
    }

    /** Every server started and not closed yet: {@link #assertAlive()} (after each test, {@link ServerLiveness}). */
    static void assertOpenServersAlive() {
        AssertionError first = null;
        for (ServerProcess s : OPEN) {
            try {
                s.assertAlive();
            } catch (AssertionError e) {
                if (first == null) {
                    first = e;
                } else {
                    first.addSuppressed(e);
                }
            }
        }
        if (first != null) {
            throw first;
        }
    }

    private static String tail(String log) {
        return log.length() <= 20_000 ? log : "...\n" + log.substring(log.length() - 20_000);
    }

    public boolean isAlive() {
        return process != null && process.isAlive();
    }

    public Process process() {
        return process;
    }

    /**
     * Stops the server with SIGTERM and fails unless it exits 0 (a clean stop); also fails if it had died on
     * its own before (not stopped or killed by a test).
     */
    @Override
    public void close() {
        OPEN.remove(this);
        if (process == null) {
            return;
        }
        if (!process.isAlive()) {
            assertAlive();
            return;
        }
        down = true;
        process.destroy();
        try {
            if (!process.waitFor(STOP_TIMEOUT.toMillis(), TimeUnit.MILLISECONDS)) {
                process.destroyForcibly();
                process.waitFor(30, TimeUnit.SECONDS);
                Assertions.fail("the server " + label + " ignored SIGTERM for " + STOP_TIMEOUT + "; its log:\n" + tail(log()));
            }
        } catch (InterruptedException e) {
            process.destroyForcibly();
            Thread.currentThread().interrupt();
            return;
        }
        if (process.exitValue() != 0) {
            Assertions.fail("the server " + label + " exited " + process.exitValue() + " on SIGTERM instead of 0 (a clean stop); its log "
                    + logFile + ":\n" + tail(log()));
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

    /** The server's process id (for jcmd). */
    public long pid() {
        return process.pid();
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
