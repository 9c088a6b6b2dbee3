package io.snapbd.server.kernel;

import io.snapbd.nativeio.FdPassing;
import io.snapbd.nativeio.NativeSocket;
import io.snapbd.nativeio.NbdIoctl;
import io.snapbd.nativeio.NbdNetlink;
import io.snapbd.nativeio.SocketPairs;
import io.snapbd.server.Log;
import io.snapbd.server.api.AttachmentState;
import io.snapbd.server.api.AttachmentStatus;
import io.snapbd.server.api.DetachResult;
import io.snapbd.server.config.AttachSpec;
import io.snapbd.server.export.Export;
import io.snapbd.server.export.ExportRegistry;
import io.snapbd.server.protocol.Nbd;
import io.snapbd.server.transmission.Connection;
import io.snapbd.server.transport.NbdServer;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.regex.Pattern;
import java.util.stream.Stream;

/**
 * Exports attached to the kernel's nbd driver as {@code /dev/nbdN}. Where the kernel offers the {@code nbd}
 * generic-netlink family the device is set up with NBD_CMD_CONNECT ({@link NbdNetlink}): no task is bound to it,
 * and detach is NBD_CMD_DISCONNECT. Otherwise (the fallback) the server makes a
 * socket pair, hands one end to the driver (SET_FLAGS, SET_BLKSIZE, SET_SIZE_BLOCKS, SET_TIMEOUT, SET_SOCK),
 * runs DO_IT on a thread of its own (it blocks until the device is disconnected), and serves the other end
 * with the same transmission code as network clients, entering directly in the transmission phase with
 * simple replies (the driver never negotiates). Detach flushes the device, asks the driver to disconnect
 * (it sends NBD_CMD_DISC), waits for DO_IT to return, then clears the socket and closes the device.
 * See docs/kernel-attach.md.
 * Netlink attachments are recorded ({@link AttachmentRecord}) and, after a restart or a crash, handed a new
 * connection ({@link #reconnectRecorded}).
 * <p>Over 600 lines while both kernel interfaces and the reconnection share one {@link Attachment} lifecycle
 * (state, detach, the end of the served connection, the record).
 */
public final class KernelAttachments implements AutoCloseable {

    /** Bound on the setup ioctls and on the wait for the device to run. */
    private static final Duration SETUP_TIMEOUT = Duration.ofSeconds(30);
    /** Bound on the fsync of the device before a disconnect. */
    private static final Duration FLUSH_TIMEOUT = Duration.ofSeconds(60);
    /** Bound on the wait for DO_IT to return after NBD_DISCONNECT, and again after closing the socket. */
    private static final Duration DISCONNECT_TIMEOUT = Duration.ofSeconds(30);
    /** The driver takes block sizes from 512 up to the page size. */
    private static final int MAX_KERNEL_BLOCK = 4096;
    static final String NETLINK = "netlink";
    static final String IOCTL = "ioctl";
    /** {@code SNAPBD_NBD_INTERFACE=ioctl} in the server's environment skips netlink (the fallback, e.g. to test it). */
    static final String INTERFACE_ENV = "SNAPBD_NBD_INTERFACE";
    /** NBD_ATTR_BACKEND_IDENTIFIER (sysfs {@code /sys/block/nbdN/backend}): "snapbd:" and the export name. */
    public static final String BACKEND_PREFIX = "snapbd:";

    /** NBD_ATTR_DEAD_CONN_TIMEOUT when {@code dead-connection-timeout} is not configured. */
    public static final int DEFAULT_DEAD_CONN_TIMEOUT = 60;
    /** In the data directory: the next stop is a restart, netlink devices stay connected (docs/kernel-attach.md). */
    public static final String KEEP_DEVICES_MARKER = "keep-devices";
    /** Bound on the drain of a kept device's connection at a stop for a restart. */
    private static final Duration KEEP_DRAIN_TIMEOUT = Duration.ofSeconds(10);
    /**
     * Bound on the stop of the kept devices' connections at a request boundary, for handing them over (an in-place
     * restart); a connection that is not there by then is drained and reconnected by the successor instead.
     */
    private static final Duration HAND_OVER_STOP_TIMEOUT = Duration.ofSeconds(2);
    /**
     * SO_RCVTIMEO of the server's end of a netlink device's socket pair: how long an idle connection's reader waits
     * in read() before it looks whether it is asked to stop at a request boundary (an idle device costs a wake-up
     * this often; a stop request waits at most this long for it).
     */
    private static final int IDLE_WAKE_MILLIS = 100;
    /** How long a read of a recorded device may take to fail before the server counts the device as still waiting. */
    private static final Duration GIVEN_UP_PROBE = Duration.ofSeconds(1);

    private static volatile int deadConnTimeoutSeconds = DEFAULT_DEAD_CONN_TIMEOUT;
    /** Devices a predecessor left connected for this process (in-place restart), and when; see {@link #handedOver}. */
    private static volatile Set<String> handedOverDevices = Set.of();
    private static volatile long handedOverAtMillis;
    /** Kernel connections the predecessor passed to this process, by device index; taken by {@link #reconnectRecorded}. */
    private static final Map<Integer, HandedConnection.Received> handedConnections = new ConcurrentHashMap<>();

    private final ExportRegistry exports;
    private final NbdServer nbd;
    /** DATA_DIR/attachments, or null (no records: tests without a data directory). */
    private final Path records;
    private final Path keepMarker;
    private final Map<String, Attachment> attached = new ConcurrentHashMap<>();
    private volatile boolean closing;
    /** The next close keeps the netlink devices, as with the marker (an in-place restart asks so). */
    private volatile boolean keepRequested;
    /** The next close stops the kept devices' connections at a request boundary, to pass them to a successor. */
    private volatile boolean handOverRequested;
    /** What the close stopped at a boundary for the successor, in device order. */
    private final List<Handing> handing = new ArrayList<>();
    /** What the close kept connected, and when it began (for the successor of an in-place restart). */
    private final Set<String> kept = ConcurrentHashMap.newKeySet();
    private volatile long keptAtMillis;

