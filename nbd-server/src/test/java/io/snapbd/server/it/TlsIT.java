package io.snapbd.server.it;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;

import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLSocket;
import javax.net.ssl.TrustManagerFactory;
import java.io.ByteArrayInputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.net.SocketException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.security.KeyStore;
import java.security.cert.CertificateFactory;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * STARTTLS against real clients: libnbd's nbdinfo and nbdcopy with nbds:// URIs, qemu-img and qemu-io with a
 * tls-creds-x509 object, and raw sockets (a Java TLS client layered on {@link RawNbd}) for what real clients
 * never do: STARTTLS twice, garbage or a cut-off hello instead of the TLS handshake. Certificates are made by
 * openssl in a temporary directory: a CA, a server certificate for localhost/127.0.0.1, a client certificate,
 * and a second, unrelated CA.
 */
@Timeout(value = 10, unit = TimeUnit.MINUTES)
@ExtendWith(ServerLiveness.class)
class TlsIT {

    static final int OPT_STARTTLS = 5;
    static final int REP_ERR_TLS_REQD = 0x80000005;
    static final long MiB = 1L << 20;

    @TempDir
    static Path tmp;
    /** CA 1, server certificate and key, client certificate and key (signed by CA 1). */
    static Path pki;
    /** Only CA 2's ca-cert.pem: a client trusting another CA. */
    static Path otherCa;
    /** CA 1's ca-cert.pem only: a client without a certificate. */
    static Path noClientCert;
    /** CA 1's ca-cert.pem with a client certificate signed by CA 2. */
    static Path foreignClientCert;
    /** CA 1's ca-cert.pem with an expired client certificate signed by CA 1. */
    static Path expiredClientCert;
    static long expiredAt;
    /** tls=require. */
    static ServerProcess required;
    /** tls=on with --tls-verify-peer. */
    static ServerProcess verifying;

    @BeforeAll
    static void setUp() throws IOException {
        Tools.require("openssl", "nbdinfo", "nbdcopy", "qemu-img", "qemu-io");
        pki = tmp.resolve("pki");
        Files.createDirectories(pki);
        makeCa(pki, "snapbd test CA 1");
        makeCert(pki, "server", "localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n", pki);
        makeCert(pki, "client", "client one", "extendedKeyUsage=clientAuth\n", pki);

        Path ca2 = tmp.resolve("ca2");
        Files.createDirectories(ca2);
        makeCa(ca2, "snapbd test CA 2");
        makeCert(ca2, "client", "intruder", "extendedKeyUsage=clientAuth\n", ca2);

        otherCa = tmp.resolve("other-ca");
        Files.createDirectories(otherCa);
        Files.copy(ca2.resolve("ca-cert.pem"), otherCa.resolve("ca-cert.pem"));

        noClientCert = tmp.resolve("no-client-cert");
        Files.createDirectories(noClientCert);
        Files.copy(pki.resolve("ca-cert.pem"), noClientCert.resolve("ca-cert.pem"));

        foreignClientCert = tmp.resolve("foreign-client-cert");
        Files.createDirectories(foreignClientCert);
        Files.copy(pki.resolve("ca-cert.pem"), foreignClientCert.resolve("ca-cert.pem"));
        Files.copy(ca2.resolve("client-cert.pem"), foreignClientCert.resolve("client-cert.pem"));
        Files.copy(ca2.resolve("client-key.pem"), foreignClientCert.resolve("client-key.pem"));
        Files.setPosixFilePermissions(foreignClientCert.resolve("client-key.pem"), PosixFilePermissions.fromString("rw-------"));

        expiredClientCert = tmp.resolve("expired-client-cert");
        Files.createDirectories(expiredClientCert);
        Files.copy(pki.resolve("ca-cert.pem"), expiredClientCert.resolve("ca-cert.pem"));
        makeCert(expiredClientCert, "client", "client expired", "extendedKeyUsage=clientAuth\n", pki, 0);
        expiredAt = System.currentTimeMillis();

        Path data = tmp.resolve("data");
        ServerProcess.snapbd(data, "volume", "create", "tls", "--size", "16M", "--save-size", "4M").assertOk();
        required = ServerProcess.start(data, "TlsIT-require", "--warm-up", "off", "--handshake-timeout", "5",
                "--tls=require", "--tls-certificates=" + pki);
        Path data2 = tmp.resolve("data2");
        ServerProcess.snapbd(data2, "volume", "create", "tls", "--size", "16M", "--save-size", "4M").assertOk();
        verifying = ServerProcess.start(data2, "TlsIT-verify", "--warm-up", "off",
                "--tls=on", "--tls-certificates=" + pki, "--tls-verify-peer");
    }

