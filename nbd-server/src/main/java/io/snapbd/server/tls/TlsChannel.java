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
 */
public final class TlsChannel implements ByteChannel, GatheringByteChannel {

    /** Records gathered before one socket write, and room for as many in one socket read. */
    private static final int RECORDS_PER_WRITE = 4;
    private static final int RECORDS_PER_READ = 4;

    private final ByteChannel net;
    private final SSLEngine engine;
    private final Object readLock = new Object();
    private final Object writeLock = new Object();
    private ByteBuffer netIn;       // encrypted bytes read, not yet unwrapped (read mode)
    private ByteBuffer appIn;       // decrypted bytes not yet handed to the reader (read mode)
    private ByteBuffer netOut;      // encrypted bytes to send (write mode between uses)
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
                    netOut.clear();
                    SSLEngineResult r = engine.wrap(empty, netOut);
                    netOut.flip();
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
     * payloads: one copy less), else through {@link #appIn}. Blocks until at least one byte or the end.
     */
    @Override
    public int read(ByteBuffer dst) throws IOException {
        synchronized (readLock) {
            while (!appIn.hasRemaining()) {
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
                    return -1;      // end of stream, with or without close_notify
                }
                SSLEngineResult.HandshakeStatus hs = r.getHandshakeStatus();
                if (hs == SSLEngineResult.HandshakeStatus.NEED_TASK) {
                    runTasks();
                    hs = engine.getHandshakeStatus();
                }
                if (hs == SSLEngineResult.HandshakeStatus.NEED_WRAP) {
                    // A post-handshake message (TLS 1.3 key update) that needs an answer.
                    synchronized (writeLock) {
                        netOut.clear();
                        engine.wrap(empty, netOut);
                        netOut.flip();
                        writeNet();
                    }
                }
                if (direct && r.bytesProduced() > 0) {
                    return r.bytesProduced();
                }
            }
            int n = Math.min(appIn.remaining(), dst.remaining());
            int limit = appIn.limit();
            appIn.limit(appIn.position() + n);
            dst.put(appIn);
            appIn.limit(limit);
            return n;
        }
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

    /** Encrypts up to {@value #RECORDS_PER_WRITE} records from {@code srcs} and sends them; returns the bytes taken. */
    @Override
    public long write(ByteBuffer[] srcs, int offset, int length) throws IOException {
        synchronized (writeLock) {
            if (closed) {
                throw new ClosedChannelException();
            }
            long taken = 0;
            int packet = engine.getSession().getPacketBufferSize();
            netOut.clear();
            while (netOut.remaining() >= packet && remaining(srcs, offset, length)) {
                SSLEngineResult r = engine.wrap(srcs, offset, length, netOut);
                taken += r.bytesConsumed();
                if (r.getStatus() == SSLEngineResult.Status.CLOSED) {
                    netOut.flip();
                    writeNet();
                    throw new SSLException("TLS connection closed");
                }
                if (r.getStatus() == SSLEngineResult.Status.BUFFER_OVERFLOW) {
                    if (netOut.position() > 0) {
                        break;
                    }
                    netOut = ByteBuffer.allocate(RECORDS_PER_WRITE * packet);
                }
            }
            netOut.flip();
            writeNet();
            return taken;
        }
    }

    private static boolean remaining(ByteBuffer[] srcs, int offset, int length) {
        for (int i = offset; i < offset + length; i++) {
            if (srcs[i].hasRemaining()) {
                return true;
            }
        }
        return false;
    }

    private void writeNet() throws IOException {
        while (netOut.hasRemaining()) {
            net.write(netOut);
        }
    }

    /** Sends the alert a failed handshake left in the engine, if any, ignoring errors: the peer may be gone. */
    private void sendAlert() {
        try {
            synchronized (writeLock) {
                engine.closeOutbound();
                netOut.clear();
                engine.wrap(empty, netOut);
                netOut.flip();
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