    public KernelAttachments(ExportRegistry exports, NbdServer nbd) {
        this(exports, nbd, null);
    }

    /** With {@code dataDir}: netlink attachments are recorded in DATA_DIR/attachments and survive a restart. */
    public KernelAttachments(ExportRegistry exports, NbdServer nbd, Path dataDir) {
        this.exports = exports;
        this.nbd = nbd;
        this.records = dataDir == null ? null : dataDir.resolve(AttachmentRecord.DIR);
        this.keepMarker = dataDir == null ? null : dataDir.resolve(KEEP_DEVICES_MARKER);
    }

    /**
     * How long the kernel keeps a netlink device, queueing its I/O, while no server is connected (seconds, 0: it
     * fails I/O at once); for attachments made from now on. Config key {@code dead-connection-timeout}.
     */
    public static void setDeadConnectionTimeout(int seconds) {
        if (seconds < 0 || seconds > 86400) {
            throw new IllegalArgumentException("dead-connection-timeout " + seconds + " must be between 0 and 86400 seconds");
        }
        deadConnTimeoutSeconds = seconds;
    }

    public static int deadConnectionTimeout() {
        return deadConnTimeoutSeconds;
    }

    /**
     * In the successor of an in-place restart: the devices its predecessor left connected at {@code keptAtMillis}.
     * Their given-up probe is skipped while less than half their dead-connection timeout has passed since: the
     * kernel cannot have given them up, and the probe's wait (1 s) would be most of the pause.
     */
    public static void handedOver(Set<String> devices, long keptAtMillis) {
        handedOver(devices, keptAtMillis, List.of());
    }

    /**
     * As {@link #handedOver(Set, long)}, with the kernel connections the predecessor passed: their devices are
     * served on them, with no NBD_CMD_RECONFIGURE (the kernel's connection never dropped).
     */
    public static void handedOver(Set<String> devices, long keptAtMillis, List<HandedConnection.Received> connections) {
        handedOverDevices = Set.copyOf(devices);
        handedOverAtMillis = keptAtMillis;
        for (HandedConnection.Received r : connections) {
            HandedConnection.Received old = handedConnections.put(r.connection().device(), r);
            if (old != null) {
                closeFdQuietly(old.fd());
            }
        }
    }

    /** The next {@link #close} keeps the netlink devices connected, as the {@code keep-devices} marker does. */
    public void keepDevicesAtClose() {
        keepRequested = true;
    }

    /**
     * The next {@link #close} keeps the netlink devices and stops their connections at a request boundary, to be
     * passed to the successor ({@link #handing()}); a connection that does not stop within 2 s is drained instead.
     */
    public void handConnectionsOverAtClose() {
        keepRequested = true;
        handOverRequested = true;
    }

    /** After {@link #close}: the kernel connections stopped at a request boundary for the successor, by device. */
    public List<Handing> handing() {
        synchronized (handing) {
            return List.copyOf(handing);
        }
    }

    /**
     * A kernel connection stopped at a request boundary, to be passed to the successor: {@link #release()} once it
     * is passed (or could not be) closes this process's descriptors of the socket without shutting it down.
     */
    public static final class Handing {
        private final String device;
        private final HandedConnection connection;
        private final int fd;
        private final Runnable release;

        /** {@code fd}: the server's end of the socket; {@code release} closes it (and any copy) without a shutdown. */
        public Handing(String device, HandedConnection connection, int fd, Runnable release) {
            this.device = device;
            this.connection = connection;
            this.fd = fd;
            this.release = release;
        }

        public String device() {
            return device;
        }

        public HandedConnection connection() {
            return connection;
        }

        /** The server's end of the socket. */
        public int fd() {
            return fd;
        }

        public void release() {
            release.run();
        }
    }

    /** The devices the close kept connected. */
    public Set<String> keptDevices() {
        return Set.copyOf(kept);
    }

    /** When the close began to keep them (epoch ms), 0 if it kept none. */
    public long keptAtMillis() {
        return keptAtMillis;
    }

    /** A failure whose message is meant for the user as is (one line). */
    public static final class AttachException extends Exception {
        public AttachException(String message) {
            super(message);
        }
    }

    // ---- listing -------------------------------------------------------------------------------------------

    /** The attachments, ordered by device. */
    public List<Attachment> list() {
        return List.copyOf(new TreeMap<>(attached).values());
    }

    public int size() {
        return attached.size();
    }

    // ---- attach --------------------------------------------------------------------------------------------

    /** Attaches and returns once the device runs, or explains in one line why it cannot. */
    public Attachment attach(AttachSpec spec) throws AttachException {
        if (closing) {
            throw new AttachException("the server is stopping");
        }
        String device = spec.device();
        Export export = exports.lookup(spec.export());
        if (export == null || spec.export().isEmpty()) {
            throw new AttachException("no export named " + spec.export() + " (exports: "
                    + String.join(", ", exports.list().stream().map(Export::name).toList()) + ")");
        }
        String unavailable = export.unavailableReason();
        if (unavailable != null) {
            throw new AttachException("export " + export.name() + " is not available: " + unavailable);
        }
        long size = export.device().size();
        int blockSize = Math.min(export.device().blockSize(), MAX_KERNEL_BLOCK);
        if (size <= 0 || size % blockSize != 0) {
            throw new AttachException("export " + export.name() + " has a size of " + size + " bytes, not a multiple of "
                    + blockSize + ": the nbd driver cannot show it");
        }
        Attachment mine = attached.get(device);
        if (mine != null) {
            throw new AttachException(device + " is busy: this server already attached it to " + mine.export.name());
        }
        checkDeviceFree(device);
        boolean readOnly = spec.readOnly() || export.readOnly();
        Attachment a = new Attachment(spec, export, readOnly, size, blockSize);
        Attachment other = attached.putIfAbsent(device, a);
        if (other != null) {
            throw new AttachException(device + " is busy: this server already attached it to " + other.export.name());
        }
        a.start();
        try {
            a.awaitRunning();
        } catch (AttachException e) {
            attached.remove(device, a);
            throw e;
        }
        Log.info("attached %s to %s (%s, %d bytes, block size %d%s)", export.name(), device, readOnly ? "read-only" : "read-write",
                size, blockSize, spec.timeoutSeconds() == null ? "" : ", timeout " + spec.timeoutSeconds() + " s");
        return a;
    }

