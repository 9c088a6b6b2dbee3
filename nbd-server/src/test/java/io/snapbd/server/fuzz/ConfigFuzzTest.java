package io.snapbd.server.fuzz;

import com.code_intelligence.jazzer.api.FuzzedDataProvider;
import com.code_intelligence.jazzer.junit.DictionaryEntries;
import com.code_intelligence.jazzer.junit.FuzzTest;
import io.snapbd.server.config.AttachSpec;
import io.snapbd.server.config.ConfigFile;
import io.snapbd.server.config.ServerConfig;
import io.snapbd.server.config.ServiceSettings;
import io.snapbd.server.config.VolumeSpec;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * Fuzzes the configuration file parser (issue 25, part 2): {@link ConfigFile#read}, {@link ConfigFile#service()}
 * and {@link ConfigFile#apply} as {@code snapbd serve --config} runs them. Allowed outcomes: a configuration, or
 * a {@link ConfigFile.ConfigException} naming the file; never an unchecked exception. An accepted configuration
 * holds only values the server can run with: timeouts of at least a millisecond, a positive connection limit,
 * volume geometries {@code Volume.checkGeometry} accepts, ports 0 … 65535.
 *
 * <p>Without {@code JAZZER_FUZZ=1} the target replays its corpus in
 * {@code src/test/resources/io/snapbd/server/fuzz/ConfigFuzzTestInputs/configFile/}; see benchmarks/fuzz.sh.
 */
class ConfigFuzzTest {

    private static Path dir;

    private static synchronized Path dir() throws IOException {
        if (dir == null) {
            dir = Files.createTempDirectory("snapbd-configfuzz");
            dir.toFile().deleteOnExit();
        }
        return dir;
    }

    private static final List<String> KEYS = new ArrayList<>(ConfigFile.KEYS);

    static {
        KEYS.sort(null);
        KEYS.add("volume.v1");
        KEYS.add("volume.");
        KEYS.add("volume.a/b");
    }

    @FuzzTest(maxDuration = "5m")
    @DictionaryEntries({"=", " = ", "#", "none", "NaN", "Infinity", "-0", "1e-9", "0.0001", "86400", "86401",
            "127.0.0.1:", "[::1]:", ":10809", "65536", "/dev/nbd0", "nbd1", "read-only", "timeout=", "save=",
            "block-size=", "sparse", "K", "M", "G", "T", "P", "KiB", "MB", "on", "off", "9223372036854775807"})
    void configFile(FuzzedDataProvider in) throws IOException {
        ByteArrayOutputStream text = new ByteArrayOutputStream();
        int lines = in.consumeInt(0, 12);
        for (int i = 0; i < lines && in.remainingBytes() > 0; i++) {
            switch (in.consumeInt(0, 7)) {
                case 0 -> text.writeBytes(in.consumeBytes(in.consumeInt(0, 80)));       // anything, even bad UTF-8
                case 1 -> text.writeBytes(("# " + in.consumeString(40)).getBytes(StandardCharsets.UTF_8));
                default -> text.writeBytes((KEYS.get(in.consumeInt(0, KEYS.size() - 1)) + (in.consumeBoolean() ? " = " : "=")
                        + in.consumeString(48)).getBytes(StandardCharsets.UTF_8));
            }
            text.write('\n');
        }
        Path f = dir().resolve("snapbd.conf");
        Files.write(f, text.toByteArray());
        ConfigFile c;
        ServiceSettings service;
        ServerConfig cfg;
        try {
            c = ConfigFile.read(f);
            service = c.service();
            cfg = c.apply(ServerConfig.defaults(dir()));
        } catch (ConfigFile.ConfigException e) {
            if (!e.getMessage().startsWith(f.toString())) {
                throw new AssertionError("the error does not start with the file: " + e.getMessage(), e);
            }
            return;
        }
        String what = "accepted config:\n" + text.toString(StandardCharsets.UTF_8);
        check(cfg.handshakeTimeout().toMillis() >= 1, what + "\n=> handshake timeout " + cfg.handshakeTimeout());
        check(service.stopTimeout().toMillis() >= 1, what + "\n=> stop timeout " + service.stopTimeout());
        check(cfg.maxConnections() >= 1, what + "\n=> max connections " + cfg.maxConnections());
        check(cfg.defaultVolumeSize() >= 0 && cfg.defaultSaveSize() >= 0, what + "\n=> default sizes");
        if (cfg.tcp() != null) {
            check(cfg.tcp().getPort() >= 0 && cfg.tcp().getPort() <= 65535, what + "\n=> port " + cfg.tcp());
        }
        for (VolumeSpec v : service.volumes()) {
            io.snapbd.engine.volume.Volume.checkGeometry(v.size(), v.blockSize(), v.saveSize());
        }
        for (AttachSpec a : cfg.attachments()) {
            check(a.device().matches("/dev/nbd[0-9]+"), what + "\n=> device " + a.device());
        }
    }

    private static void check(boolean ok, String what) {
        if (!ok) {
            throw new AssertionError(what);
        }
    }
}