    @AfterAll
    static void tearDown() throws IOException {
        for (ServerProcess s : new ServerProcess[]{required, verifying}) {
            if (s != null) {
                String log = s.log();
                s.close();
                // No key material in the log, whatever happened.
                assertFalse(log.contains("PRIVATE KEY"), "the server log mentions a private key:\n" + log);
                for (String line : Files.readAllLines(pki.resolve("server-key.pem"))) {
                    if (!line.startsWith("-----") && line.length() > 20) {
                        assertFalse(log.contains(line), "the server log quotes the private key");
                    }
                }
            }
        }
    }

    // ---- certificates ----------------------------------------------------------------------------------------

    static void openssl(Path dir, String... args) {
        List<String> cmd = new java.util.ArrayList<>(List.of("openssl"));
        cmd.addAll(List.of(args));
        Tools.Result r = Tools.run(Duration.ofMinutes(2), Map.of(), List.of("sh", "-c", "cd '" + dir + "' && "
                + String.join(" ", cmd.stream().map(a -> "'" + a + "'").toList())));
        r.assertOk();
    }

    static void makeCa(Path dir, String cn) throws IOException {
        openssl(dir, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca-key.pem", "-out", "ca-cert.pem",
                "-days", "2", "-subj", "/CN=" + cn);
        Files.setPosixFilePermissions(dir.resolve("ca-key.pem"), PosixFilePermissions.fromString("rw-------"));
    }

    static void makeCert(Path dir, String name, String cn, String extensions, Path caDir) throws IOException {
        makeCert(dir, name, cn, extensions, caDir, 2);
    }

