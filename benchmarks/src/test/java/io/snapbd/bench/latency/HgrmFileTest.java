package io.snapbd.bench.latency;

import org.HdrHistogram.Histogram;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class HgrmFileTest {

    @TempDir
    Path dir;

    @Test
    void readsWhatTheLoadGeneratorWrites() throws IOException {
        Histogram h = LoadRun.histogram();
        for (int i = 1; i <= 10_000; i++) {
            h.recordValue(i * 1000L); // 1 µs .. 10 ms, in ns
        }
        Path f = dir.resolve("x-write.hgrm");
        LoadCommand.writeHgrm(f, h);
        HgrmFile r = HgrmFile.read(f, "x");
        assertEquals(10_000, r.count());
        assertEquals(10_000, r.max(), 10_000 * 0.001);
        assertEquals(5_000, r.valueAt(50), 5_000 * 0.01);
        assertEquals(9_900, r.valueAt(99), 9_900 * 0.01);
        assertEquals(h.getValueAtPercentile(50) / 1000.0, r.valueAt(50), 5.0 * 0.01 * 1000);
        assertTrue(r.points().size() > 20);
    }

    @Test
    void anEmptyHistogramWritesNoFile() throws IOException {
        Path f = dir.resolve("none.hgrm");
        LoadCommand.writeHgrm(f, LoadRun.histogram());
        assertTrue(Files.notExists(f));
    }

    @Test
    void rejectsFilesThatAreNotPercentileDistributions() throws IOException {
        Path f = dir.resolve("bad.hgrm");
        Files.writeString(f, "       Value     Percentile TotalCount 1/(1-Percentile)\n\n  12.0 0.5 3 2.00\n  oops 0.6 4 2.5\n");
        IOException e = assertThrows(IOException.class, () -> HgrmFile.read(f, "bad"));
        assertTrue(e.getMessage().contains("bad.hgrm:4"), e.getMessage());
        Path empty = dir.resolve("empty.hgrm");
        Files.writeString(empty, "# nothing\n");
        assertThrows(IOException.class, () -> HgrmFile.read(empty, "empty"));
    }
}