    /** Refuses a device the driver already runs for someone (it would answer EBUSY or EINVAL later). */
    private static void checkDeviceFree(String device) throws AttachException {
        Path sys = sysBlock(device);
        Path pidFile = sys.resolve("pid");
        if (Files.exists(pidFile)) {
            String pid = readQuietly(pidFile);
            String who = pid.isEmpty() ? "" : " (pid " + pid + processName(pid) + ")";
            throw new AttachException(device + " is busy: it is already connected" + who
                    + "; disconnect it first (snapbd detach, or nbd-client -d " + device + ")");
        }
        if (!Files.exists(Path.of(device)) && !Files.exists(sys)) {
            throw new AttachException(noSuchDevice(device));
        }
    }

    /** N of /dev/nbdN (AttachSpec has checked the name). */
    static int deviceIndex(String device) {
        return Integer.parseInt(device.substring("/dev/nbd".length()));
    }

    /** Turns a refused NBD_CMD_CONNECT into one line that says what to do. */
    static String explainNetlink(String device, IOException e) {
        if (e instanceof NbdNetlink.NetlinkException n) {
            if (n.permissionDenied()) {
                return "permission denied on " + device + ": attaching needs root (CAP_SYS_ADMIN) for the snapbd server";
            }
            if (n.busy()) {
                return device + " is busy: it is already connected; disconnect it first (snapbd detach, or nbd-client -d "
                        + device + ")";
            }
        }
        return device + ": " + e.getMessage();
    }

    static String noSuchDevice(String device) {
        Path module = Path.of("/sys/module/nbd");
        if (Files.isDirectory(module)) {
            long count;
            try (Stream<Path> s = Files.list(Path.of("/sys/block"))) {
                count = s.filter(p -> p.getFileName().toString().matches("nbd[0-9]+")).count();
            } catch (IOException e) {
                count = -1;
            }
            if (count >= 0) {
                long wanted = Long.parseLong(device.substring("/dev/nbd".length())) + 1;
                return "no such device " + device + ": the nbd module has " + count + " device(s); reload it with more: "
                        + "modprobe -r nbd && modprobe nbd nbds_max=" + Math.max(wanted, count * 2);
            }
        }
        return "no such device " + device + ": load the nbd module: modprobe nbd";
    }

    /** Turns a failed ioctl into one line that says what to do. */
    static String explain(String device, IOException e) {
        if (e instanceof NbdIoctl.NbdException n) {
            if (n.noDevice()) {
                return noSuchDevice(device);
            }
            if (n.permissionDenied()) {
                return "permission denied on " + device + ": attaching needs root (CAP_SYS_ADMIN) for the snapbd server ("
                        + e.getMessage() + ")";
            }
            if (n.busy()) {
                return device + " is busy: another process is setting it up or runs it (" + e.getMessage() + ")";
            }
            if (n.invalid() && e.getMessage().startsWith("NBD_SET_SOCK")) {
                return device + " refused the ioctl interface: it is probably connected through netlink by nbd-client; "
                        + "disconnect it with nbd-client -d " + device + " (" + e.getMessage() + ")";
            }
        }
        return device + ": " + e.getMessage();
    }

    // ---- detach --------------------------------------------------------------------------------------------

    /** Flushes, disconnects and releases one attachment; refuses while a file system is mounted, unless forced. */
    public DetachResult detach(String device, boolean force) throws AttachException {
        Attachment a = attached.get(device);
        if (a == null) {
            String pid = readQuietly(sysBlock(device).resolve("pid"));
            if (!pid.isEmpty()) {
                throw new AttachException(device + " is not attached by this server: it is connected by pid " + pid + processName(pid)
                        + "; if that is nbd-client, use nbd-client -d " + device);
            }
            List<String> mine = new ArrayList<>(new TreeMap<>(attached).keySet());
            throw new AttachException(device + " is not attached" + (mine.isEmpty() ? " (nothing is attached)" : " (attached: "
                    + String.join(", ", mine) + ")"));
        }
        if (!force) {
            List<String> mounts = mountPoints(device);
            if (!mounts.isEmpty()) {
                throw new AttachException(device + " is mounted on " + String.join(", ", mounts)
                        + ": unmount it first, or detach --force (the file system then gets I/O errors)");
            }
        }
        long t0 = System.nanoTime();
        boolean flushed = a.detach("detach requested");
        return new DetachResult(device, a.export.name(), true, flushed, (System.nanoTime() - t0) / 1_000_000);
    }

    /** The attachment of {@code device}, or null. */
    public Attachment get(String device) {
        return attached.get(device);
    }

