package io.snapbd.bench.latency;

import org.HdrHistogram.Histogram;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import javax.imageio.ImageIO;
import java.awt.image.BufferedImage;
import java.nio.file.Path;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class LatencyPlotTest {

    @TempDir
    Path dir;

    @Test
    void drawsEverySeriesIntoAPngWithoutADisplay() throws Exception {
        System.setProperty("java.awt.headless", "true");
        Path fast = dir.resolve("fast.hgrm");
        Path slow = dir.resolve("slow.hgrm");
        LoadCommand.writeHgrm(fast, series(50_000));      // 50 µs base
        LoadCommand.writeHgrm(slow, series(2_000_000));   // 2 ms base
        Path png = dir.resolve("plot.png");
        int exit = io.snapbd.bench.BenchMain.commandLine().execute("plot", "-o", png.toString(), "--title", "t",
                "--width", "800", "--height", "500", "fast=" + fast, slow.toString());
        assertEquals(0, exit);
        BufferedImage img = ImageIO.read(png.toFile());
        assertEquals(800, img.getWidth());
        assertEquals(500, img.getHeight());
        assertTrue(count(img, LatencyPlot.color(0).getRGB()) > 200, "first series drawn");
        assertTrue(count(img, LatencyPlot.color(1).getRGB()) > 200, "second series drawn");
        // The slow series lies above the fast one: its pixels have smaller y on average.
        assertTrue(meanY(img, LatencyPlot.color(1).getRGB()) < meanY(img, LatencyPlot.color(0).getRGB()));
    }

    @Test
    void axisLabels() {
        assertEquals("0%", LatencyPlot.percentileLabel(0));
        assertEquals("90%", LatencyPlot.percentileLabel(1));
        assertEquals("99%", LatencyPlot.percentileLabel(2));
        assertEquals("99.9%", LatencyPlot.percentileLabel(3));
        assertEquals("99.999%", LatencyPlot.percentileLabel(5));
        assertEquals("10 µs", LatencyPlot.latencyLabel(10));
        assertEquals("1.50 ms", LatencyPlot.latencyLabel(1500));
        assertEquals("2 s", LatencyPlot.latencyLabel(2_000_000));
    }

    @Test
    void refusesNothingToPlotAndBadFiles() {
        assertThrows(IllegalArgumentException.class, () -> new LatencyPlot(800, 500, "").render(List.of()));
        int exit = io.snapbd.bench.BenchMain.commandLine().execute("plot", "-o", dir.resolve("x.png").toString(),
                dir.resolve("missing.hgrm").toString());
        assertEquals(2, exit);
    }

    private static Histogram series(long baseNanos) {
        Histogram h = LoadRun.histogram();
        for (int i = 0; i < 100_000; i++) {
            h.recordValue(baseNanos + (long) (baseNanos * Math.pow(i / 100_000.0, 8) * 20));
        }
        return h;
    }

    private static int count(BufferedImage img, int rgb) {
        int n = 0;
        for (int y = 0; y < img.getHeight(); y++) {
            for (int x = 0; x < img.getWidth(); x++) {
                if ((img.getRGB(x, y) & 0xffffff) == (rgb & 0xffffff)) {
                    n++;
                }
            }
        }
        return n;
    }

    private static double meanY(BufferedImage img, int rgb) {
        long sum = 0, n = 0;
        for (int y = 0; y < img.getHeight(); y++) {
            for (int x = 0; x < img.getWidth(); x++) {
                if ((img.getRGB(x, y) & 0xffffff) == (rgb & 0xffffff)) {
                    sum += y;
                    n++;
                }
            }
        }
        return (double) sum / n;
    }
}
