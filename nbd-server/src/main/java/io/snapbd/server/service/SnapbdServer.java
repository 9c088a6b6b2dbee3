package io.snapbd.server.service;

import io.snapbd.engine.volume.CopyOnWriteWarmUp;
import io.snapbd.engine.snapshot.RestoreMarker;
import io.snapbd.engine.volume.RecoveryReport;
import io.snapbd.engine.volume.RestoreProgress;
import io.snapbd.engine.volume.Volume;
import io.snapbd.engine.volume.VolumeCatalog;
import io.snapbd.engine.volume.VolumeHeader;
import io.snapbd.engine.volume.VolumeSetAsideException;
import io.snapbd.server.Log;
import io.snapbd.server.admin.AdminServer;
import io.snapbd.server.admin.ControlPlane;
import io.snapbd.server.config.AttachSpec;
import io.snapbd.server.config.ServerConfig;
import io.snapbd.server.mirror.NbdLegOpener;
import io.snapbd.server.config.ServiceSettings;
import io.snapbd.server.config.VolumeSpec;
import io.snapbd.nativeio.InheritedSockets;
import io.snapbd.server.config.Sizes;
import io.snapbd.server.export.Export;
import io.snapbd.server.export.ExportName;
import io.snapbd.server.export.ExportRegistry;
import io.snapbd.server.kernel.KernelAttachments;
import io.snapbd.server.snapshot.CloneJobs;
import io.snapbd.server.transport.NbdServer;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.UnixDomainSocketAddress;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;
import java.util.Set;
import java.util.concurrent.CountDownLatch;

/** The running server: data directory, exports, NBD listeners and the admin socket, started and stopped together. */
public final class SnapbdServer implements AutoCloseable {

    private final ServerConfig config;
    private final VolumeCatalog catalog;
    private final ExportRegistry exports = new ExportRegistry();
    private final NbdServer nbd;
    private final CloneJobs clones;
    private final KernelAttachments attachments;
    private AdminServer admin;
    private volatile ServiceSettings service;
    private final Metrics metrics;
    private Systemd.Watchdog watchdog;
    private final CountDownLatch stopped = new CountDownLatch(1);
    private volatile boolean closed;
    /** An in-place restart under way: its successor (before the handover: killed if this server stops). */
    private final java.util.concurrent.atomic.AtomicBoolean restarting = new java.util.concurrent.atomic.AtomicBoolean();
    private volatile Handover.Pending successor;
    private volatile boolean handingOver;
    /** The successor was prepared for a service manager's restart: this server's stop hands over to it. */
    private volatile boolean prepared;
    private volatile boolean handedOver;
    private volatile boolean dumpsArchiveAtExit;
    private volatile ControlPlane control;

    private SnapbdServer(ServerConfig config, ServiceSettings service, VolumeCatalog catalog) {
        this.config = config;
        this.service = service;
        this.catalog = catalog;
        this.nbd = new NbdServer(exports, config.handshakeTimeout(), config.maxConnections());
        this.clones = CloneJobs.online(catalog, exports);
        this.attachments = new KernelAttachments(exports, nbd, config.dataDir());
        this.metrics = new Metrics(catalog, exports, nbd, attachments, clones);
    }

    public static SnapbdServer start(ServerConfig config) throws IOException {
        return start(config, ServiceSettings.DEFAULTS);
    }

    /**
     * Starts everything; under systemd (Type=notify) it reports each step as STATUS and sends READY=1 only once
     * every volume is open (recovered if need be), every listener bound and every configured device attached.
     */
    public static SnapbdServer start(ServerConfig config, ServiceSettings service) throws IOException {
        return start(config, service, null);
    }

    /** As {@link #start(ServerConfig, ServiceSettings)}, with TLS (STARTTLS) on the TCP listeners; null: off. */
    public static SnapbdServer start(ServerConfig config, ServiceSettings service, io.snapbd.server.tls.ServerTls tls) throws IOException {
        return start(config, service, tls, io.snapbd.server.access.AccessRules.OPEN);
    }

    /** As {@link #start(ServerConfig, ServiceSettings, io.snapbd.server.tls.ServerTls)}, with per-export access rules. */
    public static SnapbdServer start(ServerConfig config, ServiceSettings service, io.snapbd.server.tls.ServerTls tls,
                                     io.snapbd.server.access.AccessRules access) throws IOException {
        Systemd.startStep("opening data directory " + config.dataDir(), START_STEP);
        NbdLegOpener.install();         // mirrored volumes may have NBD legs
        VolumeCatalog catalog = VolumeCatalog.open(config.dataDir(), FileSpaces.best());
        TakeoverClock.lap(TakeoverClock.Part.DATA_DIR);
        SnapbdServer s = new SnapbdServer(config, service, catalog);
        s.nbd.setTls(tls);      // before any listener accepts
        s.setAccess(access);
        if (tls != null) {
            Log.info("TLS %s on the TCP listener (STARTTLS; TLS 1.3, 1.2), certificates from %s%s",
                    tls.required() ? "required" : "offered", tls.settings().certificates(),
                    tls.settings().verifyPeer() ? ", client certificates required" : "");
        }
        try {
            s.startUp();
        } catch (IOException | RuntimeException e) {
            s.close();
            throw e;
        }
        return s;
    }