    /**
     * Detaches everything (server shutdown): flush, disconnect, wait; bounded. When the data directory holds the
     * {@code keep-devices} marker (a restart: see docs/kernel-attach.md) netlink devices are left connected
     * instead: their records stay, the kernel queues their I/O for up to the dead-connection timeout, and the next
     * start hands them a new connection. The marker is consumed.
     */
    @Override
    public void close() {
        closing = true;
        boolean keep = keepRequested;
        if (keepMarker != null) {
            try {
                keep |= Files.deleteIfExists(keepMarker);
            } catch (IOException e) {
                Log.warn("%s: %s", keepMarker, e.getMessage());
            }
        }
        List<Thread> workers = new ArrayList<>();
        List<Attachment> kept = new ArrayList<>();
        keptAtMillis = System.currentTimeMillis();
        List<Attachment> stopping = new ArrayList<>();
        for (Attachment a : attached.values()) {
            if (keep && NETLINK.equals(a.kernelInterface) && a.dead > 0) {
                a.keeping = true;
                Connection c = a.connection;
                if (handOverRequested && c != null) {
                    // Handed over: stopped after the last whole request, every request read answered, socket intact.
                    a.handingOver = true;
                    c.stopAtBoundary();
                    stopping.add(a);
                } else {
                    a.drain();
                }
                Log.info("keeping %s (%s) connected for the restart: the kernel queues its I/O for up to %d s", a.spec.device(),
                        a.export.name(), a.dead);
                kept.add(a);
                this.kept.add(a.spec.device());
                continue;
            }
            if (keep) {
                Log.warn("%s (%s) cannot stay connected across a restart (%s): detaching it", a.spec.device(), a.export.name(),
                        NETLINK.equals(a.kernelInterface) ? "dead-connection timeout 0" : "ioctl attachment");
            }
            Thread t = new Thread(() -> {
                if (!mountPoints(a.spec.device()).isEmpty()) {
                    Log.warn("%s is still mounted (%s): disconnecting it anyway; the file system will see I/O errors",
                            a.spec.device(), String.join(", ", mountPoints(a.spec.device())));
                }
                a.detach("server stopping");
            }, "nbd-detach " + a.spec.device());
            t.setDaemon(true);
            t.start();
            workers.add(t);
        }
        long stopBy = System.nanoTime() + HAND_OVER_STOP_TIMEOUT.toNanos();
        for (Attachment a : stopping) {
            Duration left = Duration.ofNanos(Math.max(0, stopBy - System.nanoTime()));
            byte[] readAhead = a.awaitEnd(left) ? a.connection.handedOver() : null;
            if (readAhead == null) {
                Log.warn("%s (%s): its connection did not stop at a request boundary within %d ms; not handed over: drained, "
                        + "the successor reconnects it (NBD_CMD_RECONFIGURE)", a.spec.device(), a.export.name(),
                        HAND_OVER_STOP_TIMEOUT.toMillis());
                a.handingOver = false;
                a.drain();
                continue;
            }
            Log.info("%s (%s): stopped at a request boundary with %d byte(s) read ahead; to be handed over", a.spec.device(),
                    a.export.name(), readAhead.length);
            synchronized (handing) {
                handing.add(new Handing(a.spec.device(),
                        new HandedConnection(a.export.name(), deviceIndex(a.spec.device()), a.readOnly, readAhead),
                        a.serverEndFd(), a::releaseHandedOver));
            }
        }
        for (Attachment a : kept) {
            // the connection answers what it has read, then ends (the server's stop would otherwise close it first)
            if (!a.awaitEnd(KEEP_DRAIN_TIMEOUT)) {
                Log.warn("%s: the connection did not drain within %d s; closing it (the kernel resends what it had sent "
                        + "when its request timer fires)", a.spec.device(), KEEP_DRAIN_TIMEOUT.toSeconds());
            }
        }
        long deadline = System.nanoTime() + FLUSH_TIMEOUT.plus(DISCONNECT_TIMEOUT).plus(DISCONNECT_TIMEOUT).toNanos();
        for (Thread t : workers) {
            try {
                t.join(Math.max(1, TimeUnit.NANOSECONDS.toMillis(deadline - System.nanoTime())));
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                return;
            }
        }
    }

    // ---- records and reconnection after a restart ------------------------------------------------------------

    /**
     * At start, once the volumes are exported and before READY=1: every recorded device that the kernel still
     * holds for this export (NBD_CMD_STATUS connected, sysfs backend = the recorded identifier) and has not given
     * up on gets a new socket pair through NBD_CMD_RECONFIGURE; the kernel then resends what the dead connection
     * left unanswered. Any other record is dropped and logged: a device the kernel gave up is not resurrected.
     */
    public void reconnectRecorded() {
        if (records == null) {
            return;
        }
        try {
            Files.deleteIfExists(keepMarker);       // a marker left by a stop that never came
        } catch (IOException e) {
            Log.warn("%s: %s", keepMarker, e.getMessage());
        }
        List<Path> files;
        try {
            files = AttachmentRecord.files(records);
        } catch (IOException e) {
            Log.error("cannot list %s: %s; recorded devices are not reconnected", records, e.getMessage());
            return;
        }
        // Every device's probe runs at once, so the probe's wait is paid once, not once per device.
        List<Probed> probed = new ArrayList<>();
        for (Path f : files) {
            AttachmentRecord r;
            try {
                r = AttachmentRecord.read(f);
            } catch (IOException e) {
                Log.error("%s; its device is not reconnected (snapbd fsck reports it; delete the file once the device "
                        + "is released)", e.getMessage());
                continue;
            }
            try {
                Probed p = check(r);
                if (p != null) {
                    probed.add(p);
                }
            } catch (RuntimeException e) {
                Log.error("%s: reconnecting %s failed: %s", f, r.device(), e);
                dropRecord(r.index());
            }
        }
        long waitUntil = System.nanoTime() + GIVEN_UP_PROBE.toNanos();
        for (Probed p : probed) {
            try {
                reconnect(p, Duration.ofNanos(Math.max(0, waitUntil - System.nanoTime())));
            } catch (RuntimeException e) {
                Log.error("reconnecting %s failed: %s", p.record().device(), e);
                dropRecord(p.record().index());
            }
        }
        for (HandedConnection.Received left : handedConnections.values()) {
            // no record (or a dropped one) for it: nobody serves it; closing it ends the kernel's connection
            Log.warn("/dev/nbd%d (%s): the predecessor handed over its connection but it has no usable record here; closing it",
                    left.connection().device(), left.connection().export());
            closeFdQuietly(left.fd());
        }
        handedConnections.clear();
    }

    /** A record whose device the kernel still holds for its export, with the given-up probe started. */
    private record Probed(AttachmentRecord record, Export export, ReadProbe probe) {
    }

