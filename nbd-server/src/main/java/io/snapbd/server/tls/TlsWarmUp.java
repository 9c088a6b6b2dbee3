package io.snapbd.server.tls;

import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLEngine;
import javax.net.ssl.SSLEngineResult;
import javax.net.ssl.SSLException;
import javax.net.ssl.SSLParameters;
import javax.net.ssl.TrustManagerFactory;
import java.lang.management.CompilationMXBean;
import java.lang.management.ManagementFactory;
import java.nio.ByteBuffer;
import java.security.GeneralSecurityException;
import java.security.KeyStore;
import java.security.cert.X509Certificate;
import java.time.Duration;

/**
 * Runs the TLS record path in memory at start, before clients come: a server engine from the server's own
 * context and a client engine that trusts the server's certificate do a TLS 1.3 handshake, then exchange
 * records shaped like NBD traffic (small requests, payloads and replies of 512 bytes and, one in 8, 4 KiB: the JIT
 * counts invocations, so many small records warm faster than fewer large ones; and one exchange in
 * {@value #LARGE_EVERY} of 64 KiB each way, in full 16 KiB records, the shape of large writes and reads, whose
 * decryption takes a path of its own through the JDK's AES-GCM) until the JIT has compiled them (a round in which it compiled
 * next to nothing) or the budget is spent; what budget is left waits for the JIT to finish what the rounds queued.
 * <p>
 * Why: on a fresh JVM the AES-GCM code (GHASH, counter mode) and JSSE's record layer run interpreted or in
 * C1 code, without the JIT's AES and GHASH intrinsics, for the first tens of thousands of records: measured
 * here, the first 10 s of TLS traffic after a start ran at a fifth to a half of the rate of the next 10 s,
 * while a native server (nbdkit) has no such phase. Nothing touches the network or a file; no key material
 * leaves the process; a failure is only logged by the caller.
 */
final class TlsWarmUp {

    /** Rounds that always run (budget allowing) before the JIT's quiet may end the warm-up. */
    private static final int MIN_ROUNDS = 5;
    private static final int MAX_ROUNDS = 400;
    /** Request/payload/reply exchanges per round: short, as the first rounds run interpreted. */
    private static final int EXCHANGES = 1000;
    /** A round in which the JIT compiled for less than this found nothing new: the path is warm. */
    private static final long QUIET_COMPILE_MILLIS = 20;
    private static final CompilationMXBean COMPILER = ManagementFactory.getCompilationMXBean();
    /** The most plaintext one record carries; a large exchange moves 4 full records each way. */
    private static final int MAX_FRAGMENT = 1 << 14;
    private static final int LARGE = 4 * MAX_FRAGMENT;
    /** One exchange in this many is a large one (about 8 a round, 72 full records). */
    private static final int LARGE_EVERY = 128;

    /** What the warm-up did, for the log line. */
    record Result(int rounds, long records, long fullRecords, long nanos, String suite) {
    }

    private TlsWarmUp() {
    }