    /** How much longer systemd should wait for the start, renewed at each step (a recovery may be slow). */
    private static final Duration START_STEP = Duration.ofMinutes(5);

    /** Scratch directory of the copy-on-write warm-up, inside the data directory (same file system, same lock). */
    static final String WARM_UP_DIR = "warm-up.tmp";
    /** At most this many rounds; the warm-up usually ends earlier, when the JIT has nothing left to compile. */
    static final int WARM_UP_ROUNDS = 10;
    static final Duration WARM_UP_BUDGET = Duration.ofSeconds(5);

    /**
     * Compiles the copy-on-write path before clients come, so the first snapshot after a start does not pay for
     * the JIT (CopyOnWriteWarmUp). A failure costs only that: it is logged and the start goes on.
     */
    private void warmUpCopyOnWrite() {
        Systemd.startStep("warming up the copy-on-write path", START_STEP);
        try {
            CopyOnWriteWarmUp.Result r = CopyOnWriteWarmUp.run(catalog.root().resolve(WARM_UP_DIR),
                    catalog.space(), WARM_UP_ROUNDS, WARM_UP_BUDGET);
            Log.info("copy-on-write path warmed up: %d rounds, %d writes, %d copies on a scratch volume in %d ms (warm-up = off skips it)",
                    r.rounds(), r.writes(), r.copies(), r.nanos() / 1_000_000);
        } catch (IOException | RuntimeException e) {
            Log.warn("copy-on-write warm-up failed, serving anyway (the first snapshot's writes may be slower): %s", e.getMessage());
        }
    }

