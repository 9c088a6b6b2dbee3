package io.snapbd.server.transport;

import io.snapbd.server.Log;
import io.snapbd.server.export.ExportRegistry;
import io.snapbd.server.handshake.Handshake;
import io.snapbd.server.handshake.Negotiated;
import io.snapbd.server.transmission.Connection;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.StandardProtocolFamily;
import java.net.StandardSocketOptions;
import java.net.UnixDomainSocketAddress;
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
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.ThreadFactory;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Listeners (TCP and Unix sockets) and the connections they accept: one thread per connection, a
 * handshake deadline, a cap on concurrent connections, and a shared pool for FLUSH/FUA work.
 */
public final class NbdServer implements AutoCloseable {

    private final ExportRegistry exports;
    private final Duration handshakeTimeout;
    private final int maxConnections;
    private final List<ServerSocketChannel> listeners = new ArrayList<>();
    private final List<String> listenerNames = new ArrayList<>();
    private final List<Path> unixPaths = new ArrayList<>();
    private final Set<ByteChannel> open = ConcurrentHashMap.newKeySet();
    private final Set<Thread> threads = ConcurrentHashMap.newKeySet();
    private final AtomicInteger active = new AtomicInteger();
    private final AtomicLong accepted = new AtomicLong();
    private final AtomicLong rejected = new AtomicLong();
    private final ScheduledExecutorService timer;
    private final ExecutorService syncPool;
    private volatile boolean closing;

    public NbdServer(ExportRegistry exports, Duration handshakeTimeout, int maxConnections) {
        this.exports = exports;
        this.handshakeTimeout = handshakeTimeout;
        this.maxConnections = maxConnections;
        this.timer = Executors.newSingleThreadScheduledExecutor(daemon("nbd-timer"));
        this.syncPool = Executors.newFixedThreadPool(4, daemon("nbd-sync"));
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
        start(ss, "tcp://" + bound.getHostString() + ":" + bound.getPort());
    }

    public void listenUnix(Path path) throws IOException {
        Files.createDirectories(path.toAbsolutePath().getParent());
        Files.deleteIfExists(path);      // a stale socket from a crashed run; the data-dir lock proves it is ours
        ServerSocketChannel ss = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
        try {
            ss.bind(UnixDomainSocketAddress.of(path), 128);
        } catch (IOException e) {
            ss.close();
            throw new IOException("cannot listen on " + path + ": " + e.getMessage(), e);
        }
        unixPaths.add(path);
        start(ss, "unix://" + path);
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
            serve(ch, ch, peer);
        }
    }

    /**
     * Serves one already-connected channel (a network client or a socket pair end handed to the kernel) on
     * its own thread: handshake, then transmission.
     */
    public void serve(ByteChannel ch, GatheringByteChannel out, String peer) {
        accepted.incrementAndGet();
        active.incrementAndGet();
        open.add(ch);
        Thread t = new Thread(() -> run(ch, out, peer), "nbd " + peer);
        t.setDaemon(true);
        threads.add(t);
        t.start();
    }

    private void run(ByteChannel ch, GatheringByteChannel out, String peer) {
        ScheduledFuture<?> deadline = timer.schedule(() -> {
            Log.warn("%s: handshake not finished within %s; closing", peer, handshakeTimeout);
            closeQuietly(ch);
        }, handshakeTimeout.toMillis(), TimeUnit.MILLISECONDS);
        Negotiated n = null;
        try {
            n = new Handshake(ch, exports).run();
            deadline.cancel(false);
            if (n != null && !closing) {
                n.export().connected();
                try {
                    Log.debug("%s: serving %s", peer, n.export().name());
                    new Connection(ch, out, n, syncPool, peer).serve();
                } finally {
                    n.export().disconnected();
                }
            }
        } catch (IOException e) {
            Log.info("%s: handshake ended: %s", peer, e.getMessage());
        } catch (RuntimeException e) {
            Log.error("%s: internal error: %s", peer, e);
        } finally {
            deadline.cancel(false);
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

    /** Stops accepting, closes every connection and waits (bounded) for their threads to finish. */
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
        for (ByteChannel ch : open) {
            closeQuietly(ch);
        }
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        for (Thread t : threads) {
            long left = deadline - System.nanoTime();
            if (left > 0) {
                try {
                    t.join(TimeUnit.NANOSECONDS.toMillis(left) + 1);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    break;
                }
            }
        }
        syncPool.shutdown();
        try {
            syncPool.awaitTermination(10, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        timer.shutdownNow();
    }
}
