package io.snapbd.server.it;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
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

/**
 * Per-export access rules against real clients: nbdinfo --list, nbdinfo, nbdcopy and qemu-io with client
 * certificates (two subjects from the server's CA, one from another CA with the same common name), plain
 * loopback TCP and the Unix socket; and the admin socket's peer-credential check, with the CLI run as
 * {@code nobody}. Certificates are made with openssl as in {@link TlsIT}.
 */
@Timeout(value = 10, unit = TimeUnit.MINUTES)
@ExtendWith(ServerLiveness.class)
class AccessIT {

    static final long MiB = 1L << 20;

    @TempDir
    static Path tmp;
    static Path pki;
    /** ca-cert.pem and a client certificate "client one" / "client two" from CA 1. */
    static Path one;
    static Path two;
    /** A client certificate "client one" from another CA (same subject, other issuer). */
    static Path impostor;
    /** ca-cert.pem only. */
    static Path noCert;
    static Path config;
    static ServerProcess server;

    static final String RULES = """
            tls = on
            tls-certificates = %s
            access = alpha cn:client one rw
            access = alpha@s1 dn:CN=client two ro
            access = beta cn:client two ro
            access = beta unix rw
            access = gamma loopback rw
            access = delta loopback ro
            """;

    @BeforeAll
    static void setUp() throws IOException {
        Tools.require("openssl", "nbdinfo", "nbdcopy", "qemu-io");
        pki = tmp.resolve("pki");
        Files.createDirectories(pki);
        TlsIT.makeCa(pki, "access test CA");
        TlsIT.makeCert(pki, "server", "localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n", pki);
        one = clientDir("one", "client one", pki);
        two = clientDir("two", "client two", pki);
        Path ca2 = tmp.resolve("ca2");
        Files.createDirectories(ca2);
        TlsIT.makeCa(ca2, "another CA");
        impostor = clientDir("impostor", "client one", ca2);
        noCert = tmp.resolve("nocert");
        Files.createDirectories(noCert);
        Files.copy(pki.resolve("ca-cert.pem"), noCert.resolve("ca-cert.pem"));

        Path data = tmp.resolve("data");
        for (String v : List.of("alpha", "beta", "gamma", "delta")) {
            ServerProcess.snapbd(data, "volume", "create", v, "--size", "16M", "--save-size", "4M").assertOk();
        }
        ServerProcess.snapbd(data, "snapshot", "create", "alpha", "s1").assertOk();
        ServerProcess.snapbd(data, "snapshot", "create", "alpha", "s2").assertOk();
        config = tmp.resolve("snapbd.conf");
        Files.writeString(config, RULES.formatted(pki));
        server = ServerProcess.start(data, "AccessIT", "--warm-up", "off", "--config", config.toString());
    }

    /** DIR with CA 1's ca-cert.pem and client-cert.pem / client-key.pem for {@code cn}, signed by {@code caDir}'s CA. */
    static Path clientDir(String name, String cn, Path caDir) throws IOException {
        Path dir = tmp.resolve(name);
        Files.createDirectories(dir);
        TlsIT.makeCert(dir, "client", cn, "extendedKeyUsage=clientAuth\n", caDir);
        Files.copy(pki.resolve("ca-cert.pem"), dir.resolve("ca-cert.pem"), java.nio.file.StandardCopyOption.REPLACE_EXISTING);
        return dir;
    }

    @AfterAll
    static void tearDown() {
        if (server != null) {
            server.close();
        }
    }

    static String nbds(String export, Path certs) {
        return "nbds://localhost:" + server.port() + "/" + export + "?tls-certificates=" + certs;
    }

    static String unix(String export) {
        return "nbd+unix:///" + export + "?socket=" + server.socket();
    }

    /** The export names nbdinfo --list shows. */
    static List<String> list(String uri) {
        Tools.Result r = Tools.run("nbdinfo", "--list", "--json", uri);
        if (r.exit() != 0) {
            return List.of("<nbdinfo failed: " + r.stderr().strip() + ">");
        }
        List<String> names = new java.util.ArrayList<>();
        java.util.regex.Matcher m = java.util.regex.Pattern.compile("\"export-name\": \"([^\"]*)\"").matcher(r.stdout());
        while (m.find()) {
            names.add(m.group(1));
        }
        java.util.Collections.sort(names);
        return names;
    }