    private void startUp() throws IOException {
        if (Adoption.file() == null) {
            Adoption.discard(config.dataDir().resolve(Handover.ADOPTION_FILE));     // left by an adoption that never came
        }
        exports.setLatencyHistograms(service.latencyHistograms());
        if (!service.latencyHistograms()) {
            Log.info("latency histograms are off (latency-histograms = off): stats show counts only");
        }
        createMissing(service.volumes());
        if (catalog.names().isEmpty() && config.defaultVolume() != null) {
            Log.info("empty data directory: creating volume %s (%s, save volume %s)", config.defaultVolume(),
                    Sizes.format(config.defaultVolumeSize()), Sizes.format(config.defaultSaveSize()));
            catalog.create(config.defaultVolume(), config.defaultVolumeSize(), 4096, config.defaultSaveSize(), false);
        }
        List<String> volumeNames = catalog.names();
        for (String name : volumeNames) {
            boolean restoreMarked = RestoreMarker.exists(catalog.volumeDir(name));
            Systemd.startStep((restoreMarked ? "finishing the interrupted restore of volume "
                    : stoppedCleanly(name) ? "opening volume " : "recovering volume ") + name + " ("
                    + (volumeNames.indexOf(name) + 1) + " of " + volumeNames.size() + ")", START_STEP);
            if (restoreMarked) {
                Log.warn("volume %s: a restore was interrupted; finishing it before clients are admitted", name);
            }
            Volume v;
            try {
                v = catalog.open(name);
            } catch (VolumeSetAsideException e) {
                Log.error("volume %s set aside, not exported (the other volumes are served): %s; "
                        + "see 'snapbd fsck' and docs/production.md, \"Volumes set aside\"", name, e.reason());
                exports.withhold(name, "volume " + name + " is set aside: " + e.reason());
                continue;
            }
            RecoveryReport r = v.recovery();
            if (!r.wasClean()) {
                Log.warn("volume %s was not stopped cleanly: rebuilt the meta bit map of %d region(s), %d block(s) marked in use, %d damaged page(s)",
                        name, r.regionsScanned(), r.blocksMarkedInUse(), r.damagedPages());
            }
            Volume.StagedReplay staged = v.stagedReplay();
            if (staged.blocks() > 0) {
                Log.warn("volume %s: wrote again %d block(s) that the previous run had acknowledged and still staged behind a "
                        + "copy-on-write force when it died (kept in its overlay file)", name, staged.blocks());
            }
            if (!v.stagedWritesSurviveKill()) {
                Log.warn("volume %s: its copy-on-write overlay is in the process's memory (%s is not a writable tmpfs; "
                        + "-Dsnapbd.overlay.dir names another): a kill -9 loses writes answered while staged after a "
                        + "snapshot, and a kernel device reconnected afterwards does not know", name,
                        System.getProperty("snapbd.overlay.dir", "/dev/shm"));
            }
            for (String f : staged.notUsed()) {
                Log.warn("volume %s: overlay file not used and deleted: %s", name, f);
            }
            RestoreProgress resumed = v.resumedRestore();
            if (resumed != null) {
                Log.warn("resumed the interrupted restore of volume %s from snapshot %s: %d block(s) changed in %d ms; production is now the snapshot's content",
                        name, resumed.snapshot(), resumed.blocksChanged(), System.currentTimeMillis() - resumed.startedMillis());
            }
            long[] snap = v.snapshots().openReport();
            if (snap[0] + snap[1] + snap[2] > 0) {
                Log.warn("volume %s: snapshot metadata repaired at open: %d stale entries dropped, %d torn log slot(s) cut off, %d entries merged into older snapshots",
                        name, snap[0], snap[1], snap[2]);
            }
            for (String refused : v.snapshots().refusedAtOpen()) {
                Log.warn("volume %s: %s", name, refused);
            }
            ControlPlane.exportVolume(exports, v);
        }
        TakeoverClock.lap(TakeoverClock.Part.VOLUMES);
        if (config.defaultVolume() != null && exports.lookup(config.defaultVolume()) != null) {
            exports.setDefault(config.defaultVolume());
        }
        // Devices kept across a restart wait for this (their I/O is queued in the kernel): first, before READY=1.
        Systemd.startStep("reconnecting kept nbd devices", START_STEP);
        attachments.reconnectRecorded();
        TakeoverClock.lap(TakeoverClock.Part.DEVICES);
        if (service.warmUp() && rehearsed) {
            Log.info("warm-up skipped: this JVM rehearsed its start (and warmed up) before the handover");
        } else if (service.warmUp()) {
            warmUpCopyOnWrite();
            if (nbd.tls() != null) {
                Systemd.startStep("warming up TLS", START_STEP);
                try {
                    Log.info("%s", nbd.tls().warmUp(WARM_UP_BUDGET));
                } catch (IOException | RuntimeException e) {
                    Log.warn("TLS warm-up failed, serving anyway (the first TLS clients may be slower): %s", e.getMessage());
                }
            }
        }
        Systemd.startStep("resuming interrupted clones", START_STEP);
        clones.resumeInterrupted();
        Systemd.startStep("binding listeners", START_STEP);
        boolean tcpPassed = false;
        boolean unixPassed = false;
        for (InheritedSockets.Listener l : InheritedSockets.fromEnvironment()) {
            // A socket systemd passed for a configured address replaces binding it (it is bound already).
            tcpPassed |= config.tcp() != null && l.address() instanceof InetSocketAddress a
                    && a.getPort() == config.tcp().getPort() && Objects.equals(a.getAddress(), config.tcp().getAddress());
            unixPassed |= config.unix() != null && l.address() instanceof UnixDomainSocketAddress u
                    && u.getPath().toAbsolutePath().normalize().equals(config.unix().toAbsolutePath().normalize());
            Log.info("listening on %s", l);
            nbd.listenInherited(l);
        }
        if (config.tcp() != null && !tcpPassed) {
            nbd.listenTcp(config.tcp());
        }
        if (config.unix() != null && !unixPassed) {
            nbd.listenUnix(config.unix());
        }
        TakeoverClock.lap(TakeoverClock.Part.LISTENERS);
        for (AttachSpec spec : config.attachments()) {
            String aside = catalog.setAsideReason(ExportName.parse(spec.export()).volume());
            if (aside != null) {
                // the other volumes' devices are attached all the same
                Log.error("%s: not attaching %s to %s: its volume is set aside: %s", spec.origin(), spec.export(), spec.device(), aside);
                continue;
            }
            KernelAttachments.Attachment kept = attachments.get(spec.device());
            if (kept != null && kept.exportName().equals(spec.export())) {
                continue;       // reconnected above: kept across the restart
            }
            Systemd.startStep("attaching " + spec.export() + " to " + spec.device(), START_STEP);
            try {
                attachments.attach(spec);
            } catch (KernelAttachments.AttachException e) {
                throw new IOException(spec.origin() + ": attach " + spec.export() + " " + spec.device() + ": " + e.getMessage(), e);
            }
        }
        control = new ControlPlane(catalog, exports, nbd, clones, attachments);
        control.onRestart(() -> io.snapbd.server.api.Json.MAPPER.valueToTree(restartInPlace()));
        control.onPrepareRestart(t -> io.snapbd.server.api.Json.MAPPER.valueToTree(prepareRestart(t)));
        admin = new AdminServer(config.adminSocket(), control);
        TakeoverClock.lap(TakeoverClock.Part.ADMIN);
        TakeoverClock.report();
        Log.info("snapbd ready: exports %s on %s; admin socket %s", exports.list().stream().map(Export::name).toList(),
                nbd.listenerNames(), config.adminSocket());
        for (String l : nbd.listenerNames()) {
            Log.info("  connect: %s", hint(l));
        }
        if (service.metrics() != null) {
            metrics.listen(service.metrics());
        }
        Systemd.ready(statusLine());
        watchdog = Systemd.startWatchdog();
    }

