package io.snapbd.server.it;

import org.junit.jupiter.api.extension.AfterAllCallback;
import org.junit.jupiter.api.extension.AfterEachCallback;
import org.junit.jupiter.api.extension.BeforeAllCallback;
import org.junit.jupiter.api.extension.BeforeEachCallback;
import org.junit.jupiter.api.extension.ExtensionContext;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.stream.Stream;

/**
 * One {@code snapbd serve} for the tests of an IT class, the set-up those classes used to copy:
 * <ul>
 *   <li>before all tests: the tools it needs ({@link Tools#require}), a fresh temporary directory, the
 *       volumes created offline in {@code DIR/data}, an optional config file {@code DIR/snapbd.conf}, and the
 *       server started on them (Unix socket {@code DIR/data.sock});</li>
 *   <li>before each test: {@link ServerProcess#ensureRunning()}, so a test that failed with the server
 *       stopped does not cascade into the next ones (a server that died on its own still fails, once);</li>
 *   <li>after all tests: {@link ServerProcess#close()} (which fails unless the server stops cleanly), then
 *       the directory is deleted.</li>
 * </ul>
 * Register it on a static field, and take the server from it:
 * <pre>{@code
 * @RegisterExtension
 * static final SnapbdServerExtension SNAPBD = SnapbdServerExtension.builder("MyIT").volume("first", "32M", "4M").build();
 * static final ServerProcess server = SNAPBD.server();
 * }</pre>
 * The server object exists from the start (so it can be a {@code static final} field); it runs from the
 * extension's {@code beforeAll}, which comes before the class's own {@code @BeforeAll} methods.
 *
 * <p>With {@link Builder#perTest()} every test gets all of this to itself instead: a fresh directory, the
 * volumes and config, and a server started before the test (or by the test, {@link Builder#startedByTest()}),
 * stopped (clean stop asserted) and deleted after it; take the server with {@link #server()} inside the test.
 * A test that kills or restarts the server does so through {@link ServerProcess#kill9()},
 * {@link ServerProcess#stop()} and {@link ServerProcess#restart()}. {@link #startAnother} starts a second
 * server on an empty data directory of its own, stopped after the test.
 */