    @Test
    void listShowsEachClientOnlyWhatItMayOpen() {
        assertEquals(List.of("alpha", "alpha@s2", "delta", "gamma"), list(nbds("", one)), "client one (and loopback)");
        assertEquals(List.of("alpha@s1", "beta", "delta", "gamma"), list(nbds("", two)), "client two (and loopback)");
        // No certificate, or one from another CA with the same subject: the loopback rules only, or refused.
        assertEquals(List.of("delta", "gamma"), list(nbds("", noCert)), "TLS without a client certificate");
        List<String> forged = list(nbds("", impostor));
        assertFalse(forged.contains("alpha") || forged.contains("alpha@s2"), "certificate from another CA: " + forged);
        assertEquals(List.of("delta", "gamma"), list("nbd://localhost:" + server.port() + "/"), "plain loopback TCP");
        assertEquals(List.of("beta"), list(unix("")), "Unix socket");
    }

    @Test
    void hiddenExportCannotBeOpenedAndLooksLikeANonexistentOne() throws IOException {
        Tools.Result hidden = Tools.run("nbdinfo", nbds("alpha", two));
        assertNotEquals(0, hidden.exit(), hidden.toString());
        assertFalse(hidden.stdout().contains("export-size"), hidden.stdout());
        Tools.Result missing = Tools.run("nbdinfo", nbds("nosuch", two));
        assertNotEquals(0, missing.exit(), missing.toString());
        assertEquals(missing.stderr().replace("nosuch", "NAME"), hidden.stderr().replace("alpha", "NAME"),
                "a hidden export is answered like one that does not exist");
        Tools.Result nbdcopy = Tools.run("nbdcopy", unix("alpha"), tmp.resolve("alpha.img").toString());
        assertNotEquals(0, nbdcopy.exit(), "alpha over the Unix socket: " + nbdcopy);
        Tools.run("nbdinfo", nbds("alpha", one)).assertOk();

        // On the wire: INFO and GO answer NBD_REP_ERR_UNKNOWN with the same text as for a name that does not exist,
        // meta contexts too, and EXPORT_NAME closes the connection.
        try (RawNbd raw = RawNbd.connect(server.port())) {
            raw.startHandshake();
            for (int opt : new int[]{RawNbd.OPT_INFO, RawNbd.OPT_GO}) {
                raw.sendOption(opt, RawNbd.goData("alpha"));
                RawNbd.OptReply a = raw.readOptReply();
                raw.sendOption(opt, RawNbd.goData("nosuch"));
                RawNbd.OptReply n = raw.readOptReply();
                assertEquals(RawNbd.REP_ERR_UNKNOWN, a.type(), a.toString());
                assertEquals(n.type(), a.type());
                assertEquals(n.text().replace("nosuch", "NAME"), a.text().replace("alpha", "NAME"));
            }
            raw.sendOption(RawNbd.OPT_STRUCTURED_REPLY, new byte[0]);
            assertEquals(RawNbd.REP_ACK, raw.readOptReply().type());
            raw.sendOption(RawNbd.OPT_LIST_META_CONTEXT, RawNbd.metaContextData("alpha"));
            assertEquals(RawNbd.REP_ERR_UNKNOWN, raw.readOptReply().type(), "LIST_META_CONTEXT on a hidden export");
            raw.sendOption(RawNbd.OPT_EXPORT_NAME, "alpha".getBytes(StandardCharsets.UTF_8));
            TlsIT.assertClosed(raw.in());
        }
    }