    /** For the status line only: a header that cannot be read is reported by the open that follows. */
    private boolean stoppedCleanly(String volume) {
        if (catalog.openVolumes().containsKey(volume)) {
            return true;        // created just now (open, so its header says "not clean")
        }
        try {
            return catalog.header(volume).clean();
        } catch (IOException | RuntimeException e) {
            return true;
        }
    }

    /** One line for systemd's STATUS=: what is served where. */
    public String statusLine() {
        long vols = exports.list().stream().filter(e -> !ExportName.parse(e.name()).isSnapshot()).count();
        Set<String> aside = catalog.setAside().keySet();
        return "serving " + vols + " volume(s), " + (exports.list().size() - vols) + " snapshot export(s) on "
                + String.join(", ", nbd.listenerNames()) + (attachments.size() > 0 ? "; " + attachments.size() + " nbd device(s) attached" : "")
                + (aside.isEmpty() ? "" : "; " + aside.size() + " volume(s) set aside: " + String.join(", ", aside));
    }

    /** Creates the configured volumes that do not exist; an existing one is left as it is, whatever its size. */
    private List<String> createMissing(List<VolumeSpec> specs) throws IOException {
        List<String> created = new ArrayList<>();
        for (VolumeSpec v : specs) {
            if (catalog.exists(v.name())) {
                VolumeHeader h;
                try {
                    h = catalog.header(v.name());
                } catch (IOException e) {
                    continue;       // damaged: its open sets it aside and says why
                }
                if (h.size() != v.size() || h.saveSize() != v.saveSize() || h.blockSize() != v.blockSize()) {
                    Log.warn("%s: volume %s exists with size %s, save volume %s, block size %d: left as it is", v.origin(), v.name(),
                            Sizes.format(h.size()), Sizes.format(h.saveSize()), h.blockSize());
                }
                continue;
            }
            Systemd.startStep("creating volume " + v.name(), START_STEP);
            Log.info("%s: creating volume %s (%s, save volume %s, block size %d%s)", v.origin(), v.name(), Sizes.format(v.size()),
                    Sizes.format(v.saveSize()), v.blockSize(), v.sparse() ? ", sparse" : "");
            catalog.create(v.name(), v.size(), v.blockSize(), v.saveSize(), v.sparse());
            created.add(v.name());
        }
        return created;
    }

    /**
     * Applies what can change while running (a reload, SIGHUP): the handshake timeout, the connection limit, the
     * metrics address, latency histograms on or off, and volumes newly configured (created and exported). Everything else needs a restart and is
     * only reported. Returns one line per change, for the log.
     */
    public synchronized List<String> reload(ServerConfig next, ServiceSettings nextService) throws IOException {
        List<String> changes = new ArrayList<>();
        if (closed) {
            return changes;
        }
        if (!next.handshakeTimeout().equals(nbd.handshakeTimeout()) || next.maxConnections() != nbd.maxConnections()) {
            changes.add("handshake-timeout " + nbd.handshakeTimeout().toMillis() / 1000.0 + " s -> " + next.handshakeTimeout().toMillis() / 1000.0
                    + " s, max-connections " + nbd.maxConnections() + " -> " + next.maxConnections());
            nbd.setLimits(next.handshakeTimeout(), next.maxConnections());
        }
        if (!Objects.equals(nextService.metrics(), service.metrics())) {
            metrics.close();
            if (nextService.metrics() != null) {
                metrics.listen(nextService.metrics());
            }
            changes.add("metrics " + hostPort(service.metrics()) + " -> " + hostPort(nextService.metrics()));
        }
        for (String name : createMissing(nextService.volumes())) {
            ControlPlane.exportVolume(exports, catalog.open(name));
            changes.add("created volume " + name);
        }
        if (nextService.latencyHistograms() != service.latencyHistograms()) {
            exports.setLatencyHistograms(nextService.latencyHistograms());
            changes.add("latency-histograms " + (service.latencyHistograms() ? "on" : "off") + " -> "
                    + (nextService.latencyHistograms() ? "on" : "off"));
        }
        if (!nextService.stopTimeout().equals(service.stopTimeout())) {
            changes.add("stop-timeout " + service.stopTimeout().toSeconds() + " s -> " + nextService.stopTimeout().toSeconds() + " s");
        }
        boolean warmUpChanged = nextService.warmUp() != service.warmUp();
        service = nextService;
        List<String> restart = new ArrayList<>();
        if (warmUpChanged) {
            restart.add("warm-up");     // it only runs at start
        }
        if (!next.dataDir().toAbsolutePath().equals(config.dataDir().toAbsolutePath())) {
            restart.add("data-dir");
        }
        if (!Objects.equals(next.tcp(), config.tcp())) {
            restart.add("tcp");
        }
        if (!Objects.equals(next.unix(), config.unix())) {
            restart.add("unix");
        }
        if (!Objects.equals(next.adminSocket(), config.adminSocket())) {
            restart.add("admin-socket");
        }
        if (!next.attachments().equals(config.attachments())) {
            restart.add("attach (use 'snapbd attach' / 'snapbd detach' meanwhile)");
        }
        if (!restart.isEmpty()) {
            Log.warn("reload: changed settings that only take effect at the next start: %s", String.join(", ", restart));
        }
        return changes;
    }