    /** The checks of a record before its probe; null when the record was dropped. */
    private Probed check(AttachmentRecord r) {
        String device = r.device();
        String backend;
        boolean connected;
        try (NbdNetlink nl = NbdNetlink.open()) {
            connected = nl.connected(r.index());
        } catch (IOException e) {
            Log.warn("%s (%s) not reconnected: %s; dropping its record", device, r.export(), e.getMessage());
            dropRecord(r.index());
            return null;
        }
        backend = readQuietly(sysBlock(device).resolve("backend"));
        if (!connected || !backend.equals(r.backend())) {
            Log.warn("%s (%s) not reconnected: the kernel %s; dropping its record", device, r.export(), !connected
                    ? "no longer has it connected (disconnected, or the dead-connection timeout ended it)"
                    : "runs it for another backend ('" + backend + "', recorded '" + r.backend() + "')");
            dropRecord(r.index());
            return null;
        }
        Export export = exports.lookup(r.export());
        String why = export == null ? "no export named " + r.export() : export.unavailableReason();
        if (why == null && (export.device().size() != r.sizeBytes()
                || Math.min(export.device().blockSize(), MAX_KERNEL_BLOCK) != r.blockSize())) {
            why = "its size or block size changed (" + export.device().size() + " bytes, recorded " + r.sizeBytes() + ")";
        }
        if (why != null) {
            Log.error("%s (%s) cannot be served any more: %s; disconnecting it (its file system gets I/O errors)", device,
                    r.export(), why);
            disconnectQuietly(r.index());
            dropRecord(r.index());
            return null;
        }
        // A device whose dead-connection timeout expired while I/O waited has failed that I/O and marked itself
        // disconnected, although it is still configured: a read then fails at once, where a device still waiting
        // for its server holds the read until the new connection comes. A device the predecessor handed over
        // moments ago cannot have been given up: no probe (null).
        long since = System.currentTimeMillis() - handedOverAtMillis;
        if (handedOverDevices.contains(device) && since >= 0 && since < r.deadConnTimeoutSeconds() * 500L) {
            return new Probed(r, export, null);
        }
        HandedConnection.Received stale = handedConnections.remove(r.index());
        if (stale != null) {
            Log.warn("%s (%s): the connection the predecessor passed is too old to trust (%d ms); reconnecting instead",
                    device, r.export(), since);
            closeFdQuietly(stale.fd());
        }
        return new Probed(r, export, ReadProbe.start(device, r.blockSize()));
    }

    /** Reconnects a checked record's device unless its probe read ends within {@code probeWait} (given up). */
    private void reconnect(Probed p, Duration probeWait) {
        AttachmentRecord r = p.record();
        Export export = p.export();
        ReadProbe probe = p.probe();
        String device = r.device();
        if (probe != null && probe.await(probeWait)) {
            Log.warn("%s (%s) not reconnected: the kernel gave it up (%s); disconnecting it and dropping its record", device,
                    r.export(), probe.outcome());
            disconnectQuietly(r.index());
            dropRecord(r.index());
            return;
        }
        AttachSpec spec = new AttachSpec(r.export(), device, r.readOnly(), r.timeoutSeconds() > 0 ? r.timeoutSeconds() : null,
                r.origin());
        Attachment a = new Attachment(spec, export, r.readOnly(), r.sizeBytes(), r.blockSize());
        a.dead = r.deadConnTimeoutSeconds();
        HandedConnection.Received handed = handedConnections.remove(r.index());
        if (attached.putIfAbsent(device, a) != null) {
            if (handed != null) {
                closeFdQuietly(handed.fd());
            }
            return;
        }
        if (handed != null) {
            HandedConnection h = handed.connection();
            if (h.export().equals(r.export()) && h.readOnly() == r.readOnly()) {
                a.adoptHandedOver(handed.fd(), h.readAhead());
                Log.info("serving %s on %s on the connection the predecessor handed over (%d byte(s) read ahead by it; no "
                        + "NBD_CMD_RECONFIGURE: the kernel's connection never dropped)", export.name(), device, h.readAhead().length);
                return;
            }
            Log.warn("%s: the predecessor handed over a connection for %s (%s), the record says %s (%s): reconnecting instead",
                    device, h.export(), h.readOnly() ? "read-only" : "read-write", r.export(), r.readOnly() ? "read-only" : "read-write");
            closeFdQuietly(handed.fd());
        }
        try (NbdNetlink nl = NbdNetlink.open()) {
            a.reconfigureNetlink(nl, r.index());
        } catch (IOException e) {
            a.fail("NBD_CMD_RECONFIGURE: " + e.getMessage());
        }
        if (a.state == AttachmentState.FAILED) {
            attached.remove(device, a);
            Log.error("%s (%s) not reconnected: %s; disconnecting it", device, r.export(), a.ended.getNow(""));
            disconnectQuietly(r.index());
            dropRecord(r.index());
            return;
        }
        if (probe != null && probe.await(SETUP_TIMEOUT) && !probe.succeeded()) {
            Log.warn("%s (%s): the kernel gave it up just before the new connection came (%s): detaching it", device,
                    r.export(), probe.outcome());
            a.detach("given up by the kernel");
            return;
        }
        Log.info("reconnected %s to %s (kept across the restart; NBD_CMD_RECONFIGURE%s)", export.name(), device,
                probe == null ? "; handed over by the predecessor, no given-up probe" : "");
    }

    private void dropRecord(int index) {
        if (records == null) {
            return;
        }
        try {
            AttachmentRecord.delete(records, index);
        } catch (IOException e) {
            Log.warn("cannot remove %s: %s", AttachmentRecord.file(records, index), e.getMessage());
        }
    }

    private static void disconnectQuietly(int index) {
        try (NbdNetlink nl = NbdNetlink.open()) {
            nl.disconnect(index);
        } catch (IOException e) {
            Log.warn("/dev/nbd%d: NBD_CMD_DISCONNECT: %s", index, e.getMessage());
        }
    }

    // ---- helpers -------------------------------------------------------------------------------------------

    static Path sysBlock(String device) {
        return Path.of("/sys/block", Path.of(device).getFileName().toString());
    }

    private static String readQuietly(Path p) {
        try {
            return Files.readString(p, StandardCharsets.UTF_8).strip();
        } catch (IOException e) {
            return "";
        }
    }

    private static String processName(String pid) {
        String comm = readQuietly(Path.of("/proc", pid, "comm"));
        return comm.isEmpty() ? "" : ", " + comm;
    }

