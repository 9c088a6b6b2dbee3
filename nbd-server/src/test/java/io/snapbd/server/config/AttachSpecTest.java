package io.snapbd.server.config;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class AttachSpecTest {

    @TempDir
    Path dir;

    @Test
    void parsesExportDeviceAndOptions() {
        AttachSpec a = AttachSpec.parse("vol0 /dev/nbd0", "f:1");
        assertEquals("vol0", a.export());
        assertEquals("/dev/nbd0", a.device());
        assertFalse(a.readOnly());
        assertNull(a.timeoutSeconds());
        AttachSpec b = AttachSpec.parse("  vol0@s1   nbd3  read-only timeout=30 ", "f:2");
        assertEquals("vol0@s1", b.export());
        assertEquals("/dev/nbd3", b.device());
        assertTrue(b.readOnly());
        assertEquals(30, b.timeoutSeconds());
        assertEquals("f:2", b.origin());
    }

    @Test
    void refusesWhatIsNotAnNbdDevice() {
        assertTrue(assertThrows(IllegalArgumentException.class, () -> AttachSpec.parse("vol0 /dev/sda", "f:1"))
                .getMessage().contains("not an nbd device"));
        assertThrows(IllegalArgumentException.class, () -> AttachSpec.parse("vol0", "f:1"));
        assertThrows(IllegalArgumentException.class, () -> AttachSpec.parse("vol0 /dev/nbd0 fast", "f:1"));
        assertThrows(IllegalArgumentException.class, () -> AttachSpec.parse("vol0 /dev/nbd0 timeout=x", "f:1"));
        assertThrows(IllegalArgumentException.class, () -> AttachSpec.parse("vol0 /dev/nbd0 timeout=0", "f:1"));
    }

    @Test
    void attachLinesRepeatAndKeepTheirLine() throws Exception {
        Path f = dir.resolve("snapbd.conf");
        Files.writeString(f, "tcp = none\nattach = vol0 /dev/nbd0\n# c\nattach = vol0@s1 /dev/nbd1 read-only timeout=60\n"
                + "max-connections = 8\n");
        ServerConfig c = ConfigFile.read(f).apply(ServerConfig.defaults(dir));
        List<AttachSpec> specs = c.attachments();
        assertEquals(2, specs.size());
        assertEquals("/dev/nbd0", specs.get(0).device());
        assertEquals(f + ":4", specs.get(1).origin());
        assertTrue(specs.get(1).readOnly());
        assertEquals(8, c.maxConnections());
        assertEquals(2, c.withTcp(null).withLimits(c.handshakeTimeout(), 9).attachments().size(), "the with* copies keep attachments");
    }

    @Test
    void badAttachLineNamesFileAndLine() throws Exception {
        Path f = dir.resolve("bad.conf");
        Files.writeString(f, "tcp = none\n\nattach = vol0 /dev/loop0\n");
        ConfigFile.ConfigException e = assertThrows(ConfigFile.ConfigException.class, () -> ConfigFile.read(f).apply(ServerConfig.defaults(dir)));
        assertTrue(e.getMessage().startsWith(f + ":3: attach: "), e.getMessage());

        Path g = dir.resolve("dup.conf");
        Files.writeString(g, "attach = vol0 /dev/nbd0\nattach = vol1 nbd0\n");
        e = assertThrows(ConfigFile.ConfigException.class, () -> ConfigFile.read(g).apply(ServerConfig.defaults(dir)));
        assertTrue(e.getMessage().startsWith(g + ":2: attach: /dev/nbd0 is already attached on " + g + ":1"), e.getMessage());
    }
}