    /**
     * The access rules for new connections (at start and on reload); logs them, and warns about rules that
     * cannot match as the server is set up (certificate rules without TLS or without ca-cert.pem).
     */
    public void setAccess(io.snapbd.server.access.AccessRules access) {
        nbd.setAccess(access);
        if (access.isOpen()) {
            Log.info("access rules: none: every client that reaches a listener may open every export, read-write");
            return;
        }
        for (io.snapbd.server.access.AccessRules.Rule r : access.rules()) {
            Log.info("access rule (%s): %s", r.origin(), r);
        }
        io.snapbd.server.tls.ServerTls t = nbd.tls();
        if (access.usesCertificates() && (t == null || !t.verifiesClientCertificates())) {
            Log.warn("access rules name client certificates, but %s: those rules match no client",
                    t == null ? "TLS is off" : "there is no ca-cert.pem to verify client certificates with");
        }
    }

    private static String hostPort(InetSocketAddress a) {
        return a == null ? "none" : a.getHostString() + ":" + a.getPort();
    }

    /** The TLS settings in force (they change only at a restart). */
    public io.snapbd.server.config.TlsSettings tlsSettings() {
        io.snapbd.server.tls.ServerTls t = nbd.tls();
        return t == null ? io.snapbd.server.config.TlsSettings.OFF : t.settings();
    }

    /** The settings from the configuration file in force (the last reload's). */
    public ServiceSettings service() {
        return service;
    }

    /** The metrics endpoint's bound address, null when off. */
    public InetSocketAddress metricsAddress() {
        return metrics.address();
    }

    private String hint(String listener) {
        String vol = exports.defaultName() == null ? "" : exports.defaultName();
        if (listener.startsWith("unix://")) {
            String path = listener.substring("unix://".length());
            return "nbdinfo 'nbd+unix:///" + vol + "?socket=" + path + "'   |   nbd-client -unix " + path + " /dev/nbd0 -N " + vol;
        }
        String hostPort = listener.substring("tcp://".length());
        int colon = hostPort.lastIndexOf(':');
        String host = hostPort.substring(0, colon).replace("[", "").replace("]", "");
        io.snapbd.server.tls.ServerTls tls = nbd.tls();
        if (tls != null && tls.required()) {
            return "nbdinfo 'nbds://" + hostPort + "/" + vol + "?tls-certificates=" + tls.settings().certificates() + "'";
        }
        return "nbdinfo nbd://" + hostPort + "/" + vol + "   |   nbd-client " + host + " "
                + hostPort.substring(colon + 1) + " /dev/nbd0 -N " + vol;
    }

    public ExportRegistry exports() {
        return exports;
    }

    public NbdServer nbd() {
        return nbd;
    }

    public void awaitStop() throws InterruptedException {
        stopped.await();
    }

    /** True once {@link #close} has begun (a stop, or the handover of an in-place restart). */
    public boolean isClosed() {
        return closed;
    }

    public KernelAttachments attachments() {
        return attachments;
    }

    /** In the data directory: the scratch directory of a successor's rehearsal (never a volume, never locked). */
    static final String REHEARSAL_DIR = "successor.tmp";
    /** This JVM has run {@link #rehearse}: the real start skips the warm-up the rehearsal did. */
    private static volatile boolean rehearsed;

