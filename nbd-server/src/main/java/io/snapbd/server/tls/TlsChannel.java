package io.snapbd.server.tls;

import javax.net.ssl.SSLEngine;
import javax.net.ssl.SSLEngineResult;
import javax.net.ssl.SSLException;
import javax.net.ssl.SSLSession;
import java.io.EOFException;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.ByteChannel;
import java.nio.channels.ClosedChannelException;
import java.nio.channels.GatheringByteChannel;

/**
 * A blocking TLS channel over a connected socket channel, driven by one SSLEngine, for either side: the server
 * ({@link #accept}) and snapbd's own NBD client ({@link #connect}). One thread reads while
 * others write (writers serialise among themselves; the NBD connection already does so with its send lock):
 * reads and writes have separate locks and buffers, and SSLEngine allows wrap and unwrap at the same time.
 * The encrypted and decrypted buffers are allocated once per connection, sized from the session; nothing is
 * allocated per read or write in steady state.
 * <p>
 * Small writes are gathered: plaintext is copied into one record's worth of buffer and sealed into a record only
 * when that is full or the bytes must go out, because JSSE's cost is mostly per record (and per socket write), not
 * per byte. Writes from the thread named by {@link #deferWritesOf} (the server's request loop, which answers the
 * requests it reads) are sent when that thread next has to wait for the socket in {@link #read}, when
 * {@value #RECORDS_PER_WRITE} records are ready, or at close: a burst of pipelined requests then costs one record
 * and one socket write for all its small replies. Writes from any other thread are sent before write returns,
 * together with anything gathered before them.
 */
public final class TlsChannel implements ByteChannel, GatheringByteChannel {

    /** Records gathered before one socket write, and room for as many in one socket read. */
    private static final int RECORDS_PER_WRITE = 4;
    private static final int RECORDS_PER_READ = 4;
    /** The most plaintext one TLS record carries (RFC 8446 5.1, RFC 5246 6.2.1). */
    private static final int MAX_FRAGMENT = 1 << 14;

    private final ByteChannel net;
    private final SSLEngine engine;
    private final Object readLock = new Object();
    private final Object writeLock = new Object();
    private ByteBuffer netIn;       // encrypted bytes read, not yet unwrapped (read mode)
    private ByteBuffer appIn;       // decrypted bytes not yet handed to the reader (read mode)
    private ByteBuffer netOut;      // encrypted records not sent yet (write mode)
    private final ByteBuffer appOut = ByteBuffer.allocate(MAX_FRAGMENT);   // plaintext not sealed yet (write mode)
    /** The thread whose writes wait for its next blocking read ({@link #deferWritesOf}), or null. */
    private volatile Thread deferred;
    /** Bytes sit in appOut or netOut: a reader about to block sends them first. */
    private volatile boolean pending;
    private final ByteBuffer[] one = new ByteBuffer[1];
    private final ByteBuffer empty = ByteBuffer.allocate(0);
    private volatile boolean closed;

    private TlsChannel(ByteChannel net, SSLEngine engine) {
        this.net = net;
        this.engine = engine;
        SSLSession s = engine.getSession();
        netIn = ByteBuffer.allocate(RECORDS_PER_READ * s.getPacketBufferSize()).flip();
        appIn = ByteBuffer.allocate(s.getApplicationBufferSize()).flip();
        netOut = ByteBuffer.allocate(RECORDS_PER_WRITE * s.getPacketBufferSize());
    }

    /**
     * Runs the TLS handshake over {@code net}, blocking: as the server, or as the client when the engine is in
     * client mode ({@link #connect} checks that). On failure the alert the engine produced
     * (if any) is sent, best effort, and an SSLException (or EOFException) says why; the caller closes {@code net}.
     */
    public static TlsChannel accept(ByteChannel net, SSLEngine engine) throws IOException {
        TlsChannel t = new TlsChannel(net, engine);
        try {
            engine.beginHandshake();
            t.handshake();
        } catch (SSLException e) {
            t.sendAlert();
            throw e;
        }
        return t;
    }