    /** Where the device (or one of its partitions) is mounted, from /proc/self/mounts. */
    static List<String> mountPoints(String device) {
        List<String> result = new ArrayList<>();
        List<String> lines;
        try {
            lines = Files.readAllLines(Path.of("/proc/self/mounts"), StandardCharsets.UTF_8);
        } catch (IOException e) {
            return result;
        }
        for (String line : lines) {
            String[] f = line.split(" ");
            if (f.length < 2) {
                continue;
            }
            String src = f[0];
            if (src.equals(device) || src.matches(Pattern.quote(device) + "p[0-9]+")) {
                result.add(f[1].replace("\\040", " "));
            }
        }
        return result;
    }

    // ---- one attachment ------------------------------------------------------------------------------------

    /** One device: its socket pair, the DO_IT thread and the server side connection. */
    public final class Attachment {
        final AttachSpec spec;
        final Export export;
        final boolean readOnly;
        final long size;
        final int blockSize;
        final int flags;
        final Instant since = Instant.now();
        private final CompletableFuture<Void> setUp = new CompletableFuture<>();
        private final CompletableFuture<String> ended = new CompletableFuture<>();
        private volatile SocketPairs.SocketPair pair;
        private volatile AttachmentState state = AttachmentState.ATTACHING;
        private volatile boolean detaching;
        private volatile String kernelInterface;
        /** NBD_ATTR_DEAD_CONN_TIMEOUT given to the kernel (netlink only). */
        volatile int dead = deadConnTimeoutSeconds;
        /** The server stops for a restart: the connection ends, the device and its record stay. */
        volatile boolean keeping;
        /** The server stops for an in-place restart and passes this connection on: its socket is not shut down. */
        volatile boolean handingOver;
        /** The served connection (netlink), for a stop at a request boundary. */
        volatile Connection connection;
        /** The server's end when the predecessor passed it (no socket pair of this process), else null. */
        private volatile NativeSocket adopted;
        /** Netlink only: the kernel accepted the socket (a connection ending before that is the failed setup's). */
        private volatile boolean connected;

        Attachment(AttachSpec spec, Export export, boolean readOnly, long size, int blockSize) {
            this.spec = spec;
            this.export = export;
            this.readOnly = readOnly;
            this.size = size;
            this.blockSize = blockSize;
            int f = export.transmissionFlags(false) & 0xffff;
            if (readOnly) {
                f = (f | Nbd.FLAG_READ_ONLY)
                        & ~(Nbd.FLAG_SEND_FUA | Nbd.FLAG_SEND_TRIM | Nbd.FLAG_SEND_WRITE_ZEROES | Nbd.FLAG_SEND_FAST_ZERO);
            }
            this.flags = f;
        }

        /** Netlink when the kernel has the nbd family (set up right here), else the ioctls on a DO_IT thread. */
        void start() {
            NbdNetlink nl = null;
            try {
                if (!IOCTL.equals(System.getenv(INTERFACE_ENV))) {
                    nl = NbdNetlink.open();
                }
            } catch (NbdNetlink.FamilyMissingException e) {
                Log.debug("%s: %s; attaching through the ioctls", spec.device(), e.getMessage());
            } catch (IOException e) {
                Log.warn("%s: generic netlink unusable (%s); attaching through the ioctls", spec.device(), e.getMessage());
            }
            if (nl != null) {
                try (NbdNetlink n = nl) {
                    kernelInterface = NETLINK;
                    connectNetlink(n);
                }
                return;
            }
            kernelInterface = IOCTL;
            Thread t = new Thread(this::run, "nbd-do-it " + spec.device());
            t.setDaemon(true);
            t.start();
        }

        /**
         * The DO_IT thread: every setup ioctl, DO_IT and the release run on this one thread, since the driver
         * binds an ioctl-configured device to the task that set its socket.
         */
        private void run() {
            String device = spec.device();
            int fd;
            try {
                fd = NbdIoctl.openDevice(device);
            } catch (IOException e) {
                fail(explain(device, e));
                return;
            }
            SocketPairs.SocketPair p;
            try {
                p = SocketPairs.create();
            } catch (IOException e) {
                closeDevice(fd);
                fail("cannot create a socket pair for " + device + ": " + e.getMessage());
                return;
            }
            pair = p;
            try {
                NbdIoctl.setFlags(fd, flags);
                NbdIoctl.setBlockSize(fd, blockSize);
                NbdIoctl.setSizeBlocks(fd, size / blockSize);
                if (spec.timeoutSeconds() != null) {
                    NbdIoctl.setTimeout(fd, spec.timeoutSeconds());
                }
                NbdIoctl.setSock(fd, p.first().fd());
            } catch (IOException e) {
                closeQuietly(p);
                closeDevice(fd);
                fail(explain(device, e));
                return;
            }
            nbd.serveTransmission(p.second(), p.second(), export, "kernel " + device, () ->
                    Log.debug("%s: server side of the attachment ended", device));
            state = AttachmentState.ATTACHED;
            setUp.complete(null);
            String reason;
            try {
                NbdIoctl.doIt(fd);          // blocks until the device is disconnected
                reason = "disconnected";
            } catch (IOException e) {
                reason = e.getMessage();
            }
            state = AttachmentState.DETACHED;
            try {
                NbdIoctl.clearQueue(fd);
            } catch (IOException e) {
                Log.debug("%s: NBD_CLEAR_QUE: %s", device, e.getMessage());
            }
            try {
                NbdIoctl.clearSock(fd);
            } catch (IOException e) {
                Log.debug("%s: NBD_CLEAR_SOCK: %s", device, e.getMessage());
            }
            closeDevice(fd);
            closeQuietly(p.first());        // the kernel's end; the server's end is closed by its connection thread
            attached.remove(device, this);
            if (!"disconnected".equals(reason) || !detaching) {
                Log.warn("%s (%s) ended: %s", device, export.name(), reason);
            }
            ended.complete(reason);
        }

