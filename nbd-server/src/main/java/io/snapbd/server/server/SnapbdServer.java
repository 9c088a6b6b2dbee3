package io.snapbd.server.server;

import io.snapbd.engine.volume.RecoveryReport;
import io.snapbd.engine.volume.Volume;
import io.snapbd.engine.volume.VolumeCatalog;
import io.snapbd.server.Log;
import io.snapbd.server.admin.AdminServer;
import io.snapbd.server.admin.ControlPlane;
import io.snapbd.server.config.ServerConfig;
import io.snapbd.server.config.Sizes;
import io.snapbd.server.export.Export;
import io.snapbd.server.export.ExportRegistry;
import io.snapbd.server.snapshot.CloneJobs;
import io.snapbd.server.transport.NbdServer;

import java.io.IOException;
import java.util.concurrent.CountDownLatch;

/** The running server: data directory, exports, NBD listeners and the admin socket, started and stopped together. */
public final class SnapbdServer implements AutoCloseable {

    private final ServerConfig config;
    private final VolumeCatalog catalog;
    private final ExportRegistry exports = new ExportRegistry();
    private final NbdServer nbd;
    private final CloneJobs clones;
    private AdminServer admin;
    private final CountDownLatch stopped = new CountDownLatch(1);
    private volatile boolean closed;

    private SnapbdServer(ServerConfig config, VolumeCatalog catalog) {
        this.config = config;
        this.catalog = catalog;
        this.nbd = new NbdServer(exports, config.handshakeTimeout(), config.maxConnections());
        this.clones = new CloneJobs(catalog, exports);
    }

    public static SnapbdServer start(ServerConfig config) throws IOException {
        VolumeCatalog catalog = VolumeCatalog.open(config.dataDir(), FileSpaces.best());
        SnapbdServer s = new SnapbdServer(config, catalog);
        try {
            s.startUp();
        } catch (IOException | RuntimeException e) {
            s.close();
            throw e;
        }
        return s;
    }

    private void startUp() throws IOException {
        if (catalog.names().isEmpty() && config.defaultVolume() != null) {
            Log.info("empty data directory: creating volume %s (%s, save volume %s)", config.defaultVolume(),
                    Sizes.format(config.defaultVolumeSize()), Sizes.format(config.defaultSaveSize()));
            catalog.create(config.defaultVolume(), config.defaultVolumeSize(), 4096, config.defaultSaveSize(), false);
        }
        for (String name : catalog.names()) {
            Volume v = catalog.open(name);
            RecoveryReport r = v.recovery();
            if (!r.wasClean()) {
                Log.warn("volume %s was not stopped cleanly: rebuilt the meta bit map of %d region(s), %d block(s) marked in use, %d damaged page(s)",
                        name, r.regionsScanned(), r.blocksMarkedInUse(), r.damagedPages());
            }
            long[] snap = v.snapshots().openReport();
            if (snap[0] + snap[1] + snap[2] > 0) {
                Log.warn("volume %s: snapshot metadata repaired at open: %d stale entries dropped, %d torn records skipped, %d entries merged into older snapshots",
                        name, snap[0], snap[1], snap[2]);
            }
            ControlPlane.exportVolume(exports, v);
        }
        if (config.defaultVolume() != null && exports.lookup(config.defaultVolume()) != null) {
            exports.setDefault(config.defaultVolume());
        }
        clones.resumeInterrupted();
        if (config.tcp() != null) {
            nbd.listenTcp(config.tcp());
        }
        if (config.unix() != null) {
            nbd.listenUnix(config.unix());
        }
        admin = new AdminServer(config.adminSocket(), new ControlPlane(catalog, exports, nbd, clones));
        Log.info("snapbd ready: exports %s on %s; admin socket %s", exports.list().stream().map(Export::name).toList(),
                nbd.listenerNames(), config.adminSocket());
        for (String l : nbd.listenerNames()) {
            Log.info("  connect: %s", hint(l));
        }
    }

    private String hint(String listener) {
        String vol = exports.defaultName() == null ? "" : exports.defaultName();
        if (listener.startsWith("unix://")) {
            String path = listener.substring("unix://".length());
            return "nbdinfo 'nbd+unix:///" + vol + "?socket=" + path + "'   |   nbd-client -unix " + path + " /dev/nbd0 -N " + vol;
        }
        String hostPort = listener.substring("tcp://".length());
        int colon = hostPort.lastIndexOf(':');
        return "nbdinfo nbd://" + hostPort + "/" + vol + "   |   nbd-client " + hostPort.substring(0, colon) + " "
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

    /** Stops listeners and connections, then closes every volume cleanly. */
    @Override
    public synchronized void close() {
        if (closed) {
            return;
        }
        closed = true;
        if (admin != null) {
            admin.close();
        }
        nbd.close();
        try {
            catalog.close();
            Log.info("snapbd stopped; volumes closed cleanly");
        } catch (IOException e) {
            Log.error("closing volumes failed: %s", e.getMessage());
        }
        stopped.countDown();
    }
}