    /** {@code days} 0: valid until the second it is made. */
    static void makeCert(Path dir, String name, String cn, String extensions, Path caDir, int days) throws IOException {
        Files.writeString(dir.resolve(name + ".ext"), extensions);
        openssl(dir, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", name + "-key.pem", "-out", name + ".csr", "-subj", "/CN=" + cn);
        openssl(dir, "x509", "-req", "-in", name + ".csr", "-CA", caDir.resolve("ca-cert.pem").toString(),
                "-CAkey", caDir.resolve("ca-key.pem").toString(), "-CAcreateserial", "-out", name + "-cert.pem",
                "-days", String.valueOf(days), "-extfile", name + ".ext");
        Files.setPosixFilePermissions(dir.resolve(name + "-key.pem"), PosixFilePermissions.fromString("rw-------"));
    }

    static String nbds(ServerProcess s, String export, Path certs) {
        return "nbds://localhost:" + s.port() + "/" + export + "?tls-certificates=" + certs;
    }

    // ---- real clients ------------------------------------------------------------------------------------------

    @Test
    void nbdinfoOverTls() {
        Tools.Result r = Tools.run("nbdinfo", nbds(required, "tls", pki)).assertOk();
        assertTrue(r.stdout().contains("with TLS"), r.stdout());
        assertTrue(r.stdout().contains("export-size: " + 16 * MiB), r.stdout());
    }

    @Test
    void nbdcopyRoundTripOverTls() throws IOException {
        byte[] data = new byte[(int) (16 * MiB)];
        new Random(26).nextBytes(data);
        Path in = tmp.resolve("nbdcopy-in.img");
        Path out = tmp.resolve("nbdcopy-out.img");
        Files.write(in, data);
        Tools.run("nbdcopy", in.toString(), nbds(required, "tls", pki)).assertOk();
        Tools.run("nbdcopy", nbds(required, "tls", pki), out.toString()).assertOk();
        assertArrayEquals(data, Files.readAllBytes(out), "nbdcopy round trip over TLS");
    }

    @Test
    void qemuOverTls() {
        String object = "tls-creds-x509,id=tls0,dir=" + pki + ",endpoint=client";
        String image = "driver=nbd,host=localhost,port=" + required.port() + ",export=tls,tls-creds=tls0";
        Tools.Result info = Tools.run("qemu-img", "info", "--object", object, "--image-opts", image).assertOk();
        assertTrue(info.stdout().contains("16 MiB"), info.stdout());
        Tools.Result io = Tools.run("qemu-io", "--object", object, "--image-opts", image,
                "-c", "write -P 0x5a 1M 256k", "-c", "read -P 0x5a 1M 256k").assertOk();
        assertFalse(io.stdout().contains("Pattern verification failed"), io.stdout());
        assertTrue(io.stdout().contains("read 262144/262144 bytes"), io.stdout());
    }

    @Test
    void serverCertificateForAnotherHostNameIsRefusedByTheClient() {
        // The server certificate names localhost and 127.0.0.1; a client that expects another name must refuse it.
        String object = "tls-creds-x509,id=tls0,dir=" + pki + ",endpoint=client";
        String wrong = "driver=nbd,host=127.0.0.1,port=" + required.port() + ",export=tls,tls-creds=tls0,tls-hostname=storage9.example";
        Tools.Result r = Tools.run("qemu-img", "info", "--object", object, "--image-opts", wrong);
        assertNotEquals(0, r.exit(), "wrong host name: " + r);
        assertFalse(r.stdout().contains("16 MiB"), r.stdout());
        assertTrue(r.stderr().contains("storage9.example"), r.stderr());
        // The same client with the right name gets in, and the server goes on serving.
        String right = "driver=nbd,host=127.0.0.1,port=" + required.port() + ",export=tls,tls-creds=tls0,tls-hostname=localhost";
        Tools.run("qemu-img", "info", "--object", object, "--image-opts", right).assertOk();
    }

    @Test
    void plainClientAgainstRequireGetsTlsRequiredAndNoData() throws IOException {
        Tools.Result r = Tools.run(Duration.ofMinutes(2), Map.of("LIBNBD_DEBUG", "1"),
                List.of("nbdinfo", "nbd://localhost:" + required.port() + "/tls"));
        assertNotEquals(0, r.exit(), r.toString());
        assertTrue(r.stderr().contains("requires TLS"), r.stderr());
        assertFalse(r.stdout().contains("export-size"), r.stdout());

        try (RawNbd raw = RawNbd.connect(required.port())) {
            raw.startHandshake();
            raw.sendOption(RawNbd.OPT_LIST, new byte[0]);
            assertEquals(REP_ERR_TLS_REQD, raw.readOptReply().type(), "LIST before TLS");
            raw.sendOption(RawNbd.OPT_GO, RawNbd.goData("tls"));
            assertEquals(REP_ERR_TLS_REQD, raw.readOptReply().type(), "GO before TLS");
            raw.sendOption(RawNbd.OPT_INFO, RawNbd.goData("tls"));
            assertEquals(REP_ERR_TLS_REQD, raw.readOptReply().type(), "INFO before TLS");
            // EXPORT_NAME cannot be answered with an error: the connection closes, without the export's size.
            raw.sendOption(RawNbd.OPT_EXPORT_NAME, "tls".getBytes(StandardCharsets.UTF_8));
            assertClosed(raw.in());
        }
        assertTrue(required.log().contains("without TLS, which this server requires"), required.log());
    }

    @Test
    void clientTrustingAnotherCaIsRefused() {
        Tools.Result r = Tools.run("nbdinfo", nbds(required, "tls", otherCa));
        assertNotEquals(0, r.exit(), r.toString());
        assertFalse(r.stdout().contains("export-size"), r.stdout());
        Tools.run("nbdinfo", nbds(required, "tls", pki)).assertOk();
    }

    @Test
    void verifyPeerRefusesClientsWithoutAGoodCertificate() throws InterruptedException {
        Tools.Result none = Tools.run("nbdinfo", nbds(verifying, "tls", noClientCert));
        assertNotEquals(0, none.exit(), "no client certificate: " + none);
        Tools.Result foreign = Tools.run("nbdinfo", nbds(verifying, "tls", foreignClientCert));
        assertNotEquals(0, foreign.exit(), "client certificate from another CA: " + foreign);
        assertTrue(awaitLog(verifying, "refused: TLS handshake failed"), verifying.log());
        // A certificate from the right CA whose validity ended (openssl -days 0: at the second it was made).
        while (System.currentTimeMillis() < expiredAt + 2000) {
            Thread.sleep(100);
        }
        Tools.Result expired = Tools.run("nbdinfo", nbds(verifying, "tls", expiredClientCert));
        assertNotEquals(0, expired.exit(), "expired client certificate: " + expired);
        // The client may exit before the server has written its log line.
        assertTrue(awaitLog(verifying, "refused: TLS handshake failed: PKIX path validation failed"), verifying.log());

        Tools.Result good = Tools.run("nbdinfo", nbds(verifying, "tls", pki)).assertOk();
        assertTrue(good.stdout().contains("with TLS"), good.stdout());
        // tls=on: a plain client is still served.
        Tools.Result plain = Tools.run("nbdinfo", "nbd://localhost:" + verifying.port() + "/tls").assertOk();
        assertTrue(plain.stdout().contains("without TLS"), plain.stdout());
    }

    @Test
    void startTlsTwiceIsInvalidAndGarbageHelloClosesOnlyThatConnection() throws Exception {
        try (RawNbd first = RawNbd.connect(required.port())) {
            first.startHandshake();
            Tls tls = Tls.start(first, pki, required.port());
            // STARTTLS again, now inside TLS: INVALID, and the session goes on.
            tls.sendOption(OPT_STARTTLS, new byte[0]);
            assertEquals(RawNbd.REP_ERR_INVALID, tls.readOptReplyType(OPT_STARTTLS), "second STARTTLS");
            tls.go("tls");
            byte[] before = tls.read(1, 0, 4096);

            // Garbage where the ClientHello should be: that connection is closed...
            try (RawNbd garbage = RawNbd.connect(required.port())) {
                garbage.startHandshake();
                garbage.sendOption(OPT_STARTTLS, new byte[0]);
                assertEquals(RawNbd.REP_ACK, garbage.readOptReply().type());
                garbage.sendRaw("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".getBytes(StandardCharsets.US_ASCII));
                assertClosed(garbage.in());
            }
            // ...and so is one that stops in the middle of its hello.
            try (RawNbd cut = RawNbd.connect(required.port())) {
                cut.startHandshake();
                cut.sendOption(OPT_STARTTLS, new byte[0]);
                assertEquals(RawNbd.REP_ACK, cut.readOptReply().type());
                cut.sendRaw(new byte[]{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00});
                cut.socket().shutdownOutput();
                assertClosed(cut.in());
            }
            String log = required.log();
            assertTrue(log.contains("refused: TLS handshake failed"), log);
            assertTrue(log.contains("peer closed the connection during the TLS handshake"), log);

            // The first client is unaffected, and so are new ones.
            assertArrayEquals(before, tls.read(2, 0, 4096));
            Tools.run("nbdinfo", nbds(required, "tls", pki)).assertOk();
            tls.disconnect();
        }
    }

    @Test
    void clientStallingInTheTlsHandshakeIsCutOffByTheDeadline() throws Exception {
        try (RawNbd stalled = RawNbd.connect(required.port())) {
            stalled.startHandshake();
            stalled.sendOption(OPT_STARTTLS, new byte[0]);
            assertEquals(RawNbd.REP_ACK, stalled.readOptReply().type());
            // No ClientHello: the handshake deadline (5 s here) closes the connection; meanwhile others are served.
            Tools.run("nbdinfo", nbds(required, "tls", pki)).assertOk();
            assertClosed(stalled.in());
        }
        assertTrue(required.log().contains("handshake not finished within"), required.log());
    }

    @Test
    void startTlsOnAPlainServerIsUnsupportedAndTheSessionGoesOn() throws IOException {
        Path data = tmp.resolve("data-plain");
        try (ServerProcess plain = ServerProcess.start(data, "TlsIT-plain", "--warm-up", "off");
             RawNbd raw = RawNbd.connect(plain.port())) {
            raw.startHandshake();
            raw.sendOption(OPT_STARTTLS, new byte[0]);
            RawNbd.OptReply r = raw.readOptReply();
            assertEquals(RawNbd.REP_ERR_UNSUP, r.type(), r.toString());
            assertTrue(r.text().contains("--tls"), r.text());
            raw.sendOption(RawNbd.OPT_LIST, new byte[0]);
            assertEquals(RawNbd.REP_SERVER, raw.readOptReplies(RawNbd.OPT_LIST).get(0).type());
        }
    }

    @Test
    void keyReadableByOthersOrMissingFilesAreRefusedAtStart() throws IOException {
        Path loose = tmp.resolve("loose");
        Files.createDirectories(loose);
        for (String f : new String[]{"ca-cert.pem", "server-cert.pem", "server-key.pem"}) {
            Files.copy(pki.resolve(f), loose.resolve(f));
        }
        Files.setPosixFilePermissions(loose.resolve("server-key.pem"), PosixFilePermissions.fromString("rw-r--r--"));
        Tools.Result r = ServerProcess.snapbd(tmp.resolve("data-loose"), "serve", "--tcp", "127.0.0.1:0", "--unix", "none",
                "--warm-up", "off", "--tls=require", "--tls-certificates=" + loose);
        assertEquals(2, r.exit(), r.toString());
        assertTrue(r.stderr().contains("server-key.pem") && r.stderr().contains("chmod 600"), r.stderr());
        assertFalse(r.stderr().contains("PRIVATE KEY"), r.stderr());

        Tools.Result noDir = ServerProcess.snapbd(tmp.resolve("data-loose"), "serve", "--tcp", "127.0.0.1:0", "--unix", "none",
                "--warm-up", "off", "--tls=require");
        assertEquals(2, noDir.exit(), noDir.toString());
        assertTrue(noDir.stderr().contains("--tls-certificates"), noDir.stderr());
    }

    /** Waits (bounded) for {@code text} in the server's log. */
    static boolean awaitLog(ServerProcess s, String text) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        while (!s.log().contains(text)) {
            if (System.nanoTime() > deadline) {
                return false;
            }
            Thread.sleep(50);
        }
        return true;
    }