        /**
         * NBD_CMD_CONNECT with one end of a socket pair, the other end served like a network client. The kernel
         * takes its own reference on its end; the server keeps its descriptor until the end all the same, because
         * closing a {@link SocketPairs.End} shuts the socket down (for the kernel too). The device
         * ends when the connection does: detach (NBD_CMD_DISCONNECT, the driver shuts the socket) or a broken
         * connection, after which the server disconnects the device itself so that it is released.
         */
        private void connectNetlink(NbdNetlink nl) {
            String device = spec.device();
            SocketPairs.SocketPair p;
            try {
                p = SocketPairs.create();
            } catch (IOException e) {
                fail("cannot create a socket pair for " + device + ": " + e.getMessage());
                return;
            }
            pair = p;
            int index = deviceIndex(device);
            wakeWhenIdle(p.second());
            nbd.serveTransmission(p.second(), p.second(), export, "kernel " + device, null, c -> connection = c,
                    this::netlinkConnectionEnded);
            try {
                nl.connect(new NbdNetlink.ConnectSpec(index, size, blockSize, flags,
                        spec.timeoutSeconds() == null ? 0 : spec.timeoutSeconds(), dead, BACKEND_PREFIX + export.name(),
                        new int[]{p.first().fd()}));
            } catch (IOException e) {
                closeQuietly(p.first());
                closeQuietly(p.second());
                fail(explainNetlink(device, e));
                return;
            }
            connected = true;
            state = AttachmentState.ATTACHED;
            if (records != null) {
                try {
                    new AttachmentRecord(index, export.name(), BACKEND_PREFIX + export.name(), size, blockSize, flags,
                            spec.timeoutSeconds() == null ? 0 : spec.timeoutSeconds(), dead, readOnly,
                            since.toEpochMilli() * 1_000_000L, spec.origin()).write(records);
                } catch (IOException | RuntimeException e) {
                    Log.warn("%s: cannot record the attachment (%s): it will not stay connected across a restart", device,
                            e.getMessage());
                }
            }
            setUp.complete(null);
        }

        /** After a restart: a new socket pair for a device the kernel kept, served like at attach. */
        void reconfigureNetlink(NbdNetlink nl, int index) throws IOException {
            SocketPairs.SocketPair p = SocketPairs.create();
            pair = p;
            kernelInterface = NETLINK;
            wakeWhenIdle(p.second());
            nbd.serveTransmission(p.second(), p.second(), export, "kernel " + spec.device(), null, c -> connection = c,
                    this::netlinkConnectionEnded);
            try {
                nl.reconfigure(index, BACKEND_PREFIX + export.name(), new int[]{p.first().fd()});
            } catch (IOException e) {
                closeQuietly(p.first());
                closeQuietly(p.second());
                throw e;
            }
            connected = true;
            state = AttachmentState.ATTACHED;
            setUp.complete(null);
        }

        /**
         * After an in-place restart: serves the server's end of the device's socket that the predecessor passed,
         * stopped at a request boundary; {@code readAhead} is what it had read beyond it.
         */
        void adoptHandedOver(int fd, byte[] readAhead) {
            NativeSocket s = NativeSocket.adopt(fd);
            adopted = s;
            kernelInterface = NETLINK;
            nbd.serveTransmission(s, s, export, "kernel " + spec.device(), ByteBuffer.wrap(readAhead), c -> connection = c,
                    this::netlinkConnectionEnded);
            connected = true;
            state = AttachmentState.ATTACHED;
            setUp.complete(null);
        }

        /** SO_RCVTIMEO on the server's end: an idle connection's reader sees a stop request (see IDLE_WAKE_MILLIS). */
        private void wakeWhenIdle(SocketPairs.End serverEnd) {
            try {
                serverEnd.setReceiveTimeout(IDLE_WAKE_MILLIS);
            } catch (IOException e) {
                Log.warn("%s: %s; its connection cannot be handed over at an in-place restart unless busy", spec.device(),
                        e.getMessage());
            }
        }

        /**
         * Drain (a restart that reconnects the device): requests already in the socket are still read and answered,
         * then the connection sees end of stream; the kernel's next send fails, so it requeues that request for the
         * new connection instead of leaving it unanswered on this one until its 30 s request timer.
         */
        void drain() {
            try {
                SocketPairs.SocketPair p = pair;
                NativeSocket s = adopted;
                if (p != null) {
                    p.second().shutdownInput();
                } else if (s != null) {
                    s.shutdownInput();
                }
            } catch (IOException e) {
                Log.debug("%s: shutdown(SHUT_RD): %s", spec.device(), e.getMessage());
            }
        }

        /** The server's end of the device's socket. */
        int serverEndFd() {
            NativeSocket s = adopted;
            return s != null ? s.fd() : pair.second().fd();
        }

        /** After the connection was passed to the successor (or could not be): this process's copies go, no shutdown. */
        void releaseHandedOver() {
            try {
                NativeSocket s = adopted;
                if (s != null) {
                    s.closeWithoutShutdown();
                } else {
                    pair.second().closeWithoutShutdown();
                }
            } catch (IOException e) {
                Log.warn("%s: closing the handed-over socket: %s", spec.device(), e.getMessage());
            }
        }

        /** The server side of a netlink attachment ended: detach, or the connection broke. */
        private void netlinkConnectionEnded() {
            String device = spec.device();
            if (!connected) {
                return;
            }
            if (keeping) {
                state = AttachmentState.DETACHED;
                SocketPairs.SocketPair p = pair;
                Connection c = connection;
                if (p != null && adopted == null) {
                    if (handingOver && c != null && c.handedOver() != null) {
                        try {
                            p.first().closeWithoutShutdown();       // the kernel holds its end: it stays connected
                        } catch (IOException e) {
                            Log.debug("%s: %s", device, e.getMessage());
                        }
                    } else {
                        closeQuietly(p.first());
                    }
                }
                attached.remove(device, this);
                ended.complete(handingOver ? "stopped to be handed over" : "kept for the restart");
                return;
            }
            if (!detaching) {
                // the kernel keeps a netlink-configured device until told: release it, as DO_IT returning does
                try (NbdNetlink nl = NbdNetlink.open()) {
                    nl.disconnect(deviceIndex(device));
                } catch (IOException e) {
                    Log.warn("%s: NBD_CMD_DISCONNECT after the connection ended: %s", device, e.getMessage());
                }
            }
            state = AttachmentState.DETACHED;
            if (pair != null) {
                closeQuietly(pair.first());
            }
            dropRecord(deviceIndex(device));
            attached.remove(device, this);
            if (!detaching) {
                Log.warn("%s (%s) ended: the connection ended", device, export.name());
            }
            ended.complete("disconnected");
        }

