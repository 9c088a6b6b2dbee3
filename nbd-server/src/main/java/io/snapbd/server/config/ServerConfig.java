package io.snapbd.server.config;

import java.net.InetSocketAddress;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;

/**
 * Everything the server needs to start. {@code tcp} or {@code unix} null means that listener is off.
 * {@code attachments} are the nbd devices the server attaches at start.
 */
public record ServerConfig(Path dataDir, InetSocketAddress tcp, Path unix, Path adminSocket,
                           Duration handshakeTimeout, int maxConnections,
                           String defaultVolume, long defaultVolumeSize, long defaultSaveSize,
                           List<AttachSpec> attachments) {

    public ServerConfig {
        attachments = attachments == null ? List.of() : List.copyOf(attachments);
    }

    /** Without kernel attachments. */
    public ServerConfig(Path dataDir, InetSocketAddress tcp, Path unix, Path adminSocket,
                        Duration handshakeTimeout, int maxConnections,
                        String defaultVolume, long defaultVolumeSize, long defaultSaveSize) {
        this(dataDir, tcp, unix, adminSocket, handshakeTimeout, maxConnections, defaultVolume, defaultVolumeSize,
                defaultSaveSize, List.of());
    }

    public static final int DEFAULT_PORT = 10809;

    public static ServerConfig defaults(Path dataDir) {
        return new ServerConfig(dataDir, new InetSocketAddress("127.0.0.1", DEFAULT_PORT),
                dataDir.resolve("nbd.sock"), dataDir.resolve("admin.sock"), Duration.ofSeconds(10), 256,
                "vol0", 1L << 30, 256L << 20);
    }

    public ServerConfig withTcp(InetSocketAddress a) {
        return new ServerConfig(dataDir, a, unix, adminSocket, handshakeTimeout, maxConnections, defaultVolume, defaultVolumeSize, defaultSaveSize, attachments);
    }

    public ServerConfig withUnix(Path p) {
        return new ServerConfig(dataDir, tcp, p, adminSocket, handshakeTimeout, maxConnections, defaultVolume, defaultVolumeSize, defaultSaveSize, attachments);
    }

    public ServerConfig withLimits(Duration handshake, int maxConn) {
        return new ServerConfig(dataDir, tcp, unix, adminSocket, handshake, maxConn, defaultVolume, defaultVolumeSize, defaultSaveSize, attachments);
    }

    public ServerConfig withAttachments(List<AttachSpec> specs) {
        return new ServerConfig(dataDir, tcp, unix, adminSocket, handshakeTimeout, maxConnections, defaultVolume, defaultVolumeSize, defaultSaveSize, specs);
    }

    /** Parses HOST:PORT, [V6]:PORT, or :PORT (loopback). */
    public static InetSocketAddress parseHostPort(String s) {
        String host;
        String port;
        if (s.startsWith("[")) {
            int close = s.indexOf("]:");
            if (close < 0) {
                throw new IllegalArgumentException("invalid address '" + s + "': use HOST:PORT");
            }
            host = s.substring(1, close);
            port = s.substring(close + 2);
        } else {
            int colon = s.lastIndexOf(':');
            if (colon < 0) {
                throw new IllegalArgumentException("invalid address '" + s + "': use HOST:PORT");
            }
            host = colon == 0 ? "127.0.0.1" : s.substring(0, colon);
            port = s.substring(colon + 1);
        }
        int p;
        try {
            p = Integer.parseInt(port);
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("invalid port in '" + s + "'");
        }
        if (p < 0 || p > 65535) {
            throw new IllegalArgumentException("port " + p + " out of range");
        }
        return new InetSocketAddress(host, p);
    }
}
