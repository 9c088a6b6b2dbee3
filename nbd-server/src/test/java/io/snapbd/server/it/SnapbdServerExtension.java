package io.snapbd.server.it;

import org.junit.jupiter.api.extension.AfterAllCallback;
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
 * One {@code snapbd serve} shared by the tests of an IT class, the set-up those classes used to copy:
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
 */
public final class SnapbdServerExtension implements BeforeAllCallback, BeforeEachCallback, AfterAllCallback {

    private final Path root;
    private final ServerProcess server;
    private final List<String[]> volumes;
    private final List<String> tools;
    private final String config;

    private SnapbdServerExtension(Builder b) {
        try {
            root = Files.createTempDirectory("snapbd-" + b.label + "-");
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        volumes = List.copyOf(b.volumes);
        tools = List.copyOf(b.tools);
        config = b.config;
        List<String> serveArgs = new ArrayList<>(b.serveArgs);
        if (config != null) {
            serveArgs.addAll(List.of("--config", configFile().toString()));
        }
        Path data = root.resolve("data");
        server = ServerProcess.unstarted(b.jvmOptions, data, ServerProcess.socketBeside(data), b.label, serveArgs);
    }

    /** A server labelled {@code label} (the name of its log files under {@code target/it-logs/}). */
    public static Builder builder(String label) {
        return new Builder(label);
    }

    /** The server (running from before the first test to after the last). */
    public ServerProcess server() {
        return server;
    }

    /** Its data directory. */
    public Path dataDir() {
        return server.dataDir();
    }

    private Path configFile() {
        return root.resolve("snapbd.conf");
    }

    @Override
    public void beforeAll(ExtensionContext context) throws IOException {
        Tools.require(tools.toArray(String[]::new));
        for (String[] v : volumes) {
            ServerProcess.snapbd(dataDir(), "volume", "create", v[0], "--size", v[1], "--save-size", v[2]).assertOk();
        }
        if (config != null) {
            Files.writeString(configFile(), config);
        }
        server.begin();
    }

    @Override
    public void beforeEach(ExtensionContext context) {
        server.ensureRunning();
    }

    @Override
    public void afterAll(ExtensionContext context) throws IOException {
        try {
            server.close();
        } finally {
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

        public SnapbdServerExtension build() {
            return new SnapbdServerExtension(this);
        }
    }
}
