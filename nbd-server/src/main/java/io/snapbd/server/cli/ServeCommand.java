package io.snapbd.server.cli;

import io.snapbd.engine.snapshot.SnapshotSet;
import io.snapbd.nativeio.ProcessExit;
import io.snapbd.server.Log;
import io.snapbd.server.access.AccessRules;
import io.snapbd.server.config.ConfigFile;
import io.snapbd.server.config.ServerConfig;
import io.snapbd.server.config.ServiceSettings;
import io.snapbd.server.config.TlsSettings;
import io.snapbd.server.kernel.KernelAttachments;
import io.snapbd.server.tls.ServerTls;
import io.snapbd.server.service.Adoption;
import io.snapbd.server.service.Handover;
import io.snapbd.server.service.SnapbdServer;
import io.snapbd.server.service.Systemd;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import sun.misc.Signal;
import sun.misc.SignalHandler;

import java.io.IOException;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;
import java.util.concurrent.atomic.AtomicBoolean;

@Command(name = "serve", mixinStandardHelpOptions = true,
        description = {"Run the NBD server in the foreground, logging to stderr. On an empty data directory it creates volume vol0 (1 GiB, 256 MiB save volume).",
                "SIGTERM stops it gracefully (exit 0); SIGHUP re-reads --config for what can change live; 'snapbd restart' restarts it "
                        + "in place. Under systemd it speaks sd_notify "
                        + "and takes sockets passed by socket activation (see docs/production.md)."})
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

    @Option(names = "--latency-histograms", paramLabel = "on|off",
            description = "Per-export request latency histograms for 'snapbd stats' and the metrics endpoint (default on).")
    String latencyHistograms;

    @Option(names = "--warm-up", paramLabel = "on|off",
            description = "Run the copy-on-write path on a scratch volume before taking clients, so the first snapshot's writes are not slowed by the JIT (default on, a few seconds).")
    String warmUp;

    @Option(names = "--snapshot-read-grace", paramLabel = "SECONDS",
            description = "How long deleting or terminating a snapshot waits for reads in flight on its export to finish; "
                    + "after that they are cut off and their connections closed (default 10).")
    String snapshotReadGrace;

    @Option(names = "--tls", paramLabel = "off|on|require",
            description = "STARTTLS on the TCP listener: off (default), on (plain clients still served), require (nothing but "
                    + "STARTTLS before TLS; transmission never in plain text). The Unix socket stays plain (local). See docs/security.md.")
    String tls;

    @Option(names = "--tls-certificates", paramLabel = "DIR",
            description = "Directory with ca-cert.pem, server-cert.pem and server-key.pem (PEM; the key mode 600).")
    Path tlsCertificates;

    @Option(names = "--tls-verify-peer", description = "Require a client certificate signed by DIR/ca-cert.pem.")
    boolean tlsVerifyPeer;

    @Option(names = "--access", paramLabel = "'EXPORT PRINCIPAL ro|rw'",
            description = "An access rule (repeatable; replaces the file's access lines): EXPORT is VOLUME, VOLUME@SNAPSHOT or *, "
                    + "PRINCIPAL cn:NAME, dn:DN, any-cert, loopback, unix or anyone. With any rule, only what a rule grants is "
                    + "listed and opened; without, everything (see docs/security.md).")
    List<String> access;

    @Option(names = {"-v", "--verbose"}, description = "Log every connection and refused request.")
    boolean verbose;

    private volatile SnapbdServer server;
    private final AtomicBoolean stopping = new AtomicBoolean();
    private volatile boolean termWhileStarting;

    /** The configuration built from the file and the command line. */
    private record Loaded(ServerConfig config, ServiceSettings service, TlsSettings tls, AccessRules access) {
    }

    @Override
    public Integer call() throws Exception {
        Loaded loaded = load();
        applyLogLevel(loaded.service());
        ServerConfig cfg = loaded.config();
        if (cfg.tcp() == null && cfg.unix() == null && System.getenv("LISTEN_FDS") == null) {
            throw new Cli.ExitException(2, "both listeners are off (--tcp none --unix none): nothing to serve on");
        }
        // Before the start, so a SIGTERM that comes while volumes are being recovered stops the server once
        // they are open, instead of killing the JVM halfway.
        ServerTls serverTls;
        try {
            serverTls = ServerTls.load(loaded.tls());
        } catch (IOException e) {
            throw new Cli.ExitException(2, e.getMessage());
        }
        boolean handlers = installSignalHandlers();
        ServiceSettings service = loaded.service();
        if (Handover.isSuccessor()) {
            service = takeOver(loaded, serverTls);
        }
        SnapbdServer s;
        try {
            s = SnapbdServer.start(cfg, service, serverTls, loaded.access());
        } catch (IOException | RuntimeException e) {
            Systemd.status("failed to start: " + Cli.message(e));
            throw e;
        }
        server = s;
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            if (!s.isClosed() && stopping.compareAndSet(false, true)) {     // closed: handed over (in-place restart)
                Log.info("stopping (signal)");
                armStopDeadline(s);
                s.close();
            }
        }, "shutdown"));
        if (handlers && termWhileStarting) {
            stopAsync(s, "SIGTERM during the start");
        }
        Path adoption = Handover.isSuccessor() ? Adoption.file() : null;
        if (adoption != null) {
            awaitAdoption(s, adoption);
        }
        s.awaitStop();
        if (s.handedOver() && s.dumpsClassArchiveAtExit()) {
            exitWithoutArchiveDump();
        }
        return 0;
    }

    /**
     * This JVM handed over to its successor and would now write a class data sharing archive
     * (-XX:ArchiveClassesAtExit, about 1 s of CPU) while the successor takes over: it ends with _exit(2) instead.
     * Everything it had to do is done (volumes closed, go sent, connections passed); the archive is written by a JVM
     * that stops (docs/kernel-attach.md, "In-place restart").
     */
    private static void exitWithoutArchiveDump() {
        Log.info("handed over: exiting without writing the class data sharing archive (the successor is taking over)");
        System.out.flush();
        System.err.flush();
        try {
            ProcessExit.now(0);
        } catch (IOException e) {
            Log.warn("cannot exit without the archive dump (%s): exiting as usual", e.getMessage());
        }
    }

    /**
     * The successor of an in-place restart: rehearses the start on a scratch directory, tells the predecessor it is
     * ready, and waits until it has stopped; a failure ends this process (the predecessor keeps serving). The
     * real start that follows skips the warm-up (the rehearsal did it in this JVM).
     */
    private ServiceSettings takeOver(Loaded loaded, ServerTls tls) {
        Systemd.mute(true);
        long t0 = System.nanoTime();
        try {
            SnapbdServer.rehearse(loaded.config(), loaded.service(), tls);
        } catch (IOException | RuntimeException e) {
            throw new Cli.ExitException(1, "successor of an in-place restart: the rehearsal of the start failed, not taking over: "
                    + Cli.message(e));
        }
        long rehearsed = System.nanoTime();
        AtomicBoolean goCame = new AtomicBoolean();
        if (Adoption.file() != null) {
            exitIfNotTakenOver(goCame, loaded.service().stopTimeout());
        }
        Handover.Go go;
        try {
            go = Handover.readyAndAwaitGo();
        } catch (IOException e) {
            throw new Cli.ExitException(1, "successor of an in-place restart: " + Cli.message(e));
        }
        goCame.set(true);
        if (Adoption.file() == null) {
            Systemd.mute(false);        // the predecessor made this process the main one (MAINPID=) before its stop
        }
        KernelAttachments.handedOver(go.devices(), go.keptAtMillis(), go.connections());
        Log.info("taking over from the predecessor (in-place restart): rehearsed the start in %d ms, waited %d ms for its stop; "
                + "devices it left connected: %s; connections it handed over: %d", (rehearsed - t0) / 1_000_000,
                (System.nanoTime() - rehearsed) / 1_000_000,
                go.devices().isEmpty() ? "none" : String.join(", ", new java.util.TreeSet<>(go.devices())), go.connections().size());
        return loaded.service();
    }

    /**
     * The successor of a restart job serves now, silent towards systemd: it tells the unit's ExecStart (bin/snapbd,
     * waiting for it) so through the adoption file, then, once the launcher has sent MAINPID= for it, speaks as the
     * main process (READY=1, the watchdog). In the background: the server serves meanwhile (docs/kernel-attach.md).
     */
    private static void awaitAdoption(SnapbdServer s, Path file) {
        try {
            Adoption.serving(file);
        } catch (IOException e) {
            Log.error("cannot write %s (%s): the service manager cannot adopt this server as its main process", file, e.getMessage());
            return;
        }
        long t0 = System.nanoTime();
        Thread t = new Thread(() -> {
            try {
                if (Adoption.awaitAdopted(file, Adoption.ADOPTER_BOUND)) {
                    Systemd.mute(false);
                    s.adopted();
                    Log.info("adopted by the service manager as the main process %d ms after serving (the unit's ExecStart sent "
                            + "MAINPID=%d)", (System.nanoTime() - t0) / 1_000_000, ProcessHandle.current().pid());
                } else {
                    Log.error("not adopted by the service manager within %d s of serving: still serving, but systemd does not "
                            + "follow this process (systemctl restart snapbd starts over)", Adoption.ADOPTER_BOUND.toSeconds());
                }
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }, "adoption");
        t.setDaemon(true);
        t.start();
    }

    /**
     * A successor prepared for a restart job is not this server's child nor, until adopted, systemd's main process
     * (KillMode=process leaves it alone): if the predecessor's stop never comes (its bound) and the predecessor itself
     * does not end the handover socket, it must not linger. It exits once the predecessor could no longer hand over.
     */
    private static void exitIfNotTakenOver(AtomicBoolean goCame, Duration predecessorStop) {
        Duration bound = SnapbdServer.PREPARED_BOUND.plus(predecessorStop).plusSeconds(30);
        Thread t = new Thread(() -> {
            try {
                Thread.sleep(bound.toMillis());
            } catch (InterruptedException e) {
                return;
            }
            if (!goCame.get()) {
                Log.error("successor of a restart job: not taken over within %d s of being ready: exiting", bound.toSeconds());
                Runtime.getRuntime().halt(1);
            }
        }, "takeover-bound");
        t.setDaemon(true);
        t.start();
    }

    /** Reads the file (if any) and applies the command-line options over it; errors name the file and line. */
    private Loaded load() {
        ConfigFile file = null;
        ServiceSettings service = ServiceSettings.DEFAULTS;
        TlsSettings tlsSettings = TlsSettings.OFF;
        AccessRules accessRules = AccessRules.OPEN;
        if (config != null) {
            try {
                file = ConfigFile.read(config);
                service = file.service();
                tlsSettings = file.tls();
                accessRules = file.access();
                Integer dead = file.deadConnectionTimeout();
                KernelAttachments.setDeadConnectionTimeout(dead == null ? KernelAttachments.DEFAULT_DEAD_CONN_TIMEOUT : dead);
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
            if (snapshotReadGrace != null) {
                try {
                    SnapshotSet.setReaderGrace(Duration.ofMillis(ConfigFile.seconds(snapshotReadGrace)));
                } catch (IllegalArgumentException e) {
                    throw new IllegalArgumentException("--snapshot-read-grace: " + e.getMessage());
                }
            }
            if (latencyHistograms != null) {
                try {
                    service = service.withLatencyHistograms(ServiceSettings.parseOnOff(latencyHistograms));
                } catch (IllegalArgumentException e) {
                    throw new IllegalArgumentException("--latency-histograms: " + e.getMessage());
                }
            }
            if (warmUp != null) {
                try {
                    service = service.withWarmUp(ServiceSettings.parseOnOff(warmUp));
                } catch (IllegalArgumentException e) {
                    throw new IllegalArgumentException("--warm-up: " + e.getMessage());
                }
            }
            if (tls != null) {
                try {
                    tlsSettings = new TlsSettings(TlsSettings.parseMode(tls), tlsSettings.certificates(), tlsSettings.verifyPeer());
                } catch (IllegalArgumentException e) {
                    throw new IllegalArgumentException("--tls: " + e.getMessage());
                }
            }
            if (tlsCertificates != null) {
                tlsSettings = new TlsSettings(tlsSettings.mode(), tlsCertificates, tlsSettings.verifyPeer());
            }
            if (tlsVerifyPeer) {
                tlsSettings = new TlsSettings(tlsSettings.mode(), tlsSettings.certificates(), true);
            }
            tlsSettings.validate();
            if (access != null && !access.isEmpty()) {
                List<AccessRules.Rule> rules = new ArrayList<>();
                for (String a : access) {
                    try {
                        rules.add(AccessRules.parse(a, "--access"));
                    } catch (IllegalArgumentException e) {
                        throw new IllegalArgumentException("--access '" + a + "': " + e.getMessage());
                    }
                }
                accessRules = new AccessRules(rules);
            }
        } catch (IllegalArgumentException e) {
            throw new Cli.ExitException(2, e.getMessage());
        }
        return new Loaded(cfg, service, tlsSettings, accessRules);
    }

    /** -v wins; else the file's log-level; else info. */
    private void applyLogLevel(ServiceSettings service) {
        Log.setLevel(verbose ? Log.Level.DEBUG : service.logLevel() != null ? service.logLevel() : Log.Level.INFO);
    }

    /**
     * SIGTERM: a graceful stop ending in exit status 0 (the JVM's own handler would exit with 143). SIGHUP: reload.
     * SIGINT keeps the JVM's handler, which runs the shutdown hook (the same graceful stop). False when the JVM
     * does not let us handle signals (-Xrs), in which case the shutdown hook still stops the server on SIGTERM.
     */
    private boolean installSignalHandlers() {
        try {
            Signal.handle(new Signal("TERM"), sig -> {
                termWhileStarting = true;       // read by call() after it publishes the server: one of us stops it
                SnapbdServer s = server;
                if (s == null) {
                    Log.info("SIGTERM while starting: stopping as soon as the start is done");
                } else {
                    stopAsync(s, "SIGTERM");
                }
            });
            if (Signal.handle(new Signal("HUP"), sig -> reload()) == SignalHandler.SIG_IGN) {
                // The JVM installs no handler for a signal ignored at start (nohup does that): say so, or a reload
                // sent with kill -HUP would vanish without a trace.
                Log.warn("SIGHUP is ignored by this process (started under nohup?): reload by signal is off; start "
                        + "snapbd with SIGHUP at its default (systemd does; or: env --default-signal=HUP snapbd serve ...)");
            }
            return true;
        } catch (IllegalArgumentException | UnsupportedOperationException e) {
            Log.warn("cannot handle SIGTERM/SIGHUP (%s): SIGTERM stops through the shutdown hook, reload is off", e.getMessage());
            return false;
        }
    }

    private void stopAsync(SnapbdServer s, String why) {
        if (!stopping.compareAndSet(false, true)) {
            return;
        }
        Log.info("stopping (%s)", why);
        Thread t = new Thread(() -> {
            armStopDeadline(s);
            s.close();
        }, "stop");
        t.start();
    }

    /** If the graceful stop takes longer than stop-timeout, exits anyway: the next start recovers the volumes. */
    private void armStopDeadline(SnapbdServer s) {
        Duration limit = s.service().stopTimeout();
        Thread t = new Thread(() -> {
            try {
                Thread.sleep(limit.toMillis());
            } catch (InterruptedException e) {
                return;
            }
            Log.error("the graceful stop did not finish within stop-timeout (%d s): exiting now; volumes not closed cleanly "
                    + "are recovered at the next start", limit.toSeconds());
            Runtime.getRuntime().halt(1);
        }, "stop-deadline");
        t.setDaemon(true);
        t.start();
    }

    /** SIGHUP: re-reads the configuration file and applies what can change live; a bad file changes nothing. */
    private synchronized void reload() {
        SnapbdServer s = server;
        if (s == null || stopping.get()) {
            return;
        }
        Systemd.reloading();
        try {
            if (config == null) {
                Log.warn("reload: the server was started without --config: nothing to re-read");
                return;
            }
            Loaded loaded = load();
            Log.Level before = Log.level();
            applyLogLevel(loaded.service());
            List<String> changes = new ArrayList<>(s.reload(loaded.config(), loaded.service()));
            if (!loaded.access().equals(s.nbd().access())) {
                s.setAccess(loaded.access());
                changes.add("access rules (for new connections): " + loaded.access());
            }
            if (!loaded.tls().equals(s.tlsSettings())) {
                Log.warn("reload: changed settings that only take effect at the next start: tls, tls-certificates, tls-verify-peer");
            }
            if (Log.level() != before) {
                changes.add("log-level " + before.name().toLowerCase() + " -> " + Log.level().name().toLowerCase());
            }
            Log.info("reloaded %s: %s", config, changes.isEmpty() ? "nothing that can change live has changed" : String.join("; ", changes));
        } catch (IOException | RuntimeException e) {
            Log.error("reload of %s failed, the running configuration stays in force: %s", config, Cli.message(e));
        } finally {
            Systemd.ready(s.statusLine());
        }
    }
}
