package io.snapbd.server.tls;

import io.snapbd.server.config.ConfigFile;
import io.snapbd.server.config.TlsSettings;
import io.snapbd.server.it.Tools;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Duration;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Loading the PEM files (PKCS#8 and PKCS#1 keys, refusals) and the tls keys of the configuration file. */
class ServerTlsTest {

    @TempDir
    static Path tmp;
    static Path pki;

    static void sh(String script) {
        Tools.run(Duration.ofMinutes(2), Map.of(), List.of("sh", "-c", "cd '" + pki + "' && " + script)).assertOk();
    }

    @BeforeAll
    static void certificates() throws IOException {
        Tools.require("openssl");
        pki = tmp.resolve("pki");
        Files.createDirectories(pki);
        sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout ca-key.pem -out ca-cert.pem -days 2 -subj /CN=ca"
                + " && openssl req -x509 -newkey rsa:2048 -nodes -keyout server-key.pem -out server-cert.pem -days 2 -subj /CN=localhost"
                + " && openssl rsa -in server-key.pem -traditional -out pkcs1-key.pem"
                + " && openssl pkcs8 -topk8 -in server-key.pem -passout pass:secret -out encrypted-key.pem"
                + " && openssl req -x509 -newkey rsa:2048 -nodes -keyout other-key.pem -out other-cert.pem -days 2 -subj /CN=other"
                + " && chmod 600 *-key.pem");
    }

    private static Path dirWith(String name, String key) throws IOException {
        Path d = tmp.resolve(name);
        Files.createDirectories(d);
        Files.copy(pki.resolve("ca-cert.pem"), d.resolve("ca-cert.pem"));
        Files.copy(pki.resolve("server-cert.pem"), d.resolve("server-cert.pem"));
        Files.copy(pki.resolve(key), d.resolve("server-key.pem"));
        Files.setPosixFilePermissions(d.resolve("server-key.pem"), PosixFilePermissions.fromString("rw-------"));
        return d;
    }

    @Test
    void loadsPkcs8AndPkcs1Keys() throws IOException {
        for (String key : new String[]{"server-key.pem", "pkcs1-key.pem"}) {
            assertTrue(Files.readString(pki.resolve(key)).contains(key.equals("pkcs1-key.pem") ? "BEGIN RSA PRIVATE KEY" : "BEGIN PRIVATE KEY"));
            ServerTls t = ServerTls.load(new TlsSettings(TlsSettings.Mode.REQUIRE, dirWith("ok-" + key, key), true));
            assertNotNull(t.newEngine());
            assertTrue(t.required());
            assertTrue(t.newEngine().getNeedClientAuth());
        }
        assertEquals(null, ServerTls.load(TlsSettings.OFF));
    }

    @Test
    void refusesEncryptedKeysAndOpenPermissionsNamingTheFile() throws IOException {
        Path enc = dirWith("encrypted", "encrypted-key.pem");
        IOException e = assertThrows(IOException.class, () -> ServerTls.load(new TlsSettings(TlsSettings.Mode.ON, enc, false)));
        assertTrue(e.getMessage().contains(enc.resolve("server-key.pem").toString()) && e.getMessage().contains("encrypted"), e.getMessage());

        Path open = dirWith("group-readable", "server-key.pem");
        Files.setPosixFilePermissions(open.resolve("server-key.pem"), PosixFilePermissions.fromString("rw-r-----"));
        e = assertThrows(IOException.class, () -> ServerTls.load(new TlsSettings(TlsSettings.Mode.ON, open, false)));
        assertTrue(e.getMessage().contains("chmod 600 " + open.resolve("server-key.pem")), e.getMessage());
        assertFalse(e.getMessage().contains("PRIVATE KEY"), e.getMessage());

        Path missing = tmp.resolve("no-such-dir");
        e = assertThrows(IOException.class, () -> ServerTls.load(new TlsSettings(TlsSettings.Mode.ON, missing, false)));
        assertTrue(e.getMessage().contains(missing.toString()), e.getMessage());
    }

    @Test
    void refusesAKeyThatIsNotTheCertificates() throws IOException {
        Path d = dirWith("wrong-key", "other-key.pem");
        IOException e = assertThrows(IOException.class, () -> ServerTls.load(new TlsSettings(TlsSettings.Mode.ON, d, false)));
        assertTrue(e.getMessage().contains("does not match"), e.getMessage());
    }

    @Test
    void configFileKeys() throws Exception {
        Path conf = tmp.resolve("conf/snapbd.conf");
        Files.createDirectories(conf.getParent());
        Files.writeString(conf, "tls = require\ntls-certificates = pki\ntls-verify-peer = on\n");
        TlsSettings s = ConfigFile.read(conf).tls();
        assertEquals(new TlsSettings(TlsSettings.Mode.REQUIRE, conf.getParent().resolve("pki"), true), s);
        Files.writeString(conf, "tls = maybe\n");
        ConfigFile.ConfigException e = assertThrows(ConfigFile.ConfigException.class, () -> ConfigFile.read(conf).tls());
        assertTrue(e.getMessage().contains("snapbd.conf:1") && e.getMessage().contains("off, on or require"), e.getMessage());
        Files.writeString(conf, "tls = on\n");
        assertThrows(IllegalArgumentException.class, () -> ConfigFile.read(conf).tls().validate());
    }
}