    /**
     * Runs the TLS handshake as the client over {@code net} (an engine in client mode, with the peer's host
     * name for verification), blocking. Failures are reported as in {@link #accept}; the caller closes {@code net}.
     */
    public static TlsChannel connect(ByteChannel net, SSLEngine engine) throws IOException {
        if (!engine.getUseClientMode()) {
            throw new IllegalArgumentException("connect needs an SSLEngine in client mode");
        }
        return accept(net, engine);
    }

    /**
     * Sends close_notify and stops writing; the socket stays open so the peer's last bytes and its own
     * close_notify can still be read. Best effort: the peer may be gone already.
     */
    public void shutdownOutput() {
        sendAlert();
    }

    /** The negotiated protocol and cipher suite, for the log. */
    public String describe() {
        SSLSession s = engine.getSession();
        return s.getProtocol() + " " + s.getCipherSuite();
    }

    /** The client certificate's subject, or null if the client presented none. */
    /** The subject of the client certificate the handshake verified, or null when the client sent none. */
    public javax.security.auth.x500.X500Principal peerPrincipal() {
        try {
            java.security.cert.Certificate[] c = engine.getSession().getPeerCertificates();
            return c.length > 0 && c[0] instanceof java.security.cert.X509Certificate x ? x.getSubjectX500Principal() : null;
        } catch (javax.net.ssl.SSLPeerUnverifiedException e) {
            return null;
        }
    }

    public String peerSubject() {
        try {
            java.security.cert.Certificate[] c = engine.getSession().getPeerCertificates();
            return c.length > 0 && c[0] instanceof java.security.cert.X509Certificate x ? x.getSubjectX500Principal().getName() : null;
        } catch (javax.net.ssl.SSLPeerUnverifiedException e) {
            return null;
        }
    }

    private void handshake() throws IOException {
        while (true) {
            switch (engine.getHandshakeStatus()) {
                case NEED_TASK -> runTasks();
                case NEED_WRAP -> {
                    SSLEngineResult r = engine.wrap(empty, netOut);
                    writeNet();
                    if (r.getStatus() == SSLEngineResult.Status.CLOSED) {
                        throw new SSLException("TLS handshake ended by the engine");
                    }
                }
                case NEED_UNWRAP, NEED_UNWRAP_AGAIN -> {
                    SSLEngineResult r = unwrap();
                    if (r == null) {
                        throw new EOFException("peer closed the connection during the TLS handshake");
                    }
                    if (r.getStatus() == SSLEngineResult.Status.CLOSED) {
                        throw new SSLException("peer closed TLS during the handshake");
                    }
                }
                default -> {
                    return;     // FINISHED / NOT_HANDSHAKING
                }
            }
        }
    }

    private void runTasks() {
        Runnable task;
        while ((task = engine.getDelegatedTask()) != null) {
            task.run();
        }
    }

    /**
     * One unwrap from {@link #netIn}, appending to {@link #appIn}, reading the socket when a whole record is not
     * there yet. Null at the end of the stream.
     */
    private SSLEngineResult unwrap() throws IOException {
        return unwrap(null);
    }

    /** As {@link #unwrap()}, into {@code direct} (in write mode) instead when not null. */
    private SSLEngineResult unwrap(ByteBuffer direct) throws IOException {
        while (true) {
            SSLEngineResult r;
            if (direct != null) {
                r = engine.unwrap(netIn, direct);
            } else {
                appIn.compact();
                try {
                    r = engine.unwrap(netIn, appIn);
                } finally {
                    appIn.flip();
                }
            }
            switch (r.getStatus()) {
                case OK, CLOSED -> {
                    return r;
                }
                case BUFFER_UNDERFLOW -> {
                    if (pending) {
                        flush();        // about to wait for the peer: first send what it may be waiting for
                    }
                    int need = engine.getSession().getPacketBufferSize();
                    if (netIn.capacity() < need) {
                        netIn = ByteBuffer.allocate(need).put(netIn).flip();     // only if the session grows
                    }
                    netIn.compact();
                    int n;
                    try {
                        n = net.read(netIn);
                    } finally {
                        netIn.flip();
                    }
                    if (n < 0) {
                        return null;
                    }
                }
                case BUFFER_OVERFLOW -> {
                    if (direct != null) {
                        return r;       // the caller falls back to appIn
                    }
                    appIn = ByteBuffer.allocate(appIn.remaining() + engine.getSession().getApplicationBufferSize()).put(appIn).flip();
                }
            }
        }
    }