    /**
     * Handshakes and exchanges records between {@code server} (a server-mode engine, without client
     * authentication) and a client engine that trusts {@code serverCert}, for at least {@value #MIN_ROUNDS}
     * rounds (the first always runs) and until the JIT is quiet or {@code budget} is spent.
     */
    static Result run(SSLEngine server, X509Certificate serverCert, Duration budget) throws SSLException {
        long start = System.nanoTime();
        long deadline = start + budget.toNanos();
        SSLEngine client = clientEngine(serverCert, server.getSSLParameters());
        int packet = Math.max(server.getSession().getPacketBufferSize(), client.getSession().getPacketBufferSize());
        int app = Math.max(server.getSession().getApplicationBufferSize(), client.getSession().getApplicationBufferSize());
        ByteBuffer toServer = ByteBuffer.allocate((LARGE / MAX_FRAGMENT + 2) * packet);
        ByteBuffer toClient = ByteBuffer.allocate((LARGE / MAX_FRAGMENT + 2) * packet);
        ByteBuffer serverIn = ByteBuffer.allocateDirect(Math.max(128 << 10, 2 * app));   // as Connection's read-ahead
        ByteBuffer clientIn = ByteBuffer.allocate(2 * app);
        handshake(client, server, toServer, toClient, serverIn, clientIn);

        ByteBuffer request = ByteBuffer.allocate(28);
        ByteBuffer payload = ByteBuffer.allocateDirect(4096);
        ByteBuffer reply = ByteBuffer.allocate(16 + 4096);     // a 4 KiB read's reply
        ByteBuffer largePayload = ByteBuffer.allocateDirect(LARGE);    // full records, as a 1 MiB write's
        ByteBuffer largeReply = ByteBuffer.allocateDirect(LARGE);      // as a large read's data from the mapping
        int rounds = 0;
        long records = 0;
        long large = 0;
        while (rounds < MAX_ROUNDS && (rounds == 0 || System.nanoTime() - deadline < 0)) {
            long compiledBefore = compileMillis();
            for (int i = 0; i < EXCHANGES; i++) {
                wrap(client, request.clear(), toServer);
                if (i % LARGE_EVERY == LARGE_EVERY / 2) {
                    // Full 16 KiB records both ways: AES-GCM takes another path through the JDK for them (the
                    // whole-record decrypt of a large WRITE's payload), which small records never compile.
                    wrap(client, largePayload.clear(), toServer);
                    drain(server, toServer, serverIn.clear());
                    wrap(server, largeReply.clear(), toClient);
                    drain(client, toClient, clientIn.clear());
                    records += 1 + 2 * (LARGE / MAX_FRAGMENT);
                    large += 2 * (LARGE / MAX_FRAGMENT);
                    continue;
                }
                // Mostly 512-byte payloads, a 4 KiB one in 8: the JIT counts calls, so cheap records warm faster.
                int size = i % 8 == 0 ? 4096 : 512;
                wrap(client, payload.clear().limit(size), toServer);
                drain(server, toServer, serverIn.clear());
                wrap(server, reply.clear().limit(16 + size), toClient);
                drain(client, toClient, clientIn.clear());
                records += 3;
            }
            rounds++;
            if (rounds >= MIN_ROUNDS && compileMillis() - compiledBefore < QUIET_COMPILE_MILLIS) {
                break;
            }
        }
        awaitQuiet(deadline);
        return new Result(rounds, records, large, System.nanoTime() - start, server.getSession().getCipherSuite());
    }

    /** Waits until the JIT has compiled nothing for 200 ms, or until {@code deadline}. */
    private static void awaitQuiet(long deadline) {
        long last = compileMillis();
        long quietSince = System.nanoTime();
        while (System.nanoTime() - quietSince < 200_000_000L && System.nanoTime() - deadline < 0) {
            try {
                Thread.sleep(20);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                return;
            }
            long now = compileMillis();
            if (now != last) {
                last = now;
                quietSince = System.nanoTime();
            }
        }
    }

    private static long compileMillis() {
        return COMPILER != null && COMPILER.isCompilationTimeMonitoringSupported() ? COMPILER.getTotalCompilationTime() : 0;
    }

    /** A client engine for the same protocols and suites that trusts exactly {@code serverCert}. */
    private static SSLEngine clientEngine(X509Certificate serverCert, SSLParameters like) throws SSLException {
        try {
            KeyStore trust = KeyStore.getInstance("PKCS12");
            trust.load(null, null);
            trust.setCertificateEntry("server", serverCert);
            TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
            tmf.init(trust);
            SSLContext ctx = SSLContext.getInstance("TLS");
            ctx.init(null, tmf.getTrustManagers(), null);
            SSLEngine e = ctx.createSSLEngine();
            e.setUseClientMode(true);
            SSLParameters p = e.getSSLParameters();
            p.setProtocols(new String[] {"TLSv1.3"});
            p.setCipherSuites(like.getCipherSuites());
            e.setSSLParameters(p);
            return e;
        } catch (GeneralSecurityException | java.io.IOException e) {
            throw new SSLException("TLS warm-up: " + e.getMessage(), e);
        }
    }