    @Test
    void readOnlyGrantCannotWrite() throws IOException {
        // beta: read-write over the Unix socket, read-only for client two.
        Tools.run("qemu-io", "-f", "raw", unix("beta"), "-c", "write -P 0x11 1M 64k").assertOk();
        Tools.Result info = Tools.run("nbdinfo", nbds("beta", two)).assertOk();
        assertTrue(info.stdout().contains("is_read_only: true"), info.stdout());
        String object = "tls-creds-x509,id=tls0,dir=" + two + ",endpoint=client";
        String image = "driver=nbd,host=localhost,port=" + server.port() + ",export=beta,tls-creds=tls0";
        Tools.Result write = Tools.run("qemu-io", "--object", object, "--image-opts", image, "-c", "write -P 0x22 1M 64k");
        assertTrue(write.exit() != 0 || !write.stdout().contains("wrote"), "qemu-io wrote through a read-only grant: " + write);
        Path zeros = tmp.resolve("zeros.img");
        Files.write(zeros, new byte[(int) MiB]);
        Tools.Result copy = Tools.run("nbdcopy", zeros.toString(), nbds("beta", two));
        assertNotEquals(0, copy.exit(), "nbdcopy wrote through a read-only grant: " + copy);
        // Read through the grant, and over the Unix socket: the data is unchanged.
        Tools.run("qemu-io", "-r", "--object", object, "--image-opts", image, "-c", "read -P 0x11 1M 64k").assertOk();
        Tools.Result read = Tools.run("qemu-io", "-r", "-f", "raw", unix("beta"), "-c", "read -P 0x11 1M 64k").assertOk();
        assertFalse(read.stdout().contains("Pattern verification failed"), read.stdout());

        // A client that ignores NBD_FLAG_READ_ONLY and writes anyway gets EPERM (delta: loopback ro).
        try (RawNbd raw = RawNbd.connect(server.port())) {
            raw.startHandshake();
            List<RawNbd.OptReply> r = raw.go("delta");
            assertEquals(RawNbd.REP_ACK, r.get(r.size() - 1).type(), r.toString());
            assertTrue((raw.transmissionFlags & 2) != 0, "NBD_FLAG_READ_ONLY in " + raw.transmissionFlags);
            byte[] before = raw.read(1, 0, 4096);
            byte[] junk = new byte[4096];
            new Random(26).nextBytes(junk);
            raw.sendRequest(0, RawNbd.CMD_WRITE, 2, 0, junk.length, junk);
            assertEquals(1, raw.readReply(0).error(), "WRITE through a read-only grant: EPERM");
            assertArrayEquals(before, raw.read(3, 0, 4096));
        }
    }

    @Test
    void snapshotsInheritTheirVolumesRuleUnlessNamed() {
        // alpha@s2 has no rule of its own: client one's rule on alpha covers it, client two's does not.
        Tools.run("nbdinfo", nbds("alpha@s2", one)).assertOk();
        assertNotEquals(0, Tools.run("nbdinfo", nbds("alpha@s2", two)).exit());
        // alpha@s1 is named: only client two (by its exact subject), read-only; client one's volume rule no longer applies.
        Tools.Result s1 = Tools.run("nbdinfo", nbds("alpha@s1", two)).assertOk();
        assertTrue(s1.stdout().contains("is_read_only: true"), s1.stdout());
        assertNotEquals(0, Tools.run("nbdinfo", nbds("alpha@s1", one)).exit());
    }

    @Test
    void unixSocketRuleGrantsReadWrite() throws IOException {
        byte[] data = new byte[(int) (4 * MiB)];
        new Random(7).nextBytes(data);
        Path in = tmp.resolve("beta-in.img");
        Path out = tmp.resolve("beta-out.img");
        Files.write(in, data);
        Tools.run("nbdcopy", in.toString(), unix("beta")).assertOk();
        Tools.run("nbdcopy", unix("beta"), out.toString()).assertOk();
        assertArrayEquals(data, java.util.Arrays.copyOf(Files.readAllBytes(out), data.length));
        assertNotEquals(0, Tools.run("nbdinfo", unix("gamma")).exit(), "loopback does not cover the Unix socket");
    }