    /**
     * Decrypted bytes into {@code dst}: straight from the record when {@code dst} can hold a whole one (large
     * payloads: one copy less), and then every further whole record already received while {@code dst} has room
     * for one; else through {@link #appIn}. Blocks until at least one byte or the end.
     */
    @Override
    public int read(ByteBuffer dst) throws IOException {
        synchronized (readLock) {
            int produced = 0;
            while (!appIn.hasRemaining()) {
                if (produced > 0 && (dst.remaining() < appIn.capacity() || !wholeRecordIn())) {
                    return produced;
                }
                if (closed) {
                    throw new ClosedChannelException();
                }
                boolean direct = dst.remaining() >= appIn.capacity();
                SSLEngineResult r = direct ? unwrap(dst) : unwrap();
                if (direct && r != null && r.getStatus() == SSLEngineResult.Status.BUFFER_OVERFLOW) {
                    direct = false;
                    r = unwrap();
                }
                if (r == null || r.getStatus() == SSLEngineResult.Status.CLOSED) {
                    return produced > 0 ? produced : -1;    // end of stream, with or without close_notify
                }
                SSLEngineResult.HandshakeStatus hs = r.getHandshakeStatus();
                if (hs == SSLEngineResult.HandshakeStatus.NEED_TASK) {
                    runTasks();
                    hs = engine.getHandshakeStatus();
                }
                if (hs == SSLEngineResult.HandshakeStatus.NEED_WRAP) {
                    // A post-handshake message (TLS 1.3 key update) that needs an answer.
                    synchronized (writeLock) {
                        sealLocked();
                        writeNet();
                        engine.wrap(empty, netOut);
                        writeNet();
                    }
                }
                if (direct) {
                    produced += r.bytesProduced();
                }
            }
            if (produced > 0) {
                return produced;    // appIn's bytes follow them: the next read
            }
            int n = Math.min(appIn.remaining(), dst.remaining());
            int limit = appIn.limit();
            appIn.limit(appIn.position() + n);
            dst.put(appIn);
            appIn.limit(limit);
            return n;
        }
    }

    /** A whole TLS record (5-byte header and the length it gives) is in {@link #netIn}: unwrap will not block. */
    private boolean wholeRecordIn() {
        int p = netIn.position();
        return netIn.remaining() >= 5
                && netIn.remaining() >= 5 + (((netIn.get(p + 3) & 0xff) << 8) | (netIn.get(p + 4) & 0xff));
    }

    @Override
    public int write(ByteBuffer src) throws IOException {
        synchronized (writeLock) {
            one[0] = src;
            try {
                return (int) write(one, 0, 1);
            } finally {
                one[0] = null;
            }
        }
    }

    @Override
    public long write(ByteBuffer[] srcs) throws IOException {
        return write(srcs, 0, srcs.length);
    }

