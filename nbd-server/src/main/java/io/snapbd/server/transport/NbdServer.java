package io.snapbd.server.transport;

import io.snapbd.nativeio.InheritedSockets;
import io.snapbd.nativeio.NativeSocket;
import io.snapbd.nativeio.UnixListeners;
import io.snapbd.server.Log;
import io.snapbd.server.access.AccessRules;
import io.snapbd.server.access.Peer;
import io.snapbd.server.export.Export;
import io.snapbd.server.export.ExportRegistry;
import io.snapbd.server.handshake.Handshake;
import io.snapbd.server.handshake.Negotiated;
import io.snapbd.server.tls.ServerTls;
import io.snapbd.server.tls.TlsChannel;
import io.snapbd.server.transmission.Connection;

import java.io.IOException;
import java.net.ConnectException;
import java.net.Inet6Address;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.net.SocketException;
import java.net.StandardProtocolFamily;
import java.net.StandardSocketOptions;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.ByteChannel;
import java.nio.channels.ClosedChannelException;
import java.nio.channels.GatheringByteChannel;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.ThreadFactory;
import java.util.concurrent.TimeUnit;
import java.util.function.Consumer;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Listeners (TCP and Unix sockets) and the connections they accept: one thread per connection, a
 * handshake deadline, a cap on concurrent connections, and a shared pool for FLUSH/FUA work.
 */
public final class NbdServer implements AutoCloseable {

    private final ExportRegistry exports;
    private volatile Duration handshakeTimeout;      // both may change on reload (setLimits)
    private volatile int maxConnections;
    private final List<ServerSocketChannel> listeners = new ArrayList<>();
    private final List<String> listenerNames = new ArrayList<>();
    private final List<Path> unixPaths = new ArrayList<>();
    private final List<InheritedSockets.Listener> inherited = new CopyOnWriteArrayList<>();
    private final Set<ByteChannel> open = ConcurrentHashMap.newKeySet();
    private final Set<Thread> threads = ConcurrentHashMap.newKeySet();
    private final AtomicInteger active = new AtomicInteger();
    private final AtomicLong accepted = new AtomicLong();
    private final AtomicLong rejected = new AtomicLong();
    private final ScheduledExecutorService timer;
    private final ExecutorService syncPool;
    private volatile boolean closing;
    /** TLS for TCP clients (STARTTLS); null when off. Unix-socket clients are local and stay plain. */
    private volatile ServerTls tls;
    /** Who may open what; read once per connection, so a reload applies to new connections. */
    private volatile AccessRules access = AccessRules.OPEN;

    public NbdServer(ExportRegistry exports, Duration handshakeTimeout, int maxConnections) {
        this.exports = exports;
        this.handshakeTimeout = handshakeTimeout;
        this.maxConnections = maxConnections;
        this.timer = Executors.newSingleThreadScheduledExecutor(daemon("nbd-timer"));
        // Unbounded on purpose: a pool thread answering a client that stopped reading blocks on that client's
        // socket; with a fixed pool such clients would starve every other client's FLUSH and FUA replies.
        this.syncPool = Executors.newCachedThreadPool(daemon("nbd-sync"));
    }

    private static ThreadFactory daemon(String name) {
        AtomicInteger n = new AtomicInteger();
        return r -> {
            Thread t = new Thread(r, name + "-" + n.incrementAndGet());
            t.setDaemon(true);
            return t;
        };
    }

    public void listenTcp(InetSocketAddress address) throws IOException {
        ServerSocketChannel ss = ServerSocketChannel.open();
        ss.setOption(StandardSocketOptions.SO_REUSEADDR, true);
        try {
            ss.bind(address, 128);
        } catch (IOException e) {
            ss.close();
            throw new IOException("cannot listen on " + address.getHostString() + ":" + address.getPort() + ": " + e.getMessage(), e);
        }
        InetSocketAddress bound = (InetSocketAddress) ss.getLocalAddress();
        String host = bound.getAddress() instanceof Inet6Address ? "[" + bound.getHostString() + "]" : bound.getHostString();
        start(ss, "tcp://" + host + ":" + bound.getPort());
    }

