package io.snapbd.bench.latency;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * A percentile distribution as HdrHistogram's {@code outputPercentileDistribution} writes it (".hgrm"):
 * rows of value, percentile (0..1), total count and 1/(1−percentile), then {@code #[...]} footer lines.
 */
record HgrmFile(String label, List<Point> points, double max, long count) {

    /** One row: {@code value} in the file's unit (this harness writes microseconds). */
    record Point(double value, double percentile, long totalCount) {
    }

    static HgrmFile read(Path file, String label) throws IOException {
        List<Point> points = new ArrayList<>();
        double max = Double.NaN;
        long count = -1;
        int lineNo = 0;
        for (String line : Files.readAllLines(file, StandardCharsets.UTF_8)) {
            lineNo++;
            String t = line.trim();
            if (t.isEmpty()) {
                continue;
            }
            if (t.startsWith("#")) {
                // #[Max     =    12345.000, Total count    =      1000]
                if (t.startsWith("#[Max")) {
                    String[] parts = t.substring(2, t.length() - 1).split(",");
                    max = Double.parseDouble(parts[0].split("=")[1].trim());
                    count = Long.parseLong(parts[1].split("=")[1].trim());
                }
                continue;
            }
            if (t.startsWith("Value")) {
                continue;
            }
            String[] f = t.split("\\s+");
            if (f.length < 3 || f.length > 4) {
                throw new IOException(file + ":" + lineNo + ": expected value, percentile, count[, 1/(1-p)]: " + t);
            }
            try {
                double v = Double.parseDouble(f[0]);
                double p = Double.parseDouble(f[1]);
                long n = Long.parseLong(f[2]);
                if (p < 0 || p > 1 || v < 0) {
                    throw new NumberFormatException("out of range");
                }
                points.add(new Point(v, p, n));
            } catch (NumberFormatException e) {
                throw new IOException(file + ":" + lineNo + ": not an .hgrm row (" + e.getMessage() + "): " + t);
            }
        }
        if (points.isEmpty()) {
            throw new IOException(file + ": no percentile rows: not an HdrHistogram percentile distribution (.hgrm)");
        }
        if (Double.isNaN(max)) {
            max = points.get(points.size() - 1).value();
        }
        if (count < 0) {
            count = points.get(points.size() - 1).totalCount();
        }
        return new HgrmFile(label, List.copyOf(points), max, count);
    }

    /** The value at or above percentile {@code pct} (0..100), as the rows allow. */
    double valueAt(double pct) {
        double p = pct / 100.0;
        for (Point x : points) {
            if (x.percentile() >= p - 1e-12) {
                return x.value();
            }
        }
        return max;
    }
}