    /**
     * In the successor of an in-place restart, before the handover: runs a whole start and stop on a scratch data
     * directory with one small volume, its own Unix listener and admin socket (no TCP, no devices, no metrics, no
     * sd_notify), with one client round trip (write, flush, read), so the classes of the start, of the serving
     * and of the stop are loaded and the copy-on-write path warmed up while the predecessor still serves. A
     * failure is returned (the successor then refuses to take over), with the scratch directory removed.
     */
    public static void rehearse(ServerConfig real, ServiceSettings service, io.snapbd.server.tls.ServerTls tls) throws IOException {
        Path dir = real.dataDir().resolve(REHEARSAL_DIR);
        deleteTree(dir);
        // a TCP listener too when the real start binds one (loopback, any port: its accept path is not the Unix one's)
        InetSocketAddress tcp = real.tcp() == null ? null : new InetSocketAddress(java.net.InetAddress.getLoopbackAddress(), 0);
        ServerConfig c = new ServerConfig(dir, tcp, dir.resolve("nbd.sock"), dir.resolve("admin.sock"), real.handshakeTimeout(),
                real.maxConnections(), "rehearsal", 16L << 20, 16L << 20);
        ServiceSettings s = new ServiceSettings(null, service.logLevel(), service.stopTimeout(), List.of(),
                service.latencyHistograms(), service.warmUp());
        Log.Level level = Log.level();
        Log.setLevel(Log.Level.WARN);
        rehearsed = false;
        try (SnapbdServer server = start(c, s, tls, io.snapbd.server.access.AccessRules.OPEN)) {
            try (io.snapbd.server.client.NbdClient client = io.snapbd.server.client.NbdClient.connect(
                    io.snapbd.server.client.NbdUri.unix(c.unix(), "rehearsal"))) {
                java.nio.ByteBuffer b = java.nio.ByteBuffer.allocateDirect(4096);
                for (int i = 0; i < 64; i++) {
                    b.clear();
                    b.putLong(0, i);
                    client.write((long) i * 4096, b, false);
                    client.flush();
                    b.clear();
                    client.read((long) i * 4096, b);
                }
            }
            // the admin path (JSON, the status answer) is the first thing `snapbd restart` asks the successor for
            java.nio.channels.SocketChannel admin = io.snapbd.server.admin.AdminClient.connect(c.adminSocket());
            if (admin == null) {
                throw new IOException("the rehearsal's admin socket " + c.adminSocket() + " does not answer");
            }
            try {
                io.snapbd.server.admin.AdminClient.call(admin, io.snapbd.server.api.Json.MAPPER.createObjectNode().put("command", "status"));
            } catch (io.snapbd.server.api.OperationException e) {
                throw new IOException("the rehearsal's status request failed: " + e.getMessage(), e);
            }
            Log.warmUp();
            warmUpAfterHandoverPaths(dir);
            rehearsed = true;
        } finally {
            Log.setLevel(level);
            deleteTree(dir);
        }
    }

    /**
     * What the real start after the handover uses and a rehearsal does not (it has no devices and notifies no
     * one): the sd_notify path (its first STATUS= after the handover took 0.2 s under User-Mode Linux, most of
     * the "data directory opened" part) and the netlink queries of the recorded devices' checks. Neither changes
     * anything: the datagram goes to a scratch path where nothing listens, the netlink query only asks for
     * /dev/nbd0's status (and fails harmlessly where the nbd module is not loaded).
     */
    private static void warmUpAfterHandoverPaths(Path scratchDir) {
        io.snapbd.nativeio.SdNotify.warmUp(scratchDir.resolve("notify-warm-up.sock"));
        try (io.snapbd.nativeio.NbdNetlink nl = io.snapbd.nativeio.NbdNetlink.open()) {
            nl.connected(0);
        } catch (IOException | RuntimeException e) {
            // no nbd module, or no /dev/nbd0: the classes are loaded all the same
        }
    }

    private static void deleteTree(Path dir) throws IOException {
        if (!java.nio.file.Files.exists(dir)) {
            return;
        }
        try (java.util.stream.Stream<Path> s = java.nio.file.Files.walk(dir)) {
            for (Path p : s.sorted(java.util.Comparator.reverseOrder()).toList()) {
                java.nio.file.Files.deleteIfExists(p);
            }
        }
    }

    /** True once this server passed the data directory to its successor (the in-place restart's go was sent). */
    public boolean handedOver() {
        return handedOver;
    }

    /**
     * This JVM writes a class data sharing archive when it exits (-XX:ArchiveClassesAtExit: bin/snapbd asks for one
     * when none exists for the jar). Known once an in-place restart began: asked then, while this server still
     * serves, so the answer costs the successor nothing after the handover.
     */
    public boolean dumpsClassArchiveAtExit() {
        return dumpsArchiveAtExit;
    }

    private static boolean archiveClassesAtExit() {
        try {
            com.sun.management.HotSpotDiagnosticMXBean hotspot = java.lang.management.ManagementFactory
                    .getPlatformMXBean(com.sun.management.HotSpotDiagnosticMXBean.class);
            return hotspot != null && !hotspot.getVMOption("ArchiveClassesAtExit").getValue().isEmpty();
        } catch (RuntimeException e) {
            return false;       // not HotSpot, or no such option: nothing is dumped
        }
    }

    /** How long a successor may take to start its JVM and rehearse before the in-place restart gives up on it. */
    static final Duration SUCCESSOR_READY_TIMEOUT = Duration.ofMinutes(5);

    /** What {@code snapbd restart} answers: this process, its successor, how long the successor took to be ready. */
    public record InPlaceRestart(long pid, long successorPid, long successorReadyMillis) {
    }