    public void listenUnix(Path path) throws IOException {
        Files.createDirectories(path.toAbsolutePath().getParent());
        if (Files.exists(path)) {
            // A socket file is stale only if nobody answers on it: never take over a live server's socket.
            try (SocketChannel probe = SocketChannel.open(StandardProtocolFamily.UNIX)) {
                probe.connect(UnixDomainSocketAddress.of(path));
                throw new IOException("cannot listen on " + path + ": another server is listening there");
            } catch (ConnectException | ClosedChannelException stale) {
                Files.deleteIfExists(path);
            } catch (SocketException stale) {
                Files.deleteIfExists(path);
            }
        }
        // Made through libc, not the JDK: each connection is then a NativeSocket, which can be read without waiting
        // (ReadPolling) and shows its peer's credentials.
        InheritedSockets.Listener l = UnixListeners.listen(path, 128);
        unixPaths.add(path);
        listenInherited(l);
    }

    /**
     * Serves a listening socket passed by systemd (socket activation). It stays systemd's: closing the server
     * only closes this process's descriptor, and connections keep queueing for the next start.
     */
    public void listenInherited(InheritedSockets.Listener l) {
        SocketAddress a = l.address();
        String name = a instanceof InetSocketAddress i
                ? "tcp://" + (i.getAddress() instanceof Inet6Address ? "[" + i.getAddress().getHostAddress() + "]"
                        : i.getAddress().getHostAddress()) + ":" + i.getPort()
                : "unix://" + (a instanceof UnixDomainSocketAddress u ? u.getPath().toString() : String.valueOf(a));
        inherited.add(l);
        listenerNames.add(name);
        Thread t = new Thread(() -> acceptInherited(l, name), "nbd-accept " + name);
        t.setDaemon(true);
        t.start();
    }

    private void acceptInherited(InheritedSockets.Listener l, String name) {
        while (!closing) {
            NativeSocket ch;
            try {
                ch = l.accept(200);         // a short poll, so a stop never has to shut down systemd's socket
            } catch (ClosedChannelException e) {
                return;
            } catch (IOException e) {
                if (!closing) {
                    Log.warn("accept on %s failed: %s", name, e.getMessage());
                    sleepQuietly(100);
                }
                continue;
            }
            if (ch == null) {
                continue;
            }
            SocketAddress remote = ch.remoteAddress();
            String peer = remote instanceof InetSocketAddress a ? a.getHostString() + ":" + a.getPort()
                    : name + "#" + ch.fd();
            if (closing || active.get() >= maxConnections) {
                rejected.incrementAndGet();
                if (!closing) {
                    Log.warn("%s: refused: %d connections already open (limit %d)", peer, active.get(), maxConnections);
                }
                closeQuietly(ch);
                continue;
            }
            try {
                ch.setTcpNoDelay();
            } catch (IOException e) {
                closeQuietly(ch);
                continue;
            }
            serve(ch, ch, peer, name.startsWith("tcp://"),
                    remote instanceof InetSocketAddress a ? Peer.tcp(a.getAddress()) : Peer.unix());
        }
    }

    /** TLS for the TCP listeners, set before they accept; null turns it off. */
    public void setTls(ServerTls tls) {
        this.tls = tls;
    }

    public ServerTls tls() {
        return tls;
    }

    /** The access rules for connections accepted from now on (set before the listeners accept, and on reload). */
    public void setAccess(AccessRules access) {
        this.access = access;
    }

    public AccessRules access() {
        return access;
    }

    /** Changes the limits that can change while running (a reload); open connections keep going. */
    public void setLimits(Duration handshakeTimeout, int maxConnections) {
        this.handshakeTimeout = handshakeTimeout;
        this.maxConnections = maxConnections;
    }

    public Duration handshakeTimeout() {
        return handshakeTimeout;
    }

    public int maxConnections() {
        return maxConnections;
    }

    public List<String> listenerNames() {
        return List.copyOf(listenerNames);
    }

    public int activeConnections() {
        return active.get();
    }

    public long acceptedConnections() {
        return accepted.get();
    }

    public long rejectedConnections() {
        return rejected.get();
    }

    private void start(ServerSocketChannel ss, String name) {
        listeners.add(ss);
        listenerNames.add(name);
        Thread t = new Thread(() -> acceptLoop(ss, name), "nbd-accept " + name);
        t.setDaemon(true);
        t.start();
    }

