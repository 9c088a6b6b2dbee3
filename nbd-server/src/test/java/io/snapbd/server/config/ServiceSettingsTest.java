package io.snapbd.server.config;

import io.snapbd.server.Log;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The production-host keys of the configuration file: metrics, log-level, stop-timeout, latency-histograms, warm-up, volume.NAME. */
class ServiceSettingsTest {

    @TempDir
    Path dir;

    private ServiceSettings read(String text) throws Exception {
        Path f = dir.resolve("snapbd.conf");
        Files.writeString(f, text);
        return ConfigFile.read(f).service();
    }

    private String error(String text) throws Exception {
        Path f = dir.resolve("bad.conf");
        Files.writeString(f, text);
        return assertThrows(ConfigFile.ConfigException.class, () -> ConfigFile.read(f).service()).getMessage()
                .replace(f.toString(), "FILE");
    }

    @Test
    void defaults() throws Exception {
        ServiceSettings s = read("tcp = :10809\n");
        assertNull(s.metrics(), "metrics are off unless configured");
        assertNull(s.logLevel());
        assertEquals(60, s.stopTimeout().toSeconds());
        assertTrue(s.volumes().isEmpty());
        assertTrue(s.latencyHistograms(), "latency histograms are on unless configured off");
        assertTrue(ServiceSettings.DEFAULTS.latencyHistograms());
    }

    @Test
    void latencyHistogramsOnOrOff() throws Exception {
        assertFalse(read("latency-histograms = off\n").latencyHistograms());
        assertTrue(read("latency-histograms = on\n").latencyHistograms());
        assertFalse(read("latency-histograms = false\n").latencyHistograms());
        assertFalse(ServiceSettings.DEFAULTS.withLatencyHistograms(false).latencyHistograms());
        assertTrue(error("\nlatency-histograms = sometimes\n").startsWith("FILE:2: latency-histograms: 'sometimes' must be on or off"),
                error("\nlatency-histograms = sometimes\n"));
    }

    @Test
    void warmUpOnOrOff() throws Exception {
        assertTrue(read("tcp = :10809\n").warmUp(), "the copy-on-write warm-up is on unless configured off");
        assertTrue(ServiceSettings.DEFAULTS.warmUp());
        assertFalse(read("warm-up = off\n").warmUp());
        assertTrue(read("warm-up = on\n").warmUp());
        assertFalse(ServiceSettings.DEFAULTS.withWarmUp(false).warmUp());
        assertTrue(ServiceSettings.DEFAULTS.withWarmUp(false).latencyHistograms(), "the switches are independent");
        assertTrue(error("warm-up = later\n").startsWith("FILE:1: warm-up: 'later' must be on or off"), error("warm-up = later\n"));
    }

    @Test
    void parsesEveryKey() throws Exception {
        ServiceSettings s = read("metrics = :9100\nlog-level = DEBUG\nstop-timeout = 12.5\n"
                + "volume.vol0 = 1G save=128M\nvolume.small = 64M block-size=512 sparse\nvolume.tiny = 8M\n");
        assertEquals(9100, s.metrics().getPort());
        assertTrue(s.metrics().getAddress().isLoopbackAddress(), ":PORT means loopback");
        assertEquals(Log.Level.DEBUG, s.logLevel());
        assertEquals(12500, s.stopTimeout().toMillis());
        assertEquals(3, s.volumes().size());
        VolumeSpec v = s.volumes().get(0);
        assertEquals("vol0", v.name());
        assertEquals(1L << 30, v.size());
        assertEquals(128L << 20, v.saveSize());
        assertEquals(4096, v.blockSize());
        assertFalse(v.sparse());
        assertTrue(v.origin().endsWith("snapbd.conf:4"), v.origin());
        VolumeSpec small = s.volumes().get(1);
        assertEquals(512, small.blockSize());
        assertTrue(small.sparse());
        assertEquals(8L << 20, s.volumes().get(2).saveSize(), "the save volume defaults to min(size, 256M)");
        assertNull(read("metrics = none\n").metrics());
        assertEquals(Log.Level.WARN, read("log-level = warning\n").logLevel());
    }

    @Test
    void badValuesNameFileAndLine() throws Exception {
        assertTrue(error("tcp = :1\nmetrics = localhost\n").startsWith("FILE:2: metrics: invalid address 'localhost'"), error("tcp = :1\nmetrics = localhost\n"));
        assertTrue(error("log-level = loud\n").startsWith("FILE:1: log-level: 'loud' is not a log level"), error("log-level = loud\n"));
        assertTrue(error("stop-timeout = -1\n").startsWith("FILE:1: stop-timeout: "), error("stop-timeout = -1\n"));
        assertTrue(error("volume.vol0 = huge\n").startsWith("FILE:1: volume.vol0: invalid size 'huge'"), error("volume.vol0 = huge\n"));
        assertTrue(error("\nvolume.vol0 = 1G fast\n").startsWith("FILE:2: volume.vol0: unknown volume option 'fast'"), error("\nvolume.vol0 = 1G fast\n"));
        assertTrue(error("volume.a/b = 1G\n").startsWith("FILE:1: volume.a/b: invalid name 'a/b'"), error("volume.a/b = 1G\n"));
        assertTrue(error("volume.v = 1G block-size=3000\n").contains("block size 3000 must be a power of two"), error("volume.v = 1G block-size=3000\n"));
        assertTrue(error("volume.v = 1G\nvolume.v = 2G\n").startsWith("FILE:2: 'volume.v' already set on line 1"), error("volume.v = 1G\nvolume.v = 2G\n"));
        assertTrue(error("volume. = 1G\n").startsWith("FILE:1: unknown key 'volume.'"), error("volume. = 1G\n"));
    }

    @Test
    void serverKeysIgnoreTheServiceKeys() throws Exception {
        Path f = dir.resolve("snapbd.conf");
        Files.writeString(f, "metrics = :9100\nvolume.x = 8M\nmax-connections = 3\n");
        ServerConfig c = ConfigFile.read(f).apply(ServerConfig.defaults(dir));
        assertEquals(3, c.maxConnections());
    }
}