    @Test
    void reloadAppliesNewRulesToNewConnections() throws Exception {
        Path data2 = tmp.resolve("data-reload");
        ServerProcess.snapbd(data2, "volume", "create", "r1", "--size", "16M", "--save-size", "4M").assertOk();
        Path conf = tmp.resolve("reload.conf");
        Files.writeString(conf, "tls = on\ntls-certificates = " + pki + "\naccess = r1 cn:client two rw\n");
        try (ServerProcess s = ServerProcess.start(data2, "AccessIT-reload", "--warm-up", "off", "--config", conf.toString())) {
            String uri = "nbds://localhost:" + s.port() + "/?tls-certificates=" + one;
            assertEquals(List.of(), list(uri));
            Files.writeString(conf, "tls = on\ntls-certificates = " + pki + "\naccess = r1 cn:client one ro\n");
            new ProcessBuilder("kill", "-HUP", String.valueOf(s.process().pid())).start().waitFor();
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            while (!s.log().contains("access rules (for new connections)") && System.nanoTime() < deadline) {
                Thread.sleep(50);
            }
            assertTrue(s.log().contains("access rules (for new connections): r1 cn:client one ro"), s.log());
            assertEquals(List.of("r1"), list(uri));
            assertEquals(List.of(), list("nbds://localhost:" + s.port() + "/?tls-certificates=" + two));
        }
    }

    @Test
    void badRuleStopsTheStartNamingTheLine() throws IOException {
        Path conf = tmp.resolve("bad.conf");
        Files.writeString(conf, "# rules\naccess = alpha someone rw\n");
        Tools.Result r = ServerProcess.snapbd(tmp.resolve("data-bad"), "serve", "--tcp", "127.0.0.1:0", "--unix", "none",
                "--warm-up", "off", "--config", conf.toString());
        assertEquals(2, r.exit(), r.toString());
        assertTrue(r.stderr().contains(conf + ":2: access: unknown principal 'someone'"), r.stderr());
    }

    // ---- the admin socket --------------------------------------------------------------------------------------

    @Test
    void adminSocketRefusesOtherUsersByPeerCredentials() throws Exception {
        Tools.require("setpriv");
        // A directory everyone may traverse, a jar everyone may read, and an admin socket anyone may connect to
        // (as if its mode were wrong): what remains to refuse user nobody is the server's SO_PEERCRED check.
        Path open = Files.createTempDirectory(Path.of("/tmp"), "snapbd-admin");
        try {
            Files.setPosixFilePermissions(open, PosixFilePermissions.fromString("rwxr-xr-x"));
            Path jar = open.resolve("snapbd.jar");
            Files.copy(ServerProcess.jar(), jar);
            Files.setPosixFilePermissions(jar, PosixFilePermissions.fromString("rw-r--r--"));
            Path data = open.resolve("data");
            ServerProcess.snapbd(data, "volume", "create", "adm", "--size", "16M", "--save-size", "4M").assertOk();
            Files.setPosixFilePermissions(data, PosixFilePermissions.fromString("rwxr-xr-x"));
            try (ServerProcess s = ServerProcess.start(data, "AccessIT-admin", "--warm-up", "off")) {
                Path sock = data.resolve("admin.sock");
                assertEquals("rw-------", PosixFilePermissions.toString(Files.getPosixFilePermissions(sock)), "admin socket mode");
                Files.setPosixFilePermissions(sock, PosixFilePermissions.fromString("rw-rw-rw-"));

                Tools.Result nobody = Tools.run(Duration.ofMinutes(2), Map.of(), List.of("setpriv", "--reuid=65534", "--regid=65534",
                        "--clear-groups", ServerProcess.javaBin(), "-jar", jar.toString(),
                        "volume", "create", "intruder", "--size", "16M", "--data-dir", data.toString()));
                assertEquals(1, nobody.exit(), nobody.toString());
                assertTrue(nobody.stderr().contains("permission denied: uid 65534 may not use the admin socket"), nobody.stderr());
                String log = s.log();
                assertTrue(log.matches("(?s).*admin: refused a connection from uid 65534 \\(pid [0-9]+\\).*"), log);
                assertFalse(log.contains("volume.create ok"), log);
                // root may.
                Tools.Result root = s.cli("volume", "list").assertOk();
                assertFalse(root.stdout().contains("intruder"), root.stdout());
            }
        } finally {
            Tools.run("rm", "-rf", open.toString());
        }
    }
}