    /**
     * Takes all of {@code srcs}: small pieces are gathered into the current record, whole records are sealed
     * straight from the sources. Sends before returning unless the caller is the {@link #deferWritesOf} thread.
     */
    @Override
    public long write(ByteBuffer[] srcs, int offset, int length) throws IOException {
        synchronized (writeLock) {
            if (closed) {
                throw new ClosedChannelException();
            }
            long taken = 0;
            for (int i = offset; i < offset + length; i++) {
                ByteBuffer src = srcs[i];
                while (src.hasRemaining()) {
                    if (appOut.position() == 0 && remainingBytes(srcs, i, offset + length) >= MAX_FRAGMENT) {
                        int before = src.remaining();
                        taken += wrap(srcs, i, offset + length - i);     // one whole record, no copy
                        if (src.remaining() == before) {
                            break;      // the sources ended inside this one (i moves on)
                        }
                        continue;
                    }
                    if (!appOut.hasRemaining()) {
                        sealLocked();
                    }
                    int n = Math.min(src.remaining(), appOut.remaining());
                    int limit = src.limit();
                    src.limit(src.position() + n);
                    appOut.put(src);
                    src.limit(limit);
                    taken += n;
                }
            }
            if (Thread.currentThread() == deferred) {
                pending = appOut.position() > 0 || netOut.position() > 0;
            } else {
                sealLocked();
                writeNet();
            }
            return taken;
        }
    }

    /**
     * From now on, writes by {@code t} (the thread that reads the requests and answers them) wait until it has to
     * wait for the socket in {@link #read}, or until {@value #RECORDS_PER_WRITE} records are ready, or close. Null
     * turns this off; the next write sends everything.
     */
    public void deferWritesOf(Thread t) {
        deferred = t;
    }

    /** Sends everything written so far. */
    public void flush() throws IOException {
        synchronized (writeLock) {
            sealLocked();
            writeNet();
        }
    }

    /** Seals the gathered plaintext into records in {@link #netOut}. */
    private void sealLocked() throws IOException {
        if (appOut.position() == 0) {
            return;
        }
        appOut.flip();
        try {
            while (appOut.hasRemaining()) {
                one[0] = appOut;
                wrap(one, 0, 1);
            }
        } finally {
            one[0] = null;
            appOut.clear();
        }
    }

    /** One record from {@code srcs} appended to {@link #netOut}, sending the records before it if it has no room. */
    private long wrap(ByteBuffer[] srcs, int offset, int length) throws IOException {
        int packet = engine.getSession().getPacketBufferSize();
        if (netOut.remaining() < packet) {
            writeNet();
            if (netOut.capacity() < packet) {
                netOut = ByteBuffer.allocate(RECORDS_PER_WRITE * packet);   // only if the session grows
            }
        }
        SSLEngineResult r = engine.wrap(srcs, offset, length, netOut);
        if (r.getStatus() == SSLEngineResult.Status.CLOSED) {
            writeNet();
            throw new SSLException("TLS connection closed");
        }
        if (r.getStatus() == SSLEngineResult.Status.BUFFER_OVERFLOW) {
            throw new SSLException("TLS record larger than the session's packet size");
        }
        return r.bytesConsumed();
    }

    private static long remainingBytes(ByteBuffer[] srcs, int from, int to) {
        long n = 0;
        for (int i = from; i < to && n < MAX_FRAGMENT; i++) {
            n += srcs[i].remaining();
        }
        return n;
    }

    /** Sends the records in {@link #netOut} and empties it. */
    private void writeNet() throws IOException {
        pending = appOut.position() > 0;
        netOut.flip();
        try {
            while (netOut.hasRemaining()) {
                net.write(netOut);
            }
        } finally {
            netOut.compact();
        }
    }

    /** Sends the alert a failed handshake left in the engine, if any, ignoring errors: the peer may be gone. */
    private void sendAlert() {
        try {
            synchronized (writeLock) {
                try {
                    sealLocked();   // what was written before the close goes first
                    writeNet();
                } finally {
                    engine.closeOutbound();
                }
                engine.wrap(empty, netOut);
                writeNet();
            }
        } catch (IOException | RuntimeException e) {
            // the peer went away
        }
    }

    @Override
    public boolean isOpen() {
        return !closed && net.isOpen();
    }

    /**
     * Sends close_notify (best effort) and closes the socket. The caller bounds the time a peer that stopped
     * reading could hold the close_notify write, by closing the socket from a timer.
     */
    @Override
    public void close() throws IOException {
        if (closed) {
            return;
        }
        try {
            if (net.isOpen()) {
                sendAlert();
            }
        } finally {
            closed = true;
            net.close();
        }
    }
}
