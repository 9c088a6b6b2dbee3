package io.snapbd.server.export;

import io.snapbd.server.protocol.Nbd;
import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

class ExportStatsTest {

    @Test
    void bucketsAreCumulativeAndBytesCountOnlySuccess() {
        ExportStats s = new ExportStats();
        s.record(Nbd.CMD_WRITE, 4096, 40_000, true);          // 40 us: first bucket (<= 50 us)
        s.record(Nbd.CMD_WRITE, 4096, 50_000, true);          // on the bound: still the first bucket
        s.record(Nbd.CMD_WRITE, 8192, 3_000_000, false);      // 3 ms, failed: no bytes
        s.record(Nbd.CMD_WRITE, 4096, 60_000_000_000L, true); // a minute: +Inf only
        s.record(Nbd.CMD_READ, 512, 1_000, true);
        assertEquals(3 * 4096, s.bytesWritten());
        assertEquals(512, s.bytesRead());
        long[] c = s.latency(ExportStats.Op.WRITE).cumulative();
        assertEquals(ExportStats.BUCKET_SECONDS.length + 1, c.length);
        assertEquals(2, c[0]);
        assertEquals(2, c[5]);          // <= 2.5 ms
        assertEquals(3, c[6]);          // <= 5 ms
        assertEquals(3, c[c.length - 2]);
        assertEquals(4, c[c.length - 1]);
        assertEquals(60.00309, s.latency(ExportStats.Op.WRITE).sumSeconds(), 1e-9);
        long[] none = new long[ExportStats.BUCKET_SECONDS.length + 1];
        assertArrayEquals(none, s.latency(ExportStats.Op.FLUSH).cumulative());
    }
}
