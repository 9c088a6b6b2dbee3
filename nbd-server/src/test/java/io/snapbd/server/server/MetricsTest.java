package io.snapbd.server.server;

import org.junit.jupiter.api.Test;

import java.time.Duration;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;

class MetricsTest {

    @Test
    void labelValuesAreEscaped() {
        assertEquals("{export=\"a\\\\b\\\"c\\nd\"}", Metrics.labels("export", "a\\b\"c\nd"));
        assertEquals("{a=\"1\",b=\"\"}", Metrics.labels("a", "1", "b", null));
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
