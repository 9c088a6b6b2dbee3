package io.snapbd.server.tls;

import io.snapbd.server.config.TlsSettings;
import io.snapbd.server.it.Tools;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLSocket;
import javax.net.ssl.TrustManagerFactory;
import java.io.ByteArrayInputStream;
import java.io.DataInputStream;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.ByteBuffer;
import java.nio.channels.ByteChannel;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyStore;
import java.security.cert.CertificateFactory;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * TlsChannel against the JDK's own client socket: both directions at once (one thread reading while another
 * writes, as in the transmission phase), reads into small and large buffers (through the decrypted buffer and
 * straight from the record), gathering writes, and the end of the stream.
 */
@Timeout(value = 2, unit = TimeUnit.MINUTES)
class TlsChannelTest {

    @TempDir
    static Path pki;
    static ServerTls tls;
    static SSLContext client;

    @BeforeAll
    static void certificates() throws Exception {
        Tools.require("openssl");
        Tools.run(Duration.ofMinutes(2), Map.of(), List.of("sh", "-c", "cd '" + pki + "' && "
                + "openssl req -x509 -newkey rsa:2048 -nodes -keyout server-key.pem -out server-cert.pem -days 2 -subj /CN=localhost"
                + " && cp server-cert.pem ca-cert.pem && chmod 600 server-key.pem")).assertOk();
        tls = ServerTls.load(new TlsSettings(TlsSettings.Mode.REQUIRE, pki, false));
        KeyStore trust = KeyStore.getInstance("PKCS12");
        trust.load(null, null);
        trust.setCertificateEntry("ca", CertificateFactory.getInstance("X.509")
                .generateCertificate(new ByteArrayInputStream(Files.readAllBytes(pki.resolve("ca-cert.pem")))));
        TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        tmf.init(trust);
        client = SSLContext.getInstance("TLS");
        client.init(null, tmf.getTrustManagers(), null);
    }

