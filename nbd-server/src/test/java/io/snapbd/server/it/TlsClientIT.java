package io.snapbd.server.it;

import io.snapbd.server.client.ExportEntry;
import io.snapbd.server.client.NbdClient;
import io.snapbd.server.client.NbdUri;
import io.snapbd.server.mirror.LegPeer;
import io.snapbd.server.mirror.NbdLeg;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.TimeUnit;

import static io.snapbd.server.it.SnapshotSupport.json;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * snapbd's own NBD client over TLS (issue 26, "our own client speaks it too"): {@code nbds://} and
 * {@code nbds+unix://} URIs with libnbd's {@code tls-certificates=} and {@code tls-verify-peer=}, against real
 * peers: snapbd with {@code --tls=require --tls-verify-peer} (client certificate) and nbdkit with
 * {@code --tls=require}; {@code replicate --to nbds://...} to both; a mirror leg on an {@code nbds://} URI. And
 * the refusals: a server certificate from another CA or for another host name, no client certificate where one
 * is required, {@code nbd://} against {@code tls=require}, {@code nbds://} against a server without TLS. What the
 * client wrote is read back by libnbd (nbdcopy) or from the peer's backing file, never only by itself.
 * Certificates come from openssl through {@link TlsIT}'s helpers.
 */
@Timeout(value = 10, unit = TimeUnit.MINUTES)
@ExtendWith(ServerLiveness.class)
class TlsClientIT {

    static final int MiB = 1 << 20;

    @TempDir
    static Path tmp;
    /** CA 1, server certificate for localhost/127.0.0.1, client certificate (CA 1). */
    static Path pki;
    /** Only CA 2's certificate. */
    static Path otherCa;
    /** Only CA 1's certificate: no client certificate. */
    static Path noClientCert;
    /** CA 1 and a server certificate (CA 1) for other.invalid only. */
    static Path wrongName;
    /** snapbd with --tls=require --tls-verify-peer, volume "v" (16 MiB). */
    static ServerProcess server;

    @BeforeAll
    static void setUp() throws IOException {
        Tools.require("openssl", "nbdkit", "nbdcopy");
        pki = dir("pki");
        TlsIT.makeCa(pki, "snapbd client test CA 1");
        TlsIT.makeCert(pki, "server", "localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n", pki);
        TlsIT.makeCert(pki, "client", "client one", "extendedKeyUsage=clientAuth\n", pki);
        Path ca2 = dir("ca2");
        TlsIT.makeCa(ca2, "snapbd client test CA 2");
        otherCa = dir("other-ca");
        Files.copy(ca2.resolve("ca-cert.pem"), otherCa.resolve("ca-cert.pem"));
        noClientCert = dir("no-client-cert");
        Files.copy(pki.resolve("ca-cert.pem"), noClientCert.resolve("ca-cert.pem"));
        wrongName = dir("wrong-name");
        Files.copy(pki.resolve("ca-cert.pem"), wrongName.resolve("ca-cert.pem"));
        TlsIT.makeCert(wrongName, "server", "other.invalid", "subjectAltName=DNS:other.invalid\nextendedKeyUsage=serverAuth\n", pki);

        Path data = tmp.resolve("data");
        ServerProcess.snapbd(data, "volume", "create", "v", "--size", "16M", "--save-size", "4M").assertOk();
        server = ServerProcess.start(data, "TlsClientIT", "--warm-up", "off",
                "--tls=require", "--tls-certificates=" + pki, "--tls-verify-peer");
    }

    @AfterAll
    static void tearDown() {
        if (server != null) {
            server.close();
        }
    }

    private static Path dir(String name) throws IOException {
        return Files.createDirectories(tmp.resolve(name));
    }

    private static String nbds(String host, int port, String export, Path certs) {
        return "nbds://" + host + ":" + port + "/" + export + "?tls-certificates=" + certs;
    }

    private static byte[] random(long seed, int n) {
        byte[] b = new byte[n];
        new Random(seed).nextBytes(b);
        return b;
    }

    /** {@code [offset, +length)} of an export as libnbd's nbdcopy reads it (an independent client). */
    private static byte[] nbdcopy(String uri, long offset, int length, String name) throws IOException {
        Path out = tmp.resolve(name + ".img");
        Files.deleteIfExists(out);
        Tools.run("nbdcopy", uri, out.toString()).assertOk();
        try (RandomAccessFile f = new RandomAccessFile(out.toFile(), "r")) {
            byte[] b = new byte[length];
            f.seek(offset);
            f.readFully(b);
            return b;
        }
    }

    private static void writeAndReadBack(NbdClient c, long offset, byte[] data) throws IOException {
        c.write(offset, ByteBuffer.wrap(data), false);
        c.flush();
        ByteBuffer back = ByteBuffer.allocate(data.length);
        c.read(offset, back);
        assertArrayEquals(data, back.array(), "read back over TLS");
    }

    private static IOException refused(String uri) {
        return assertThrows(IOException.class, () -> {
            try (NbdClient c = NbdClient.connect(NbdUri.parse(uri))) {
                c.read(0, ByteBuffer.allocate(512));
            }
        });
    }

    // ---- against snapbd --tls=require --tls-verify-peer ----------------------------------------------------------

    @Test
    void readsAndWritesOverTlsWithAClientCertificate() throws IOException {
        byte[] big = random(1, 3 * MiB / 2);
        byte[] small = random(2, 4096);
        for (String host : new String[]{"localhost", "127.0.0.1"}) {
            try (NbdClient c = NbdClient.connect(NbdUri.parse(nbds(host, server.port(), "v", pki)))) {
                assertEquals(16L * MiB, c.size());
                writeAndReadBack(c, 3 * MiB, big);         // more than one TLS record per request and reply
                writeAndReadBack(c, 512, small);
            }
        }
        List<ExportEntry> list = NbdClient.list(NbdUri.parse(nbds("localhost", server.port(), "", pki)));
        assertTrue(list.stream().anyMatch(e -> e.name().equals("v")), list.toString());
        // libnbd sees what our client wrote.
        String libnbd = nbds("localhost", server.port(), "v", pki);
        assertArrayEquals(big, nbdcopy(libnbd, 3 * MiB, big.length, "v-big"));
        assertArrayEquals(small, nbdcopy(libnbd, 512, small.length, "v-small"));
    }

    @Test
    void plainNbdAgainstTlsRequireIsRefusedNamingTls() {
        IOException e = refused("nbd://localhost:" + server.port() + "/v");
        assertTrue(e.getMessage().contains("NBD_REP_ERR_TLS_REQD") && e.getMessage().contains("requires TLS")
                && e.getMessage().contains("nbds://"), e.getMessage());
        IOException list = assertThrows(IOException.class, () -> NbdClient.list(NbdUri.parse("nbd://localhost:" + server.port() + "/")));
        assertTrue(list.getMessage().contains("NBD_REP_ERR_TLS_REQD"), list.getMessage());
    }

    @Test
    void serverCertificateFromAnotherCaIsRefused() {
        IOException e = refused(nbds("localhost", server.port(), "v", otherCa));
        assertTrue(e.getMessage().contains("TLS handshake failed") && e.getMessage().contains("not signed by a trusted CA")
                && e.getMessage().contains(otherCa.resolve("ca-cert.pem").toString()), e.getMessage());
    }

    @Test
    void withoutAClientCertificateVerifyPeerRefuses() {
        IOException e = refused(nbds("localhost", server.port(), "v", noClientCert));
        assertTrue(e.getMessage().contains("TLS") && e.getMessage().contains("refused the client certificate"), e.getMessage());
    }

    @Test
    void nbdsUnixAgainstSnapbdsPlainUnixSocketRefusesToGoOnInPlainText() {
        // snapbd's Unix socket stays plain (local): an nbds+unix:// client must not settle for that.
        IOException e = refused("nbds+unix:///v?socket=" + server.socket() + "&tls-certificates=" + pki);
        assertTrue(e.getMessage().contains("does not offer TLS") && e.getMessage().contains("plain text"), e.getMessage());
    }

    @Test
    void unreadableClientKeyIsRefusedBeforeConnecting() throws IOException {
        Path loose = dir("loose-key");
        for (String f : new String[]{"ca-cert.pem", "client-cert.pem", "client-key.pem"}) {
            Files.copy(pki.resolve(f), loose.resolve(f));
        }
        Files.setPosixFilePermissions(loose.resolve("client-key.pem"), java.nio.file.attribute.PosixFilePermissions.fromString("rw-r--r--"));
        IOException e = refused(nbds("localhost", server.port(), "v", loose));
        assertTrue(e.getMessage().contains("client-key.pem") && e.getMessage().contains("group or others"), e.getMessage());
    }

    // ---- against nbdkit --tls=require ----------------------------------------------------------------------------

    @Test
    void nbdkitWithTlsRequire() throws Exception {
        Path file = tmp.resolve("kit.img");
        try (RandomAccessFile f = new RandomAccessFile(file.toFile(), "rw")) {
            f.setLength(8 * MiB);
        }
        try (LegPeer kit = LegPeer.nbdkit(tmp, "kit-tls", "--tls=require", "--tls-certificates=" + pki, "file", file.toString())) {
            String uri = "nbds+unix:///?socket=" + tmp.resolve("kit-tls.sock") + "&tls-certificates=" + noClientCert;
            byte[] data = random(3, MiB + 4096);
            try (NbdClient c = NbdClient.connect(NbdUri.parse(uri))) {
                writeAndReadBack(c, 4096, data);
            }
            byte[] onDisk = Arrays.copyOfRange(Files.readAllBytes(file), 4096, 4096 + data.length);
            assertArrayEquals(data, onDisk, "nbdkit's backing file holds what the client wrote over TLS");
            // Over a Unix socket only the chain is checked, unless tls-hostname= names the host to check for.
            try (NbdClient c = NbdClient.connect(NbdUri.parse(uri + "&tls-hostname=localhost"))) {
                writeAndReadBack(c, 0, random(6, 4096));
            }
            IOException named = refused(uri + "&tls-hostname=storage2.invalid");
            assertTrue(named.getMessage().contains("does not name host storage2.invalid"), named.getMessage());
            IOException plain = refused("nbd+unix:///?socket=" + tmp.resolve("kit-tls.sock"));
            assertTrue(plain.getMessage().contains("NBD_REP_ERR_TLS_REQD"), plain.getMessage());
        }
        try (LegPeer kit = LegPeer.nbdkit(tmp, "kit-plain", "memory", "1M")) {
            IOException e = refused("nbds+unix:///?socket=" + tmp.resolve("kit-plain.sock") + "&tls-certificates=" + pki);
            assertTrue(e.getMessage().contains("does not offer TLS") && e.getMessage().contains("plain text"), e.getMessage());
        }
    }

    @Test
    void serverCertificateForAnotherHostIsRefusedUnlessVerificationIsOff() throws Exception {
        int port;
        try (ServerSocket s = new ServerSocket(0)) {
            port = s.getLocalPort();
        }
        Path pid = tmp.resolve("kit-name.pid");
        Process kit = Tools.start(tmp.resolve("kit-name.log"), List.of("nbdkit", "--foreground", "--exit-with-parent",
                "-i", "127.0.0.1", "-p", String.valueOf(port), "-P", pid.toString(),
                "--tls=require", "--tls-certificates=" + wrongName, "memory", "1M"));
        try {
            for (int i = 0; i < 1500 && !(Files.exists(pid) && Files.size(pid) > 0); i++) {
                assertTrue(kit.isAlive(), "nbdkit exited: " + Files.readString(tmp.resolve("kit-name.log")));
                Thread.sleep(20);
            }
            try (SocketChannel ch = SocketChannel.open(new InetSocketAddress("127.0.0.1", port))) {
                assertTrue(ch.isConnected());
            }
            IOException e = refused(nbds("localhost", port, "", noClientCert));
            assertTrue(e.getMessage().contains("does not name host localhost"), e.getMessage());
            // tls-hostname= names the host the certificate must carry (libnbd's meaning): the one it names works,
            // another is refused naming it.
            try (NbdClient c = NbdClient.connect(NbdUri.parse(nbds("localhost", port, "", noClientCert) + "&tls-hostname=other.invalid"))) {
                writeAndReadBack(c, 0, random(5, 4096));
            }
            e = refused(nbds("127.0.0.1", port, "", noClientCert) + "&tls-hostname=third.invalid");
            assertTrue(e.getMessage().contains("does not name host third.invalid"), e.getMessage());
            // tls-verify-peer=false: encrypted, not authenticated (libnbd's meaning).
            try (NbdClient c = NbdClient.connect(NbdUri.parse(nbds("localhost", port, "", noClientCert) + "&tls-verify-peer=false"))) {
                writeAndReadBack(c, 0, random(4, 8192));
            }
        } finally {
            kit.destroy();
            kit.waitFor();
        }
    }

    // ---- replicate and mirror legs ---------------------------------------------------------------------------

    @Test
    void replicateToTlsSnapbdAndToNbdkitWithTlsRequire() throws Exception {
        Tools.require("nbdkit", "nbdcopy");
        int size = 8 * MiB;
        server.cli("volume", "create", "copy", "--size", String.valueOf(size), "--save-size", "1M").assertOk();
        try (ServerProcess a = ServerProcess.start(tmp.resolve("src"), "TlsClientIT-src", "--warm-up", "off");
             LegPeer kit = LegPeer.nbdkit(tmp, "kit-repl", "--tls=require", "--tls-certificates=" + pki, "memory", String.valueOf(size))) {
            a.cli("volume", "create", "s", "--size", String.valueOf(size), "--save-size", "1M").assertOk();
            Path img = TestData.write(tmp.resolve("src.img"), TestData.imageWithZeroRegions(7, size));
            Tools.run("nbdcopy", img.toString(), a.unixUri("s")).assertOk();
            a.cli("snapshot", "create", "s", "L").assertOk();
            byte[] expected = Files.readAllBytes(img);
            String toSnapbd = nbds("localhost", server.port(), "copy", pki);
            String toKit = "nbds+unix:///?socket=" + tmp.resolve("kit-repl.sock") + "&tls-certificates=" + pki;
            for (String target : new String[]{toSnapbd, toKit}) {
                Tools.Result r = a.cli("replicate", "s", "--to", target, "--snapshot", "L",
                        "--source-socket", a.socket().toString(), "--verify").assertOk();
                assertTrue(r.stdout().contains("full copy"), r.stdout());
                assertArrayEquals(expected, nbdcopy(target, 0, size, "replica"), "the TLS target equals s@L: " + target);
            }
            Tools.Result plain = a.cli("replicate", "s", "--to", "nbd://localhost:" + server.port() + "/copy", "--snapshot", "L",
                    "--source-socket", a.socket().toString());
            assertTrue(plain.exit() != 0 && plain.stderr().contains("NBD_REP_ERR_TLS_REQD"), plain.toString());

            // The state file knows the target by server and export: another certificate directory (the same
            // certificates, copied) is the same target, so the replica is up to date rather than refused.
            Path state = tmp.resolve("replica-state.json");
            a.cli("replicate", "s", "--to", toSnapbd, "--snapshot", "L", "--state", state.toString(),
                    "--source-socket", a.socket().toString()).assertOk();
            Path pkiCopy = dir("pki-copy");
            for (String f : new String[]{"ca-cert.pem", "client-cert.pem", "client-key.pem"}) {
                Files.copy(pki.resolve(f), pkiCopy.resolve(f));
            }
            Tools.Result again = a.cli("replicate", "s", "--to", nbds("localhost", server.port(), "copy", pkiCopy),
                    "--state", state.toString(), "--source-socket", a.socket().toString()).assertOk();
            assertTrue(again.stdout().contains("up to date"), again.toString());
        }
    }

    @Test
    void mirrorLegOnAnNbdsUri() throws Exception {
        long size = 16L * MiB;
        server.cli("volume", "create", "leg", "--size", String.valueOf(NbdLeg.exportBytes(size)), "--save-size", "1M").assertOk();
        String leg = nbds("localhost", server.port(), "leg", pki);
        Path data = tmp.resolve("mirrored");
        ServerProcess.snapbd(data, "volume", "create", "m", "--size", "16M", "--save-size", "1M", "--mirror", leg).assertOk();
        try (ServerProcess primary = ServerProcess.start(data, "TlsClientIT-mirror", "--warm-up", "off")) {
            Path img = TestData.write(tmp.resolve("m.img"), TestData.imageWithZeroRegions(9, (int) size));
            Tools.run("nbdcopy", img.toString(), primary.unixUri("m")).assertOk();
            var st = json(primary.cli("mirror", "status", "m", "--json"));
            assertEquals(leg, st.path("legs").get(1).path("uri").asText(), st.toString());
            assertEquals("in-sync", st.path("legs").get(1).path("state").asText(), st.toString());
            assertTrue(st.path("legs").get(1).path("writes").asLong() > 0, st.toString());
            assertArrayEquals(Files.readAllBytes(img), nbdcopy(leg, 0, (int) size, "leg"), "the nbds:// leg holds the volume's data");
        }
    }
}
