package io.snapbd.server.config;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * {@code key = value} configuration (one per line, {@code #} comments). Unknown keys and bad values are
 * reported with file and line, and stop the start. The documented example is systemd/snapbd.conf.
 */
public final class ConfigFile {

    public static final Set<String> KEYS = Set.of("data-dir", "tcp", "unix", "admin-socket", "handshake-timeout",
            "max-connections", "default-volume", "default-volume-size", "default-save-size");

    public static final class ConfigException extends Exception {
        public ConfigException(String message) {
            super(message);
        }
    }

    private record Entry(String value, int line) {
    }

    private final Path file;
    private final Map<String, Entry> entries = new LinkedHashMap<>();

    private ConfigFile(Path file) {
        this.file = file;
    }

    public static ConfigFile read(Path file) throws ConfigException {
        ConfigFile c = new ConfigFile(file);
        List<String> lines;
        try {
            lines = Files.readAllLines(file, StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new ConfigException(file + ": cannot read: " + e.getMessage());
        }
        for (int i = 0; i < lines.size(); i++) {
            String line = lines.get(i).strip();
            if (line.isEmpty() || line.startsWith("#")) {
                continue;
            }
            int eq = line.indexOf('=');
            if (eq <= 0) {
                throw new ConfigException(file + ":" + (i + 1) + ": expected 'key = value', got '" + line + "'");
            }
            String key = line.substring(0, eq).strip();
            String value = line.substring(eq + 1).strip();
            if (!KEYS.contains(key)) {
                throw new ConfigException(file + ":" + (i + 1) + ": unknown key '" + key + "' (known: " + String.join(", ", KEYS.stream().sorted().toList()) + ")");
            }
            if (c.entries.containsKey(key)) {
                throw new ConfigException(file + ":" + (i + 1) + ": '" + key + "' already set on line " + c.entries.get(key).line);
            }
            c.entries.put(key, new Entry(value, i + 1));
        }
        return c;
    }

    public String dataDir() {
        Entry e = entries.get("data-dir");
        return e == null ? null : e.value;
    }

    /** Applies every key to {@code base}; values given on the command line are applied afterwards by the caller. */
    public ServerConfig apply(ServerConfig base) throws ConfigException {
        ServerConfig c = base;
        for (Map.Entry<String, Entry> me : entries.entrySet()) {
            String v = me.getValue().value;
            try {
                switch (me.getKey()) {
                    case "tcp" -> c = c.withTcp(v.equals("none") ? null : ServerConfig.parseHostPort(v));
                    case "unix" -> c = c.withUnix(v.equals("none") ? null : Path.of(v));
                    case "admin-socket" -> c = new ServerConfig(c.dataDir(), c.tcp(), c.unix(), Path.of(v), c.handshakeTimeout(),
                            c.maxConnections(), c.defaultVolume(), c.defaultVolumeSize(), c.defaultSaveSize());
                    case "handshake-timeout" -> c = c.withLimits(Duration.ofMillis(seconds(v)), c.maxConnections());
                    case "max-connections" -> c = c.withLimits(c.handshakeTimeout(), positiveInt(v));
                    case "default-volume" -> c = new ServerConfig(c.dataDir(), c.tcp(), c.unix(), c.adminSocket(), c.handshakeTimeout(),
                            c.maxConnections(), v.equals("none") ? null : v, c.defaultVolumeSize(), c.defaultSaveSize());
                    case "default-volume-size" -> c = new ServerConfig(c.dataDir(), c.tcp(), c.unix(), c.adminSocket(), c.handshakeTimeout(),
                            c.maxConnections(), c.defaultVolume(), Sizes.parse(v), c.defaultSaveSize());
                    case "default-save-size" -> c = new ServerConfig(c.dataDir(), c.tcp(), c.unix(), c.adminSocket(), c.handshakeTimeout(),
                            c.maxConnections(), c.defaultVolume(), c.defaultVolumeSize(), Sizes.parse(v));
                    default -> {
                        // data-dir is resolved before the config is built
                    }
                }
            } catch (IllegalArgumentException ex) {
                throw new ConfigException(file + ":" + me.getValue().line + ": " + me.getKey() + ": " + ex.getMessage());
            }
        }
        return c;
    }

    /** Seconds, fractional allowed, returned in milliseconds. */
    public static long seconds(String v) {
        try {
            double d = Double.parseDouble(v);
            if (d <= 0 || d > 86400) {
                throw new IllegalArgumentException("'" + v + "' must be between 0 and 86400 seconds");
            }
            return (long) (d * 1000);
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("'" + v + "' is not a number of seconds");
        }
    }

    public static int positiveInt(String v) {
        try {
            int n = Integer.parseInt(v);
            if (n <= 0) {
                throw new IllegalArgumentException("'" + v + "' must be positive");
            }
            return n;
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("'" + v + "' is not a whole number");
        }
    }
}