    @Test
    void fullDuplexWithSmallAndLargeReadsAndGatheringWrites() throws Exception {
        byte[] up = new byte[6 << 20];
        byte[] down = new byte[5 << 20];
        new Random(1).nextBytes(up);
        new Random(2).nextBytes(down);
        try (ServerSocketChannel ss = ServerSocketChannel.open()) {
            ss.bind(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0));
            int port = ((InetSocketAddress) ss.getLocalAddress()).getPort();
            CompletableFuture<byte[]> clientGot = CompletableFuture.supplyAsync(() -> {
                try (Socket raw = new Socket(InetAddress.getLoopbackAddress(), port);
                     SSLSocket s = (SSLSocket) client.getSocketFactory().createSocket(raw, "localhost", port, true)) {
                    s.startHandshake();
                    OutputStream out = s.getOutputStream();
                    CompletableFuture<Void> sending = CompletableFuture.runAsync(() -> {
                        try {
                            Random r = new Random(3);
                            for (int off = 0; off < up.length; ) {
                                int n = Math.min(up.length - off, 1 + r.nextInt(100_000));
                                out.write(up, off, n);
                                off += n;
                            }
                            out.flush();
                            s.shutdownOutput();
                        } catch (Exception e) {
                            throw new RuntimeException(e);
                        }
                    });
                    byte[] got = new byte[down.length];
                    new DataInputStream(s.getInputStream()).readFully(got);
                    sending.join();
                    InputStream in = s.getInputStream();
                    assertEquals(-1, in.read(), "close_notify after the server's data");
                    return got;
                } catch (Exception e) {
                    throw new RuntimeException(e);
                }
            });
            try (SocketChannel sc = ss.accept()) {
                TlsChannel ch = TlsChannel.accept(sc, tls.newEngine());
                // Writer: header + payload gathers, as the transmission phase sends replies.
                CompletableFuture<Void> writing = CompletableFuture.runAsync(() -> {
                    try {
                        ByteBuffer[] gather = new ByteBuffer[2];
                        for (int off = 0; off < down.length; ) {
                            int n = Math.min(down.length - off, 65536 + 7);
                            int h = Math.min(n, 16);
                            gather[0] = ByteBuffer.wrap(down, off, h);
                            gather[1] = ByteBuffer.wrap(down, off + h, n - h);
                            while (gather[0].hasRemaining() || gather[1].hasRemaining()) {
                                ch.write(gather);
                            }
                            off += n;
                        }
                    } catch (Exception e) {
                        throw new RuntimeException(e);
                    }
                });
                // Reader (this thread, while the writer runs): a tiny buffer (through the decrypted buffer, which it
                // leaves partly full), then large ones (the rest of it, then straight from the records).
                byte[] got = new byte[up.length];
                int off = 0;
                int reads = 0;
                while (true) {
                    boolean small = reads++ % 4 == 0;
                    ByteBuffer dst = ByteBuffer.wrap(got, off, Math.min(got.length - off, small ? 5 : 1 << 20));
                    if (!dst.hasRemaining()) {
                        assertEquals(-1, ch.read(ByteBuffer.allocate(1)), "end of stream after the client's data");
                        break;
                    }
                    int n = ch.read(dst);
                    if (n < 0) {
                        break;
                    }
                    off += n;
                }
                assertEquals(up.length, off);
                assertArrayEquals(up, got, "client to server");
                writing.get(1, TimeUnit.MINUTES);
                ch.close();
            }
            assertArrayEquals(down, clientGot.get(1, TimeUnit.MINUTES), "server to client");
        }
    }

    /**
     * The server's request loop: with {@link TlsChannel#deferWritesOf} its replies to a burst of pipelined requests
     * go out together once it has to wait for the next request (one socket write per burst here, not one per
     * reply), every reply arrives whole and in order, and close sends what is still gathered.
     */
    @Test
    void repliesOfABurstGoOutTogetherWhenTheReaderWaits() throws Exception {
        int bursts = 20;
        int perBurst = 32;
        try (ServerSocketChannel ss = ServerSocketChannel.open()) {
            ss.bind(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0));
            int port = ((InetSocketAddress) ss.getLocalAddress()).getPort();
            CompletableFuture<Void> clientDone = CompletableFuture.runAsync(() -> {
                try (Socket raw = new Socket(InetAddress.getLoopbackAddress(), port);
                     SSLSocket s = (SSLSocket) client.getSocketFactory().createSocket(raw, "localhost", port, true)) {
                    s.startHandshake();
                    DataInputStream in = new DataInputStream(s.getInputStream());
                    OutputStream out = s.getOutputStream();
                    for (int b = 0; b < bursts; b++) {
                        ByteBuffer burst = ByteBuffer.allocate(perBurst * 32);
                        for (int i = 0; i < perBurst; i++) {
                            burst.putLong(b * perBurst + i).put(new byte[24]);
                        }
                        out.write(burst.array());      // one write: the server reads the burst without waiting
                        out.flush();
                        for (int i = 0; i < perBurst; i++) {
                            assertEquals(b * perBurst + i, in.readLong(), "reply " + i + " of burst " + b);
                            byte[] payload = new byte[8 + i];
                            in.readFully(payload);
                            assertEquals(i, payload[payload.length - 1], "payload of reply " + i);
                        }
                    }
                    out.write(new byte[32]);    // the last request: its reply is gathered when the server closes
                    out.flush();
                    assertEquals(0, in.readLong(), "the reply written just before close");
                    in.readFully(new byte[8]);
                    assertEquals(-1, in.read(), "close_notify after the last reply");
                } catch (Exception e) {
                    throw new RuntimeException(e);
                }
            });
            try (SocketChannel sc = ss.accept()) {
                CountingChannel counting = new CountingChannel(sc);
                TlsChannel ch = TlsChannel.accept(counting, tls.newEngine());
                ch.deferWritesOf(Thread.currentThread());
                int handshakeWrites = counting.writes;
                ByteBuffer request = ByteBuffer.allocate(32);
                ByteBuffer header = ByteBuffer.allocate(8);
                ByteBuffer payload = ByteBuffer.allocate(8 + perBurst);
                ByteBuffer[] gather = {header, payload};
                for (int r = 0; r <= bursts * perBurst; r++) {
                    request.clear();
                    while (request.hasRemaining()) {
                        assertTrue(ch.read(request) > 0, "request " + r);
                    }
                    int i = r % perBurst;
                    header.clear();
                    header.putLong(request.getLong(0)).flip();
                    payload.clear().limit(8 + i).put(8 + i - 1, (byte) i);
                    while (header.hasRemaining() || payload.hasRemaining()) {
                        ch.write(gather);
                    }
                }
                int dataWrites = counting.writes - handshakeWrites;
                assertTrue(dataWrites <= 2 * bursts, dataWrites + " socket writes for " + bursts + " bursts of "
                        + perBurst + " replies: replies were not gathered");
                ch.close();
            }
            clientDone.get(1, TimeUnit.MINUTES);
        }
    }

    /**
     * The server's cipher order puts AES-128-GCM ahead of AES-256-GCM (cheaper per record, same strength class)
     * without adding or dropping a suite: a JDK client, which lists AES-256 first, gets AES-128-GCM over TLS 1.3
     * and over TLS 1.2.
     */
    @Test
    void aes128GcmIsChosenOverAes256WithTheSameSuites() throws Exception {
        for (String protocol : List.of("TLSv1.3", "TLSv1.2")) {
            try (ServerSocketChannel ss = ServerSocketChannel.open()) {
                ss.bind(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0));
                int port = ((InetSocketAddress) ss.getLocalAddress()).getPort();
                CompletableFuture<String> clientSuite = CompletableFuture.supplyAsync(() -> {
                    try (Socket raw = new Socket(InetAddress.getLoopbackAddress(), port);
                         SSLSocket s = (SSLSocket) client.getSocketFactory().createSocket(raw, "localhost", port, true)) {
                        s.setEnabledProtocols(new String[] {protocol});
                        s.startHandshake();
                        return s.getSession().getCipherSuite();
                    } catch (Exception e) {
                        throw new RuntimeException(e);
                    }
                });
                try (SocketChannel sc = ss.accept()) {
                    javax.net.ssl.SSLEngine engine = tls.newEngine();
                    TlsChannel ch = TlsChannel.accept(sc, engine);
                    String expected = protocol.equals("TLSv1.3") ? "TLS_AES_128_GCM_SHA256" : "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256";
                    assertEquals(protocol + " " + expected, ch.describe());
                    assertEquals(expected, clientSuite.get(1, TimeUnit.MINUTES));
                    javax.net.ssl.SSLEngine jdk = SSLContext.getDefault().createSSLEngine();
                    jdk.setUseClientMode(false);
                    assertEquals(new java.util.TreeSet<>(List.of(jdk.getEnabledCipherSuites())),
                            new java.util.TreeSet<>(List.of(engine.getEnabledCipherSuites())), "the same suites, reordered");
                    ch.close();
                }
            }
        }
    }

    /**
     * The start-up warm-up: a TLS 1.3 handshake and NBD-shaped records between the server's own engine and an
     * in-memory client that trusts the server's certificate, with the cipher suite clients get; then a real
     * connection still works.
     */
    @Test
    void warmUpRunsTheRecordPathInMemory() throws Exception {
        String line = tls.warmUp(Duration.ofMillis(300));
        assertTrue(line.matches("TLS record path warmed up: \\d+ rounds, [1-9]\\d* records \\([1-9]\\d* of them full 16 KiB records,"
                + " TLS_AES_128_GCM_SHA256\\) .*"), "full-size records (a large write's) are warmed too: " + line);
        ServerTls verifying = ServerTls.load(new TlsSettings(TlsSettings.Mode.REQUIRE, pki, true));
        assertTrue(verifying.warmUp(Duration.ofMillis(100)).contains("TLS_AES_128_GCM_SHA256"),
                "client certificates required for clients, not for the in-memory warm-up");
        aes128GcmIsChosenOverAes256WithTheSameSuites();
    }

    /** Counts the socket writes under a TlsChannel. */
    private static final class CountingChannel implements ByteChannel {
        private final ByteChannel net;
        volatile int writes;

        CountingChannel(ByteChannel net) {
            this.net = net;
        }

        @Override
        public int read(ByteBuffer dst) throws java.io.IOException {
            return net.read(dst);
        }

        @Override
        public int write(ByteBuffer src) throws java.io.IOException {
            writes++;
            return net.write(src);
        }

        @Override
        public boolean isOpen() {
            return net.isOpen();
        }

        @Override
        public void close() throws java.io.IOException {
            net.close();
        }
    }
}