    private void acceptLoop(ServerSocketChannel ss, String name) {
        while (!closing) {
            SocketChannel ch;
            try {
                ch = ss.accept();
            } catch (ClosedChannelException e) {
                return;
            } catch (IOException e) {
                if (!closing) {
                    Log.warn("accept on %s failed: %s", name, e.getMessage());
                    sleepQuietly(100);   // e.g. EMFILE: back off instead of spinning
                }
                continue;
            }
            String peer = describePeer(ch, name);
            if (active.get() >= maxConnections) {
                rejected.incrementAndGet();
                Log.warn("%s: refused: %d connections already open (limit %d)", peer, active.get(), maxConnections);
                closeQuietly(ch);
                continue;
            }
            try {
                if (ch.getLocalAddress() instanceof InetSocketAddress) {
                    ch.setOption(StandardSocketOptions.TCP_NODELAY, true);
                }
            } catch (IOException e) {
                closeQuietly(ch);
                continue;
            }
            serve(ch, ch, peer, name.startsWith("tcp://"), describeAccessPeer(ch, name));
        }
    }

    private static Peer describeAccessPeer(SocketChannel ch, String listener) {
        if (!listener.startsWith("tcp://")) {
            return Peer.unix();
        }
        try {
            if (ch.getRemoteAddress() instanceof InetSocketAddress a) {
                return Peer.tcp(a.getAddress());
            }
        } catch (IOException e) {
            // unknown address: no loopback rule matches
        }
        return Peer.tcp(null);
    }

    /**
     * Serves one already-connected channel (a network client or a socket pair end handed to the kernel) on
     * its own thread: handshake, then transmission.
     */
    public void serve(ByteChannel ch, GatheringByteChannel out, String peer) {
        serve(ch, out, peer, false, Peer.internal());
    }

    /** {@code network}: a TCP client, to which the TLS setting applies; {@code who}: the client for the access rules. */
    private void serve(ByteChannel ch, GatheringByteChannel out, String peer, boolean network, Peer who) {
        accepted.incrementAndGet();
        active.incrementAndGet();
        open.add(ch);
        ServerTls t0 = network ? tls : null;
        AccessRules rules = access;
        Thread t = new Thread(() -> run(ch, out, peer, t0, who, rules), "nbd " + peer);
        t.setDaemon(true);
        threads.add(t);
        t.start();
    }

    /**
     * Serves a channel that starts in the transmission phase, with simple replies only: the kernel's nbd
     * driver after the attach ioctls, which never negotiates. Counted, tracked and closed on shutdown like a
     * network connection; {@code onEnd} runs on the connection's thread once it has ended and been closed.
     */
    public void serveTransmission(ByteChannel ch, GatheringByteChannel out, Export export, String peer, Runnable onEnd) {
        serveTransmission(ch, out, export, peer, null, null, onEnd);
    }

    /**
     * As {@link #serveTransmission(ByteChannel, GatheringByteChannel, Export, String, Runnable)}, for a connection
     * that may be handed over at an in-place restart: {@code readAhead} (or null) is served first (a connection
     * handed over by the predecessor), {@code serving} (or null) gets the Connection before it serves (its owner
     * may stop it at a request boundary). A connection that stopped at a boundary is not closed: its owner passes
     * the socket on.
     */
    public void serveTransmission(ByteChannel ch, GatheringByteChannel out, Export export, String peer, ByteBuffer readAhead,
            Consumer<Connection> serving, Runnable onEnd) {
        accepted.incrementAndGet();
        active.incrementAndGet();
        open.add(ch);
        Thread t = new Thread(() -> {
            Connection c = null;
            try {
                if (!closing) {
                    export.connected();
                    try {
                        Log.debug("%s: serving %s", peer, export.name());
                        c = new Connection(ch, out, Negotiated.plain(export), syncPool, peer, readAhead);
                        if (serving != null) {
                            serving.accept(c);
                        }
                        c.serve();
                    } finally {
                        export.disconnected();
                    }
                }
            } catch (RuntimeException e) {
                Log.error("%s: internal error: %s", peer, e);
            } finally {
                if (c == null || c.handedOver() == null) {
                    closeQuietly(ch);
                }
                open.remove(ch);
                active.decrementAndGet();
                threads.remove(Thread.currentThread());
                if (onEnd != null) {
                    onEnd.run();
                }
            }
        }, "nbd " + peer);
        t.setDaemon(true);
        threads.add(t);
        t.start();
    }