    /** Reads until the server closes the connection (a TLS alert may come first); fails if it stays open. */
    static void assertClosed(InputStream in) throws IOException {
        byte[] buf = new byte[4096];
        long total = 0;
        try {
            int n;
            while ((n = in.read(buf)) >= 0) {
                total += n;
                assertTrue(total < 64 * 1024, "the server kept sending instead of closing");
            }
        } catch (SocketException e) {
            // reset: closed too
        } catch (java.net.SocketTimeoutException e) {
            fail("the server did not close the connection");
        }
    }

    /** The NBD handshake and a few requests over a JSSE client socket layered on a RawNbd connection after STARTTLS. */
    static final class Tls {
        final SSLSocket socket;
        final DataInputStream in;
        final DataOutputStream out;

        private Tls(SSLSocket socket) throws IOException {
            this.socket = socket;
            this.in = new DataInputStream(socket.getInputStream());
            this.out = new DataOutputStream(new java.io.BufferedOutputStream(socket.getOutputStream()));
        }

        static Tls start(RawNbd raw, Path certs, int port) throws Exception {
            raw.sendOption(OPT_STARTTLS, new byte[0]);
            RawNbd.OptReply ack = raw.readOptReply();
            assertEquals(RawNbd.REP_ACK, ack.type(), "STARTTLS: " + ack);
            KeyStore trust = KeyStore.getInstance("PKCS12");
            trust.load(null, null);
            trust.setCertificateEntry("ca", CertificateFactory.getInstance("X.509")
                    .generateCertificate(new ByteArrayInputStream(Files.readAllBytes(certs.resolve("ca-cert.pem")))));
            TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
            tmf.init(trust);
            SSLContext ctx = SSLContext.getInstance("TLS");
            ctx.init(null, tmf.getTrustManagers(), null);
            SSLSocket s = (SSLSocket) ctx.getSocketFactory().createSocket(raw.socket(), "localhost", port, false);
            s.setUseClientMode(true);
            s.startHandshake();
            return new Tls(s);
        }

