package io.snapbd.server.cli;

import io.snapbd.server.Log;
import io.snapbd.server.config.ConfigFile;
import io.snapbd.server.config.ServerConfig;
import io.snapbd.server.server.SnapbdServer;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.Callable;

@Command(name = "serve", mixinStandardHelpOptions = true,
        description = "Run the NBD server in the foreground, logging to stderr. On an empty data directory it creates volume vol0 (1 GiB, 256 MiB save volume).")
final class ServeCommand implements Callable<Integer> {

    @CommandLine.Mixin
    Cli.DataDirOption dataDir;

    @Option(names = "--tcp", paramLabel = "HOST:PORT|none", description = "TCP listener (default 127.0.0.1:10809).")
    String tcp;

    @Option(names = "--unix", paramLabel = "PATH|none", description = "Unix socket listener (default DIR/nbd.sock).")
    String unix;

    @Option(names = "--config", paramLabel = "FILE", description = "Configuration file (key = value lines); command-line options win.")
    Path config;

    @Option(names = "--handshake-timeout", paramLabel = "SECONDS", description = "Close clients that have not finished the handshake by then (default 10).")
    String handshakeTimeout;

    @Option(names = "--max-connections", paramLabel = "N", description = "Refuse connections beyond this many (default 256).")
    Integer maxConnections;

    @Option(names = {"-v", "--verbose"}, description = "Log every connection and refused request.")
    boolean verbose;

    @Override
    public Integer call() throws Exception {
        if (verbose) {
            Log.setLevel(Log.Level.DEBUG);
        }
        ConfigFile file = null;
        if (config != null) {
            try {
                file = ConfigFile.read(config);
            } catch (ConfigFile.ConfigException e) {
                throw new Cli.ExitException(2, e.getMessage());
            }
        }
        Path dir = dataDir.dataDir != null ? dataDir.dataDir
                : file != null && file.dataDir() != null ? Path.of(file.dataDir()) : dataDir.resolve();
        ServerConfig cfg = ServerConfig.defaults(dir);
        try {
            if (file != null) {
                cfg = file.apply(cfg);
            }
        } catch (ConfigFile.ConfigException e) {
            throw new Cli.ExitException(2, e.getMessage());
        }
        try {
            if (tcp != null) {
                cfg = cfg.withTcp(tcp.equals("none") ? null : ServerConfig.parseHostPort(tcp));
            }
            if (unix != null) {
                cfg = cfg.withUnix(unix.equals("none") ? null : Path.of(unix));
            }
            if (handshakeTimeout != null) {
                cfg = cfg.withLimits(Duration.ofMillis(ConfigFile.seconds(handshakeTimeout)), cfg.maxConnections());
            }
            if (maxConnections != null) {
                cfg = cfg.withLimits(cfg.handshakeTimeout(), ConfigFile.positiveInt(String.valueOf(maxConnections)));
            }
        } catch (IllegalArgumentException e) {
            throw new Cli.ExitException(2, e.getMessage());
        }
        if (cfg.tcp() == null && cfg.unix() == null) {
            throw new Cli.ExitException(2, "both listeners are off (--tcp none --unix none): nothing to serve on");
        }
        SnapbdServer server = SnapbdServer.start(cfg);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            Log.info("stopping (signal)");
            server.close();
        }, "shutdown"));
        server.awaitStop();
        return 0;
    }
}