    private static void handshake(SSLEngine client, SSLEngine server, ByteBuffer toServer, ByteBuffer toClient,
                                  ByteBuffer serverIn, ByteBuffer clientIn) throws SSLException {
        ByteBuffer empty = ByteBuffer.allocate(0);
        client.beginHandshake();
        server.beginHandshake();
        for (int step = 0; step < 200; step++) {
            boolean clientDone = done(client);
            boolean serverDone = done(server);
            if (clientDone && serverDone && toServer.position() == 0 && toClient.position() == 0) {
                return;
            }
            advance(client, empty, toServer, toClient, clientIn.clear());
            advance(server, empty, toClient, toServer, serverIn.clear());
        }
        throw new SSLException("TLS warm-up: the in-memory handshake did not finish");
    }

    private static boolean done(SSLEngine e) {
        SSLEngineResult.HandshakeStatus s = e.getHandshakeStatus();
        return s == SSLEngineResult.HandshakeStatus.NOT_HANDSHAKING || s == SSLEngineResult.HandshakeStatus.FINISHED;
    }

    /** One handshake step of {@code e}: tasks, then what it wants to send, then what it has received. */
    private static void advance(SSLEngine e, ByteBuffer empty, ByteBuffer out, ByteBuffer in, ByteBuffer app)
            throws SSLException {
        Runnable task;
        while ((task = e.getDelegatedTask()) != null) {
            task.run();
        }
        while (e.getHandshakeStatus() == SSLEngineResult.HandshakeStatus.NEED_WRAP) {
            SSLEngineResult r = e.wrap(empty, out);
            if (r.getStatus() != SSLEngineResult.Status.OK) {
                throw new SSLException("TLS warm-up: handshake wrap " + r.getStatus());
            }
        }
        drain(e, in, app);
        while ((task = e.getDelegatedTask()) != null) {
            task.run();
        }
    }

    private static void wrap(SSLEngine e, ByteBuffer src, ByteBuffer out) throws SSLException {
        while (src.hasRemaining()) {
            SSLEngineResult r = e.wrap(src, out);
            if (r.getStatus() != SSLEngineResult.Status.OK) {
                throw new SSLException("TLS warm-up: wrap " + r.getStatus());
            }
        }
    }

    /** Unwraps every whole record in {@code in} (write mode) into {@code app}; keeps a partial one. */
    private static void drain(SSLEngine e, ByteBuffer in, ByteBuffer app) throws SSLException {
        in.flip();
        try {
            while (in.hasRemaining()) {
                if (app.remaining() < e.getSession().getApplicationBufferSize()) {
                    app.clear();        // the warm-up does not keep what it decrypts
                }
                SSLEngineResult r = e.unwrap(in, app);
                if (r.getStatus() == SSLEngineResult.Status.BUFFER_UNDERFLOW) {
                    break;
                }
                if (r.getStatus() != SSLEngineResult.Status.OK) {
                    throw new SSLException("TLS warm-up: unwrap " + r.getStatus());
                }
                if (r.bytesConsumed() == 0 && r.bytesProduced() == 0
                        && r.getHandshakeStatus() != SSLEngineResult.HandshakeStatus.NEED_TASK) {
                    break;      // the engine wants to send first (handshake)
                }
                if (r.getHandshakeStatus() == SSLEngineResult.HandshakeStatus.NEED_TASK) {
                    Runnable task;
                    while ((task = e.getDelegatedTask()) != null) {
                        task.run();
                    }
                }
            }
        } finally {
            in.compact();
        }
    }
}