        void sendOption(int option, byte[] data) throws IOException {
            out.writeLong(RawNbd.IHAVEOPT);
            out.writeInt(option);
            out.writeInt(data.length);
            out.write(data);
            out.flush();
        }

        int readOptReplyType(int option) throws IOException {
            assertEquals(RawNbd.OPTION_REPLY_MAGIC, in.readLong());
            assertEquals(option, in.readInt());
            int type = in.readInt();
            in.skipNBytes(in.readInt());
            return type;
        }

        void go(String export) throws IOException {
            sendOption(RawNbd.OPT_GO, RawNbd.goData(export));
            int type;
            while ((type = readOptReplyType(RawNbd.OPT_GO)) == RawNbd.REP_INFO) {
                // export size, block sizes
            }
            assertEquals(RawNbd.REP_ACK, type, "GO over TLS");
        }

        byte[] read(long handle, long offset, int length) throws IOException {
            out.writeInt(RawNbd.REQUEST_MAGIC);
            out.writeShort(0);
            out.writeShort(RawNbd.CMD_READ);
            out.writeLong(handle);
            out.writeLong(offset);
            out.writeInt(length);
            out.flush();
            assertEquals(RawNbd.SIMPLE_REPLY_MAGIC, in.readInt());
            assertEquals(0, in.readInt(), "READ error");
            assertEquals(handle, in.readLong());
            byte[] data = new byte[length];
            in.readFully(data);
            return data;
        }

        void disconnect() throws IOException {
            out.writeInt(RawNbd.REQUEST_MAGIC);
            out.writeShort(0);
            out.writeShort(RawNbd.CMD_DISC);
            out.writeLong(99);
            out.writeLong(0);
            out.writeInt(0);
            out.flush();
            try {
                assertEquals(-1, in.read(), "the server closes after DISC");
            } catch (EOFException | SocketException e) {
                // closed
            }
            socket.close();
        }
    }
}