    /**
     * The in-place restart ({@code snapbd restart}, the admin request {@code restart}): starts a successor with this process's command line
     * (the jar read anew) and waits, serving all along, until it is ready to take over; then hands over in the
     * background (MAINPID= to systemd, the stop that keeps the netlink devices, then "go" to the successor, which
     * opens the volumes and reconnects the devices) and returns. If the successor fails before it is ready, it
     * is killed and the error is thrown: this server keeps serving and nothing changed. See docs/kernel-attach.md.
     */
    public InPlaceRestart restartInPlace() throws io.snapbd.server.api.OperationException {
        Handover.Pending p = startReadySuccessor(false, SUCCESSOR_READY_TIMEOUT);
        long ready = p.elapsedMillis();
        Log.info("in-place restart: the successor (pid %d) is ready after %d ms; handing over to it", p.pid(), ready);
        Thread t = new Thread(() -> handOver(p), "handover");
        t.start();
        return new InPlaceRestart(ProcessHandle.current().pid(), p.pid(), ready);
    }

    /** How long a prepared successor waits for this server's stop before it is abandoned (killed). */
    public static final Duration PREPARED_BOUND = Duration.ofSeconds(60);

    /**
     * The first half of a service manager's restart ({@code snapbd restart --prepare}, run by the unit's ExecStop= in a
     * restart job): starts a successor as {@link #restartInPlace} does and returns once it is ready (within
     * {@code readyTimeout}, else it is killed and this server serves on), serving all along;
     * the handover then happens at this server's stop (SIGTERM, which systemd sends next), and the unit's next
     * ExecStart adopts the successor as the main process ({@link Adoption}). Without a stop within
     * {@link #PREPARED_BOUND} the successor is killed and this server goes on as before.
     */
    public InPlaceRestart prepareRestart(Duration readyTimeout) throws io.snapbd.server.api.OperationException {
        Handover.Pending p = startReadySuccessor(true, readyTimeout);
        long ready = p.elapsedMillis();
        prepared = true;
        Log.info("restart prepared: the successor (pid %d) is ready after %d ms; it takes over at this server's stop "
                + "(within %d s, else it is abandoned)", p.pid(), ready, PREPARED_BOUND.toSeconds());
        Systemd.status("restart prepared: pid " + p.pid() + " takes over at the stop; " + statusLine());
        Thread t = new Thread(() -> {
            try {
                Thread.sleep(PREPARED_BOUND.toMillis());
            } catch (InterruptedException e) {
                return;
            }
            synchronized (this) {
                if (closed || successor != p) {
                    return;
                }
                successor = null;
                prepared = false;
                restarting.set(false);
            }
            p.close();
            Log.warn("the prepared successor (pid %d) was not taken over within %d s (no stop came): killed; this server "
                    + "serves on", p.pid(), PREPARED_BOUND.toSeconds());
            Systemd.status(statusLine());
        }, "prepared-restart-bound");
        t.setDaemon(true);
        t.start();
        return new InPlaceRestart(ProcessHandle.current().pid(), p.pid(), ready);
    }

    /** Starts a successor and waits until it is ready; on a failure it is gone and this server serves on. */
    private Handover.Pending startReadySuccessor(boolean forAdoption, Duration readyTimeout) throws io.snapbd.server.api.OperationException {
        if (closed) {
            throw new io.snapbd.server.api.OperationException("the server is stopping");
        }
        String listenFds = System.getenv("LISTEN_FDS");
        if (listenFds != null && !listenFds.isEmpty()) {
            throw new io.snapbd.server.api.OperationException("this server serves sockets passed by systemd (socket activation), "
                    + "which a successor cannot take over: use 'systemctl restart snapbd'");
        }
        if (!restarting.compareAndSet(false, true)) {
            throw new io.snapbd.server.api.OperationException("an in-place restart is already under way");
        }
        dumpsArchiveAtExit = archiveClassesAtExit();
        Handover.Pending p;
        try {
            java.util.List<String> command = Handover.successorCommand(Handover.ownCommandLine(), System.getenv(Handover.LAUNCHER_ENV));
            Log.info("%s: starting a successor (%s); this server serves until it is ready",
                    forAdoption ? "restart job" : "in-place restart", String.join(" ", command));
            Systemd.status((forAdoption ? "preparing the restart" : "in-place restart") + ": starting a successor; " + statusLine());
            p = Handover.start(command, config.dataDir(), forAdoption);
            successor = p;
            if (closed) {
                p.close();
            }
            p.awaitReady(readyTimeout);
        } catch (IOException e) {
            successor = null;
            restarting.set(false);
            Log.error("%s failed, this server keeps serving: %s", forAdoption ? "preparing the restart" : "in-place restart",
                    e.getMessage());
            Systemd.status(statusLine());
            throw new io.snapbd.server.api.OperationException((forAdoption ? "preparing the restart" : "in-place restart")
                    + " failed, the server (pid " + ProcessHandle.current().pid() + ") keeps serving: " + e.getMessage());
        }
        return p;
    }