        private void fail(String message) {
            state = AttachmentState.FAILED;
            setUp.completeExceptionally(new AttachException(message));
            ended.complete(message);
        }

        /** Waits for the setup ioctls, then for the driver to report the device running (its sysfs pid file). */
        void awaitRunning() throws AttachException {
            String device = spec.device();
            long deadline = System.nanoTime() + SETUP_TIMEOUT.toNanos();
            try {
                setUp.get(SETUP_TIMEOUT.toMillis(), TimeUnit.MILLISECONDS);
            } catch (ExecutionException e) {
                throw e.getCause() instanceof AttachException ae ? ae : new AttachException(device + ": " + e.getCause());
            } catch (TimeoutException e) {
                throw new AttachException("setting up " + device + " did not finish within " + SETUP_TIMEOUT.toSeconds() + " s");
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new AttachException("interrupted while attaching " + device);
            }
            Path pidFile = sysBlock(device).resolve("pid");
            boolean sysfs = Files.isDirectory(sysBlock(device));
            long quiet = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(300);
            while (true) {
                if (ended.isDone()) {
                    throw new AttachException("the nbd driver ended " + device + " right away: " + ended.getNow(""));
                }
                if (sysfs ? Files.exists(pidFile) : System.nanoTime() > quiet) {
                    return;
                }
                if (System.nanoTime() > deadline) {
                    detach("it did not start in time");     // do not leave a half-started device behind
                    throw new AttachException(device + " did not start within " + SETUP_TIMEOUT.toSeconds() + " s");
                }
                sleep(20);
            }
        }

        /** Flush, NBD_DISCONNECT, wait for DO_IT; closes the socket if the driver does not let go. True when flushed. */
        synchronized boolean detach(String why) {
            String device = spec.device();
            if (ended.isDone()) {
                return false;
            }
            detaching = true;
            state = AttachmentState.DETACHING;
            boolean flushed = false;
            int fd = -1;
            try {
                fd = NbdIoctl.openDevice(device);      // our own descriptor: the DO_IT thread closes its one at the end
            } catch (IOException e) {
                Log.warn("%s: cannot open it to disconnect (%s); closing the socket", device, e.getMessage());
            }
            if (fd >= 0) {
                final int devFd = fd;
                CompletableFuture<Void> flush = CompletableFuture.runAsync(() -> {
                    try {
                        NbdIoctl.flush(devFd);
                    } catch (IOException e) {
                        throw new RuntimeException(e.getMessage(), e);
                    }
                }, r -> {
                    Thread t = new Thread(r, "nbd-flush " + device);
                    t.setDaemon(true);
                    t.start();
                });
                try {
                    flush.get(FLUSH_TIMEOUT.toMillis(), TimeUnit.MILLISECONDS);
                    flushed = true;
                } catch (ExecutionException e) {
                    Log.warn("%s: flush before disconnect failed: %s", device, e.getCause().getMessage());
                } catch (TimeoutException e) {
                    Log.warn("%s: flush before disconnect did not finish within %d s", device, FLUSH_TIMEOUT.toSeconds());
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
                if (fd >= 0 && !NETLINK.equals(kernelInterface)) {
                    try {
                        NbdIoctl.disconnect(devFd);
                    } catch (IOException e) {
                        Log.warn("%s: %s", device, e.getMessage());
                    }
                }
                if (flush.isDone()) {
                    closeDevice(devFd);
                }       // else the fsync thread still uses it: leave it open rather than close it under the call
            }
            if (NETLINK.equals(kernelInterface)) {
                try (NbdNetlink nl = NbdNetlink.open()) {
                    nl.disconnect(deviceIndex(device));      // the driver sends NBD_CMD_DISC and shuts the socket
                } catch (IOException e) {
                    Log.warn("%s: %s", device, e.getMessage());
                }
            }
            if (!awaitEnd(DISCONNECT_TIMEOUT)) {
                Log.warn("%s: the driver did not end within %d s of the disconnect; closing its socket", device,
                        DISCONNECT_TIMEOUT.toSeconds());
                SocketPairs.SocketPair p = pair;
                if (p != null) {
                    closeQuietly(p.second());     // the connection ends, the driver reads end of stream
                } else if (adopted != null) {
                    closeQuietly(adopted);
                }
                if (!awaitEnd(DISCONNECT_TIMEOUT)) {
                    Log.error("%s: DO_IT still has not returned; leaving it", device);
                    return flushed;
                }
            }
            Log.info("detached %s from %s (%s; %s)", export.name(), device, why, flushed ? "flushed" : "not flushed");
            return flushed;
        }

        private boolean awaitEnd(Duration d) {
            return Futures.endedWithin(ended, d);
        }

        public String device() {
            return spec.device();
        }

        public String exportName() {
            return export.name();
        }

        public AttachmentState state() {
            return state;
        }

        /** What {@code attach} answers and {@code status} lists. */
        public AttachmentStatus status() {
            return new AttachmentStatus(spec.device(), export.name(), readOnly, since.toString(), state, size, blockSize,
                    spec.timeoutSeconds(), flags, spec.origin(), kernelInterface);
        }

        /** "netlink" or "ioctl": how the device was set up. */
        public String kernelInterface() {
            return kernelInterface;
        }
    }

    private static void closeDevice(int fd) {
        try {
            NbdIoctl.closeDevice(fd);
        } catch (IOException e) {
            Log.debug("closing an nbd device: %s", e.getMessage());
        }
    }

    private static void closeFdQuietly(int fd) {
        try {
            FdPassing.close(fd);
        } catch (IOException e) {
            Log.debug("close of fd %d: %s", fd, e.getMessage());
        }
    }

    private static void closeQuietly(AutoCloseable c) {
        if (c == null) {
            return;
        }
        try {
            c.close();
        } catch (Exception e) {
            // already closed
        }
    }

    private static void sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