    private void run(ByteChannel ch, GatheringByteChannel out, String peer, ServerTls tls, Peer who, AccessRules rules) {
        ScheduledFuture<?> deadline = timer.schedule(() -> {
            Log.warn("%s: handshake not finished within %s; closing", peer, handshakeTimeout);
            closeQuietly(ch);
        }, handshakeTimeout.toMillis(), TimeUnit.MILLISECONDS);
        Negotiated n = null;
        Handshake h = new Handshake(ch, out, exports, tls, who, rules);
        try {
            n = h.run();
            deadline.cancel(false);
            if (n != null && !closing) {
                n.export().connected();
                try {
                    TlsChannel secure = h.tls();
                    if (secure != null) {
                        secure.deferWritesOf(Thread.currentThread());   // this thread answers what it reads
                        String subject = secure.peerSubject();
                        Log.debug("%s: serving %s%s over %s%s", peer, n.export().name(), n.readOnly() ? " (read-only grant)" : "",
                                secure.describe(), subject == null ? "" : ", client certificate " + subject);
                    } else {
                        Log.debug("%s: serving %s%s", peer, n.export().name(), n.readOnly() ? " (read-only grant)" : "");
                    }
                    new Connection(h.channel(), h.output(), n, syncPool, peer).serve();
                } finally {
                    n.export().disconnected();
                }
            }
        } catch (IOException e) {
            String why = e.getMessage() != null ? e.getMessage() : "connection closed";
            if (e.getCause() instanceof javax.net.ssl.SSLException) {
                Log.warn("%s: refused: %s", peer, why);
            } else {
                Log.info("%s: handshake ended: %s", peer, why);
            }
        } catch (RuntimeException e) {
            Log.error("%s: internal error: %s", peer, e);
        } finally {
            deadline.cancel(false);
            if (h.tls() != null) {
                // close_notify, then the socket; a peer that stopped reading cannot hold this thread past the bound.
                ScheduledFuture<?> bound = timer.schedule(() -> closeQuietly(ch), 5, TimeUnit.SECONDS);
                closeQuietly(h.tls());
                bound.cancel(false);
            }
            closeQuietly(ch);
            open.remove(ch);
            active.decrementAndGet();
            threads.remove(Thread.currentThread());
        }
    }

    private static String describePeer(SocketChannel ch, String listener) {
        try {
            Object remote = ch.getRemoteAddress();
            if (remote instanceof InetSocketAddress a) {
                return a.getHostString() + ":" + a.getPort();
            }
        } catch (IOException e) {
            // fall through
        }
        return listener + "#" + System.identityHashCode(ch);
    }

    private static void closeQuietly(AutoCloseable c) {
        try {
            c.close();
        } catch (Exception e) {
            // already closed
        }
    }

    private static void sleepQuietly(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    /** Bound on the wait for in-flight requests at stop, before connections are closed under them. */
    private static final int DRAIN_SECONDS = 10;

    private static void endInput(ByteChannel ch) {
        try {
            if (ch instanceof SocketChannel sc) {
                sc.shutdownInput();
            } else if (ch instanceof NativeSocket ns) {
                ns.shutdownInput();
            } else {
                ch.close();         // a kernel attachment's socket: detached before, or it cannot be drained
            }
        } catch (IOException e) {
            closeQuietly(ch);
        }
    }

    private void joinConnections(int seconds) {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(seconds);
        for (Thread t : threads) {
            long left = deadline - System.nanoTime();
            if (left <= 0) {
                return;
            }
            try {
                t.join(TimeUnit.NANOSECONDS.toMillis(left) + 1);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                return;
            }
        }
    }

    /**
     * Stops gracefully: stops accepting, lets the requests already received finish and be answered (bounded),
     * then closes every connection and waits (bounded) for their threads to finish.
     */
    @Override
    public void close() {
        closing = true;
        for (ServerSocketChannel ss : listeners) {
            closeQuietly(ss);
        }
        for (Path p : unixPaths) {
            try {
                Files.deleteIfExists(p);
            } catch (IOException e) {
                // leave it
            }
        }
        for (InheritedSockets.Listener l : inherited) {
            closeQuietly(l);
        }
        // Graceful: end the reading side of every connection, so no new request is read while the requests
        // already read are executed and answered (Connection.serve waits for its flushes and queued writes)...
        for (ByteChannel ch : open) {
            endInput(ch);
        }
        joinConnections(DRAIN_SECONDS);
        // ...then close whatever did not finish in time (e.g. a client that stopped reading its replies).
        for (ByteChannel ch : open) {
            closeQuietly(ch);
        }
        joinConnections(5);
        syncPool.shutdown();
        try {
            syncPool.awaitTermination(10, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        timer.shutdownNow();
    }
}