    /**
     * In a successor adopted by the unit's ExecStart ({@link Adoption}): it is the main process now, so the READY=1
     * muted at its start is sent and the watchdog, which a muted start does not start, is fed from now on.
     */
    public synchronized void adopted() {
        if (closed) {
            return;
        }
        Systemd.ready(statusLine());
        if (watchdog == null) {
            watchdog = Systemd.startWatchdog();
        }
    }

    /** Makes the successor the unit's main process, stops keeping the devices, then lets the successor take over. */
    private void handOver(Handover.Pending p) {
        synchronized (this) {
            if (closed) {
                return;         // a stop came first: close() has killed the successor
            }
            handingOver = true;
        }
        if (Systemd.notifying()) {
            // NotifyAccess=main: only this process may move the main PID; its exit is then no longer the unit's
            Systemd.notify("MAINPID=" + p.pid() + "\nSTATUS=handing over to pid " + p.pid());
            Systemd.mute(true);     // no longer the main process: systemd would refuse (and log) the rest
        }
        attachments.handConnectionsOverAtClose();      // passed to the successor; a device that cannot be is kept
        Duration limit = service.stopTimeout();
        Thread deadline = new Thread(() -> {
            try {
                Thread.sleep(limit.toMillis());
            } catch (InterruptedException e) {
                return;
            }
            Log.error("the stop for the handover did not finish within stop-timeout (%d s): exiting now; the successor "
                    + "recovers the volumes", limit.toSeconds());
            Runtime.getRuntime().halt(1);
        }, "stop-deadline");
        deadline.setDaemon(true);
        deadline.start();
        close();
    }

    /** Stops the admin socket, detaches kernel devices (flush, disconnect), stops listeners and connections, then closes every volume cleanly. */
    @Override
    public synchronized void close() {
        if (closed) {
            return;
        }
        closed = true;
        Handover.Pending next = successor;
        if (next != null && prepared && !handingOver) {
            // the stop of a restart job whose ExecStop= prepared the successor: hand over as in place, but no MAINPID=
            // (systemd would wait for the successor's exit as the main process of the stop): ExecStart adopts it
            handingOver = true;
            Log.info("stopping for the restart: handing over to the prepared successor (pid %d)", next.pid());
            attachments.handConnectionsOverAtClose();
        }
        if (next != null && !handingOver) {
            next.close();       // a successor still starting is abandoned: this is a plain stop
        }
        if (!handingOver) {
            Systemd.stopping("stopping: closing the admin socket and the metrics endpoint");
        }
        long t0 = System.nanoTime();
        metrics.close();
        if (admin != null) {
            admin.close();
        }
        if (attachments.size() > 0) {
            Systemd.status("stopping: detaching " + attachments.size() + " nbd device(s)");
        }
        attachments.close();       // while the connections still serve the flush and the disconnect
        long tDevices = System.nanoTime();
        Systemd.status("stopping: finishing in-flight requests, closing " + nbd.activeConnections() + " connection(s)");
        nbd.close();
        long tConnections = System.nanoTime();
        Systemd.status("stopping: flushing and closing volumes");
        int open = catalog.openVolumes().size();
        try {
            catalog.close();
            Log.info("snapbd stopped; volumes closed cleanly (%d)", open);
        } catch (IOException e) {
            Log.error("snapbd stopped; %s", e.getMessage());
        }
        if (watchdog != null) {
            watchdog.close();
        }
        if (handingOver) {
            Set<String> kept = attachments.keptDevices();
            long tVolumes = System.nanoTime();
            Path adoption = prepared ? config.dataDir().resolve(Handover.ADOPTION_FILE) : null;
            if (adoption != null) {
                try {
                    Adoption.announce(adoption, next.pid());
                } catch (IOException e) {
                    Log.warn("cannot write %s (%s): the unit's next start will not adopt pid %d", adoption, e.getMessage(), next.pid());
                }
            }
            if (next.go(kept, attachments.keptAtMillis(), attachments.handing())) {
                handedOver = true;
                long tSent = System.nanoTime();
                Log.info("handover: go sent %d ms after the stop began (admin socket closed and devices stopped at a request "
                        + "boundary %d ms, connections and listeners closed %d ms, volumes closed %d ms, go and connections sent %d ms)",
                        (tSent - t0) / 1_000_000, (tDevices - t0) / 1_000_000, (tConnections - tDevices) / 1_000_000,
                        (tVolumes - tConnections) / 1_000_000, (tSent - tVolumes) / 1_000_000);
                Log.info("handed over to pid %d (%d device(s) left connected for it: %s); exiting", next.pid(), kept.size(),
                        kept.isEmpty() ? "none" : String.join(", ", new java.util.TreeSet<>(kept)));
            } else {
                Log.error("the successor (pid %d) is gone before the handover; the service manager's restart applies "
                        + "(the devices stay connected for it)", next.pid());
                if (adoption != null) {
                    Adoption.discard(adoption);
                }
            }
        }
        stopped.countDown();
    }
}
