package io.snapbd.server.service;

import io.snapbd.server.export.ExportStats;
import io.snapbd.server.protocol.Nbd;
import org.junit.jupiter.api.Test;

import java.time.Duration;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

class MetricsTest {

    @Test
    void labelValuesAreEscaped() {
        assertEquals("{export=\"a\\\\b\\\"c\\nd\"}", Metrics.labels("export", "a\\b\"c\nd"));
        assertEquals("{a=\"1\",b=\"\"}", Metrics.labels("a", "1", "b", null));
    }

    /** Prometheus buckets derived from the export's HdrHistogram: cumulative, bounds inclusive, +Inf = count. */
    @Test
    void latencyBucketsComeFromTheHistogram() {
        ExportStats s = new ExportStats();
        s.record(Nbd.CMD_WRITE, 4096, 40_000, true);          // 40 us: first bucket (<= 50 us)
        s.record(Nbd.CMD_WRITE, 4096, 50_000, true);          // on the bound: still the first bucket
        s.record(Nbd.CMD_WRITE, 8192, 3_000_000, false);      // 3 ms
        s.record(Nbd.CMD_WRITE, 4096, 60_000_000_000L, true); // a minute: +Inf only
        s.record(Nbd.CMD_READ, 512, 1_000, true);
        long[] c = Metrics.buckets(s.cumulative(ExportStats.Op.WRITE));
        assertEquals(Metrics.BUCKET_SECONDS.length + 1, c.length);
        assertEquals(2, c[0]);
        assertEquals(2, c[5]);          // <= 2.5 ms
        assertEquals(3, c[6]);          // <= 5 ms
        assertEquals(3, c[c.length - 2]);
        assertEquals(4, c[c.length - 1]);
        for (int i = 1; i < c.length; i++) {
            assertTrue(c[i] >= c[i - 1], "cumulative");
        }
        assertEquals(60.00309, s.counters(ExportStats.Op.WRITE)[3] / 1e9, 1e-9, "_sum is exact");
        assertEquals(1, Metrics.buckets(s.cumulative(ExportStats.Op.READ))[0]);
    }

    @Test
    void numbersArePlain() {
        assertEquals("0", Metrics.number(0));
        assertEquals("1795317089", Metrics.number(1795317089.0));
        assertEquals("1795317089.935", Metrics.number(1795317089.935));
        assertEquals("0.00025", Metrics.number(0.00025));
        assertEquals("+Inf", Metrics.number(Double.POSITIVE_INFINITY));
        assertEquals("NaN", Metrics.number(Double.NaN));
    }

    @Test
    void watchdogIntervalFollowsTheVariables() {
        assertNull(Systemd.watchdogInterval(null, null, 10));
        assertNull(Systemd.watchdogInterval("", null, 10));
        assertEquals(Duration.ofSeconds(30), Systemd.watchdogInterval("30000000", null, 10));
        assertEquals(Duration.ofSeconds(30), Systemd.watchdogInterval("30000000", "10", 10));
        assertNull(Systemd.watchdogInterval("30000000", "11", 10), "WATCHDOG_PID names another process");
        assertNull(Systemd.watchdogInterval("0", null, 10));
        assertNull(Systemd.watchdogInterval("soon", null, 10));
    }
}
