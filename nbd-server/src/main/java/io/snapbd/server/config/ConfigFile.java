package io.snapbd.server.config;

import io.snapbd.server.Log;
import io.snapbd.server.access.AccessRules;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * {@code key = value} configuration (one per line, {@code #} comments). Unknown keys and bad values are
 * reported with file and line, and stop the start. Every key appears at most once, except {@code attach}
 * ({@code attach = EXPORT /dev/nbdN [read-only] [timeout=SECONDS]}, one line per device) and {@code access}
 * ({@code access = EXPORT PRINCIPAL ro|rw}, one line per rule, see {@link AccessRules}). The documented
 * example is systemd/snapbd.conf.
 */
public final class ConfigFile {

    public static final Set<String> KEYS = Set.of("data-dir", "tcp", "unix", "admin-socket", "handshake-timeout",
            "max-connections", "default-volume", "default-volume-size", "default-save-size", "attach",
            "metrics", "log-level", "stop-timeout", "latency-histograms", "warm-up",
            "tls", "tls-certificates", "tls-verify-peer", "access", "dead-connection-timeout");

    /** Keys named {@code volume.NAME}: one line per volume to create when missing (see {@link #service()}). */
    public static final String VOLUME_PREFIX = "volume.";

    /** Keys that may appear on several lines. */
    private static final Set<String> REPEATABLE = Set.of("attach");

    public static final class ConfigException extends Exception {
        public ConfigException(String message) {
            super(message);
        }
    }

    private record Entry(String value, int line) {
    }

    private final Path file;
    private final Map<String, Entry> entries = new LinkedHashMap<>();
    private final List<Entry> attaches = new ArrayList<>();
    private final List<Entry> accessLines = new ArrayList<>();

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
            if (!KEYS.contains(key) && !(key.startsWith(VOLUME_PREFIX) && key.length() > VOLUME_PREFIX.length())) {
                throw new ConfigException(file + ":" + (i + 1) + ": unknown key '" + key + "' (known: " + String.join(", ", KEYS.stream().sorted().toList()) + ", " + VOLUME_PREFIX + "NAME)");
            }
            if (key.equals("access")) {
                c.accessLines.add(new Entry(value, i + 1));
                continue;
            }
            if (REPEATABLE.contains(key)) {
                c.attaches.add(new Entry(value, i + 1));
                continue;
            }
            if (c.entries.containsKey(key)) {
                throw new ConfigException(file + ":" + (i + 1) + ": '" + key + "' already set on line " + c.entries.get(key).line);
            }
            c.entries.put(key, new Entry(value, i + 1));
        }
        return c;
    }

    /**
     * The production-host keys ({@code metrics}, {@code log-level}, {@code stop-timeout}, {@code latency-histograms},
     * {@code warm-up},
     * {@code volume.NAME}),
     * checked here; {@link #apply} ignores them.
     */
    public ServiceSettings service() throws ConfigException {
        InetSocketAddress metrics = null;
        Log.Level level = null;
        Duration stopTimeout = ServiceSettings.DEFAULT_STOP_TIMEOUT;
        boolean histograms = true;
        boolean warmUp = true;
        List<VolumeSpec> volumes = new ArrayList<>();
        for (Map.Entry<String, Entry> me : entries.entrySet()) {
            String key = me.getKey();
            String v = me.getValue().value;
            String origin = file + ":" + me.getValue().line;
            try {
                if (key.equals("metrics")) {
                    metrics = v.equals("none") ? null : ServerConfig.parseHostPort(v);
                } else if (key.equals("log-level")) {
                    level = Log.parseLevel(v);
                } else if (key.equals("stop-timeout")) {
                    stopTimeout = Duration.ofMillis(seconds(v));
                } else if (key.equals("latency-histograms")) {
                    histograms = ServiceSettings.parseOnOff(v);
                } else if (key.equals("warm-up")) {
                    warmUp = ServiceSettings.parseOnOff(v);
                } else if (key.startsWith(VOLUME_PREFIX)) {
                    volumes.add(VolumeSpec.parse(key.substring(VOLUME_PREFIX.length()), v, origin));
                }
            } catch (IllegalArgumentException ex) {
                throw new ConfigException(origin + ": " + key + ": " + ex.getMessage());
            }
        }
        return new ServiceSettings(metrics, level, stopTimeout, volumes, histograms, warmUp);
    }

    /**
     * The TLS keys ({@code tls = off|on|require}, {@code tls-certificates = DIR}, {@code tls-verify-peer = on|off});
     * {@link #apply} ignores them. A relative directory is taken relative to the file's directory.
     */
    public TlsSettings tls() throws ConfigException {
        TlsSettings.Mode mode = TlsSettings.Mode.OFF;
        Path dir = null;
        boolean verify = false;
        for (String key : List.of("tls", "tls-certificates", "tls-verify-peer")) {
            Entry e = entries.get(key);
            if (e == null) {
                continue;
            }
            try {
                switch (key) {
                    case "tls" -> mode = TlsSettings.parseMode(e.value);
                    case "tls-certificates" -> {
                        Path p = Path.of(e.value);
                        Path base = file.toAbsolutePath().getParent();
                        dir = p.isAbsolute() || base == null ? p : base.resolve(p);
                    }
                    default -> verify = ServiceSettings.parseOnOff(e.value);
                }
            } catch (IllegalArgumentException ex) {
                throw new ConfigException(file + ":" + e.line + ": " + key + ": " + ex.getMessage());
            }
        }
        return new TlsSettings(mode, dir, verify);
    }

    /** The {@code access} lines, in order; none: {@link AccessRules#OPEN}. {@link #apply} ignores them. */
    public AccessRules access() throws ConfigException {
        List<AccessRules.Rule> rules = new ArrayList<>();
        for (Entry e : accessLines) {
            String origin = file + ":" + e.line;
            try {
                rules.add(AccessRules.parse(e.value, origin));
            } catch (IllegalArgumentException ex) {
                throw new ConfigException(origin + ": access: " + ex.getMessage());
            }
        }
        return rules.isEmpty() ? AccessRules.OPEN : new AccessRules(rules);
    }

    public String dataDir() {
        Entry e = entries.get("data-dir");
        return e == null ? null : e.value;
    }

    /**
     * {@code dead-connection-timeout = SECONDS} (whole seconds, 0 to 86400): how long the kernel keeps a netlink
     * device waiting for the server (docs/kernel-attach.md); null when the file does not set it.
     */
    public Integer deadConnectionTimeout() throws ConfigException {
        Entry e = entries.get("dead-connection-timeout");
        if (e == null) {
            return null;
        }
        try {
            int v = Integer.parseInt(e.value.strip());
            if (v < 0 || v > 86400) {
                throw new NumberFormatException();
            }
            return v;
        } catch (NumberFormatException ex) {
            throw new ConfigException(file + ":" + e.line + ": dead-connection-timeout: '" + e.value
                    + "' must be a whole number of seconds from 0 to 86400");
        }
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
                            c.maxConnections(), c.defaultVolume(), c.defaultVolumeSize(), c.defaultSaveSize(), c.attachments());
                    case "handshake-timeout" -> c = c.withLimits(Duration.ofMillis(seconds(v)), c.maxConnections());
                    case "max-connections" -> c = c.withLimits(c.handshakeTimeout(), positiveInt(v));
                    case "default-volume" -> c = new ServerConfig(c.dataDir(), c.tcp(), c.unix(), c.adminSocket(), c.handshakeTimeout(),
                            c.maxConnections(), v.equals("none") ? null : v, c.defaultVolumeSize(), c.defaultSaveSize(), c.attachments());
                    case "default-volume-size" -> c = new ServerConfig(c.dataDir(), c.tcp(), c.unix(), c.adminSocket(), c.handshakeTimeout(),
                            c.maxConnections(), c.defaultVolume(), Sizes.parse(v), c.defaultSaveSize(), c.attachments());
                    case "default-save-size" -> c = new ServerConfig(c.dataDir(), c.tcp(), c.unix(), c.adminSocket(), c.handshakeTimeout(),
                            c.maxConnections(), c.defaultVolume(), c.defaultVolumeSize(), Sizes.parse(v), c.attachments());
                    default -> {
                        // data-dir is resolved before the config is built
                    }
                }
            } catch (IllegalArgumentException ex) {
                throw new ConfigException(file + ":" + me.getValue().line + ": " + me.getKey() + ": " + ex.getMessage());
            }
        }
        List<AttachSpec> specs = new ArrayList<>();
        for (Entry e : attaches) {
            String origin = file + ":" + e.line;
            AttachSpec spec;
            try {
                spec = AttachSpec.parse(e.value, origin);
            } catch (IllegalArgumentException ex) {
                throw new ConfigException(origin + ": attach: " + ex.getMessage());
            }
            for (AttachSpec other : specs) {
                if (other.device().equals(spec.device())) {
                    throw new ConfigException(origin + ": attach: " + spec.device() + " is already attached on " + other.origin());
                }
            }
            specs.add(spec);
        }
        if (!specs.isEmpty()) {
            c = c.withAttachments(specs);
        }
        return c;
    }

    /** Seconds, fractional allowed, returned in milliseconds (at least 1). */
    public static long seconds(String v) {
        try {
            double d = Double.parseDouble(v);
            // NaN passed "d <= 0 || d > 86400", and below a millisecond the result was 0: a zero timeout
            // (a handshake deadline that closes every connection at once, a stop that waits for nothing).
            if (!(d >= 0.001) || d > 86400) {
                throw new IllegalArgumentException("'" + v + "' must be between 0.001 and 86400 seconds");
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