public final class SnapbdServerExtension
        implements BeforeAllCallback, BeforeEachCallback, AfterEachCallback, AfterAllCallback {

    private final String label;
    private final List<String[]> volumes;
    private final List<String> tools;
    private final List<String> jvmOptions;
    private final List<String> serveArgs;
    private final String config;
    private final boolean perTest;
    private final boolean startedByTest;
    private final boolean serveDefaults;
    /** Servers a test started with {@link #startAnother}; stopped after it. */
    private final List<ServerProcess> others = new ArrayList<>();
    private Path root;
    private String serverLabel;
    private ServerProcess server;

    private SnapbdServerExtension(Builder b) {
        label = b.label;
        volumes = List.copyOf(b.volumes);
        tools = List.copyOf(b.tools);
        jvmOptions = List.copyOf(b.jvmOptions);
        serveArgs = List.copyOf(b.serveArgs);
        config = b.config;
        perTest = b.perTest;
        startedByTest = b.startedByTest;
        serveDefaults = b.serveDefaults;
        if (!perTest) {
            newRoot(label);
            server = newServer();
        }
    }

    /** A server labelled {@code label} (the name of its log files under {@code target/it-logs/}). */
    public static Builder builder(String label) {
        return new Builder(label);
    }

    /** The server (of the class, or of the current test with {@link Builder#perTest()}). */
    public ServerProcess server() {
        if (server == null) {
            throw new IllegalStateException(startedByTest ? "the test has not called start() yet" : "no test is running");
        }
        return server;
    }

    /** Its data directory (exists before the server starts). */
    public Path dataDir() {
        if (root == null) {
            throw new IllegalStateException("no test is running");
        }
        return root.resolve("data");
    }

    /**
     * With {@link Builder#startedByTest()}: starts the current test's server on its prepared data directory,
     * with the builder's serve options followed by {@code extraServeArgs}.
     */
    public ServerProcess start(String... extraServeArgs) {
        if (!startedByTest || root == null || server != null) {
            throw new IllegalStateException("start() is for a test of a startedByTest() extension, once");
        }
        server = newServer(extraServeArgs);
        return server.begin();
    }

    /**
     * Another server, started now on an empty data directory {@code DIR/NAME} with the builder's JVM options
     * and {@code serveArgs}; stopped (clean stop asserted) after the current test.
     */
    public ServerProcess startAnother(String name, String... serveArgs) {
        Path data = root.resolve(name);
        ServerProcess other = ServerProcess.unstarted(jvmOptions, data, ServerProcess.socketBeside(data),
                serverLabel + "-" + name, List.of(serveArgs));
        others.add(other);
        return other.begin();
    }

    /** A fresh directory (named after the class only: the admin socket inside must fit in sun_path). */
    private void newRoot(String serverLabel) {
        try {
            root = Files.createTempDirectory("snapbd-" + label + "-");
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        this.serverLabel = serverLabel;
    }

    private ServerProcess newServer(String... extraServeArgs) {
        List<String> args = new ArrayList<>(serveArgs);
        if (config != null) {
            args.addAll(List.of("--config", configFile().toString()));
        }
        args.addAll(List.of(extraServeArgs));
        Path data = dataDir();
        return ServerProcess.unstarted(jvmOptions, data, ServerProcess.socketBeside(data), serverLabel, args, !serveDefaults);
    }

    private Path configFile() {
        return root.resolve("snapbd.conf");
    }

    /** The volumes and the config file; then the server unless the test starts it. */
    private void prepare() throws IOException {
        for (String[] v : volumes) {
            ServerProcess.snapbd(dataDir(), "volume", "create", v[0], "--size", v[1], "--save-size", v[2]).assertOk();
        }
        if (config != null) {
            Files.writeString(configFile(), config);
        }
        if (!startedByTest) {
            server.begin();
        }
    }

    @Override
    public void beforeAll(ExtensionContext context) throws IOException {
        Tools.require(tools.toArray(String[]::new));
        if (!perTest) {
            prepare();
        }
    }

    @Override
    public void beforeEach(ExtensionContext context) throws IOException {
        if (perTest) {
            newRoot(label + "-" + context.getRequiredTestMethod().getName());
            server = startedByTest ? null : newServer();
            prepare();
        } else {
            server.ensureRunning();
        }
    }

    @Override
    public void afterEach(ExtensionContext context) throws IOException {
        try {
            for (ServerProcess other : others) {
                other.close();
            }
        } finally {
            others.clear();
            if (perTest) {
                closeAndDelete();
            }
        }
    }

    @Override
    public void afterAll(ExtensionContext context) throws IOException {
        if (!perTest) {
            closeAndDelete();
        }
    }

    private void closeAndDelete() throws IOException {
        try {
            if (server != null) {
                server.close();
            }
        } finally {
            server = perTest ? null : server;
            try (Stream<Path> all = Files.walk(root)) {
                for (Path p : all.sorted(Comparator.reverseOrder()).toList()) {
                    Files.deleteIfExists(p);
                }
            }
        }
    }

    /** What the server starts with. */
    public static final class Builder {
        private final String label;
        private final List<String[]> volumes = new ArrayList<>();
        private final List<String> serveArgs = new ArrayList<>();
        private final List<String> jvmOptions = new ArrayList<>();
        private final List<String> tools = new ArrayList<>();
        private String config;
        private boolean perTest;
        private boolean startedByTest;
        private boolean serveDefaults;

        private Builder(String label) {
            this.label = label;
        }

        /** A volume created offline before the start ({@code snapbd volume create NAME --size S --save-size SS}). */
        public Builder volume(String name, String size, String saveSize) {
            volumes.add(new String[] {name, size, saveSize});
            return this;
        }

        /** Extra {@code serve} options, e.g. {@code "--warm-up", "off"}. */
        public Builder serveArgs(String... args) {
            serveArgs.addAll(List.of(args));
            return this;
        }

        /** JVM options for the server, e.g. {@code -Dsnapbd.clone.chunkPauseMillis=100}. */
        public Builder jvmOptions(String... options) {
            jvmOptions.addAll(List.of(options));
            return this;
        }

        /** A config file with this text, passed as {@code --config}. */
        public Builder config(String text) {
            config = text;
            return this;
        }

        /** Tools the tests need, checked before anything else ({@link Tools#require}). */
        public Builder requires(String... names) {
            tools.addAll(List.of(names));
            return this;
        }

        /** A fresh directory, volumes, config and server for every test, stopped and deleted after it. */
        public Builder perTest() {
            perTest = true;
            return this;
        }

        /**
         * {@link #perTest()}, with the server started by the test itself ({@link SnapbdServerExtension#start}),
         * e.g. after it prepared the data directory or with options of its own.
         */
        public Builder startedByTest() {
            perTest = true;
            startedByTest = true;
            return this;
        }

        /** serve's own defaults, without the {@code --warm-up off} that {@link ServerProcess} adds for tests. */
        public Builder serveDefaults() {
            serveDefaults = true;
            return this;
        }

        public SnapbdServerExtension build() {
            return new SnapbdServerExtension(this);
        }
    }
}
