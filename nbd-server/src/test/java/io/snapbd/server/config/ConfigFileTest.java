package io.snapbd.server.config;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class ConfigFileTest {

    @TempDir
    Path dir;

    @Test
    void appliesKnownKeys() throws Exception {
        Path f = dir.resolve("snapbd.conf");
        Files.writeString(f, "# comment\n\ndata-dir = /var/lib/snapbd\ntcp = none\nunix = /run/snapbd/nbd.sock\n"
                + "handshake-timeout = 2.5\nmax-connections = 8\ndefault-volume-size = 2G\n");
        ConfigFile c = ConfigFile.read(f);
        assertEquals("/var/lib/snapbd", c.dataDir());
        ServerConfig s = c.apply(ServerConfig.defaults(Path.of("/var/lib/snapbd")));
        assertNull(s.tcp());
        assertEquals(Path.of("/run/snapbd/nbd.sock"), s.unix());
        assertEquals(2500, s.handshakeTimeout().toMillis());
        assertEquals(8, s.maxConnections());
        assertEquals(2L << 30, s.defaultVolumeSize());
    }

    @Test
    void unknownKeyNamesFileAndLine() throws Exception {
        Path f = dir.resolve("bad.conf");
        Files.writeString(f, "tcp = :10809\nlisten = 1\n");
        ConfigFile.ConfigException e = assertThrows(ConfigFile.ConfigException.class, () -> ConfigFile.read(f));
        assertTrue(e.getMessage().startsWith(f + ":2: unknown key 'listen'"), e.getMessage());
    }

    @Test
    void badValueNamesFileAndLine() throws Exception {
        Path f = dir.resolve("bad.conf");
        Files.writeString(f, "\nmax-connections = many\n");
        ConfigFile c = ConfigFile.read(f);
        ConfigFile.ConfigException e = assertThrows(ConfigFile.ConfigException.class,
                () -> c.apply(ServerConfig.defaults(dir)));
        assertTrue(e.getMessage().startsWith(f + ":2: max-connections"), e.getMessage());
    }

    @Test
    void deadConnectionTimeoutIsWholeSecondsNamingFileAndLine() throws Exception {
        Path f = dir.resolve("dead.conf");
        Files.writeString(f, "tcp = none\n");
        assertEquals(null, ConfigFile.read(f).deadConnectionTimeout());
        Files.writeString(f, "tcp = none\ndead-connection-timeout = 5\n");
        assertEquals(Integer.valueOf(5), ConfigFile.read(f).deadConnectionTimeout());
        for (String bad : new String[]{"-1", "1.5", "86401", "soon"}) {
            Files.writeString(f, "tcp = none\ndead-connection-timeout = " + bad + "\n");
            ConfigFile c = ConfigFile.read(f);
            ConfigFile.ConfigException e = assertThrows(ConfigFile.ConfigException.class, c::deadConnectionTimeout);
            assertTrue(e.getMessage().startsWith(f + ":2: dead-connection-timeout: '" + bad + "'"), e.getMessage());
        }
    }

    @Test
    void ambiguousSizeNamesFileAndLine() throws Exception {
        Path f = dir.resolve("size.conf");
        Files.writeString(f, "default-volume = v\ndefault-volume-size = 1MB\n");
        ConfigFile c = ConfigFile.read(f);
        ConfigFile.ConfigException e = assertThrows(ConfigFile.ConfigException.class,
                () -> c.apply(ServerConfig.defaults(dir)));
        assertTrue(e.getMessage().startsWith(f + ":2: default-volume-size") && e.getMessage().contains("ambiguous"), e.getMessage());
    }

    /** Found by ConfigFuzzTest: "NaN" and "1e-9" were accepted as a timeout of 0 ms. */
    @Test
    void timeoutsBelowAMillisecondOrNotANumberAreRefused() throws Exception {
        for (String v : new String[]{"NaN", "1e-9", "0.0009", "-0"}) {
            Path f = dir.resolve("t.conf");
            Files.writeString(f, "handshake-timeout = " + v + "\n");
            ConfigFile.ConfigException e = assertThrows(ConfigFile.ConfigException.class,
                    () -> ConfigFile.read(f).apply(ServerConfig.defaults(dir)), v);
            assertTrue(e.getMessage().startsWith(f + ":1: handshake-timeout: '" + v + "' must be between 0.001 and 86400"), e.getMessage());
            Files.writeString(f, "stop-timeout = " + v + "\n");
            e = assertThrows(ConfigFile.ConfigException.class, () -> ConfigFile.read(f).service(), v);
            assertTrue(e.getMessage().startsWith(f + ":1: stop-timeout: "), e.getMessage());
        }
        assertEquals(1, ConfigFile.seconds("0.001"));
    }

    @Test
    void parsesHostPort() {
        assertEquals(10809, ServerConfig.parseHostPort("127.0.0.1:10809").getPort());
        assertTrue(ServerConfig.parseHostPort("[::1]:10809").getAddress().isLoopbackAddress());
        assertEquals("127.0.0.1", ServerConfig.parseHostPort(":9").getHostString());
        assertThrows(IllegalArgumentException.class, () -> ServerConfig.parseHostPort("localhost"));
        assertThrows(IllegalArgumentException.class, () -> ServerConfig.parseHostPort("h:70000"));
    }
}
