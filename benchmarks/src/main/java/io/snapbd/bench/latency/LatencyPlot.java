package io.snapbd.bench.latency;

import javax.imageio.ImageIO;
import java.awt.BasicStroke;
import java.awt.Color;
import java.awt.Font;
import java.awt.FontMetrics;
import java.awt.Graphics2D;
import java.awt.RenderingHints;
import java.awt.geom.Path2D;
import java.awt.image.BufferedImage;
import java.io.IOException;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;

/**
 * Latency by percentile, the HdrHistogram way: x is 1/(1−percentile) on a log axis (so 90 %, 99 %, 99.9 %…
 * are evenly spaced), y is latency on a log axis. Drawn with Java2D into a PNG; works headless.
 */
final class LatencyPlot {

    private static final Color[] PALETTE = {
            new Color(0x1f77b4), new Color(0xd62728), new Color(0x2ca02c), new Color(0xff7f0e), new Color(0x9467bd),
            new Color(0x8c564b), new Color(0xe377c2), new Color(0x17becf), new Color(0x7f7f7f), new Color(0xbcbd22)};

    private final int width;
    private final int height;
    private final String title;

    LatencyPlot(int width, int height, String title) {
        if (width < 320 || height < 240) {
            throw new IllegalArgumentException("plot must be at least 320x240 pixels");
        }
        this.width = width;
        this.height = height;
        this.title = title;
    }

    static Color color(int series) {
        return PALETTE[series % PALETTE.length];
    }

    BufferedImage render(List<HgrmFile> series) {
        if (series.isEmpty()) {
            throw new IllegalArgumentException("nothing to plot");
        }
        // Axis ranges: x up to the decade past the highest finite 1/(1-p); y over whole decades of the data.
        double xMaxData = 10;
        double yMin = Double.MAX_VALUE, yMax = 0;
        for (HgrmFile s : series) {
            for (HgrmFile.Point p : s.points()) {
                if (p.percentile() < 1.0) {
                    xMaxData = Math.max(xMaxData, 1 / (1 - p.percentile()));
                }
                if (p.value() > 0) {
                    yMin = Math.min(yMin, p.value());
                }
            }
            yMax = Math.max(yMax, s.max());
        }
        int xDecades = (int) Math.ceil(Math.log10(xMaxData) - 1e-9);
        double yLo = Math.pow(10, Math.floor(Math.log10(Math.max(1e-3, Math.min(yMin, yMax)))));
        double yHi = Math.pow(10, Math.ceil(Math.log10(Math.max(yMax, yLo * 10))));

        BufferedImage img = new BufferedImage(width, height, BufferedImage.TYPE_INT_RGB);
        Graphics2D g = img.createGraphics();
        try {
            g.setRenderingHint(RenderingHints.KEY_ANTIALIASING, RenderingHints.VALUE_ANTIALIAS_ON);
            g.setRenderingHint(RenderingHints.KEY_TEXT_ANTIALIASING, RenderingHints.VALUE_TEXT_ANTIALIAS_ON);
            g.setColor(Color.WHITE);
            g.fillRect(0, 0, width, height);
            Font font = new Font(Font.SANS_SERIF, Font.PLAIN, 12);
            g.setFont(font);
            FontMetrics fm = g.getFontMetrics();
            int left = 80, right = 30, top = 50, bottom = 60;
            int pw = width - left - right, ph = height - top - bottom;
            Axis x = v -> left + pw * Math.log10(v) / xDecades;
            Axis y = v -> top + ph - ph * (Math.log10(v) - Math.log10(yLo)) / (Math.log10(yHi) - Math.log10(yLo));

            // Grid and tick labels.
            g.setStroke(new BasicStroke(1f));
            for (int d = 0; d <= xDecades; d++) {
                int px = (int) Math.round(x.at(Math.pow(10, d)));
                g.setColor(new Color(0xdddddd));
                g.drawLine(px, top, px, top + ph);
                g.setColor(Color.DARK_GRAY);
                String label = percentileLabel(d);
                g.drawString(label, px - fm.stringWidth(label) / 2, top + ph + fm.getAscent() + 6);
            }
            for (double v = yLo; v <= yHi * 1.0001; v *= 10) {
                int py = (int) Math.round(y.at(v));
                g.setColor(new Color(0xdddddd));
                g.drawLine(left, py, left + pw, py);
                for (int m = 2; m < 10 && v * m < yHi; m++) {
                    int pm = (int) Math.round(y.at(v * m));
                    g.setColor(new Color(0xf2f2f2));
                    g.drawLine(left, pm, left + pw, pm);
                }
                g.setColor(Color.DARK_GRAY);
                String label = latencyLabel(v);
                g.drawString(label, left - 8 - fm.stringWidth(label), py + fm.getAscent() / 2 - 1);
            }
            g.setColor(Color.BLACK);
            g.drawRect(left, top, pw, ph);
            String xTitle = "percentile";
            g.drawString(xTitle, left + pw / 2 - fm.stringWidth(xTitle) / 2, height - 18);
            Graphics2D gy = (Graphics2D) g.create();
            gy.rotate(-Math.PI / 2);
            String yTitle = "latency (log scale)";
            gy.drawString(yTitle, -(top + ph / 2 + fm.stringWidth(yTitle) / 2), 18);
            gy.dispose();
            if (title != null && !title.isEmpty()) {
                g.setFont(font.deriveFont(Font.BOLD, 15f));
                FontMetrics tfm = g.getFontMetrics();
                g.drawString(title, width / 2 - tfm.stringWidth(title) / 2, 30);
                g.setFont(font);
            }

            // Series.
            g.setClip(left, top, pw + 1, ph + 1);
            g.setStroke(new BasicStroke(2f, BasicStroke.CAP_ROUND, BasicStroke.JOIN_ROUND));
            for (int i = 0; i < series.size(); i++) {
                Path2D.Double path = new Path2D.Double();
                boolean started = false;
                for (HgrmFile.Point p : series.get(i).points()) {
                    if (p.percentile() >= 1.0 || p.value() <= 0) {
                        continue;
                    }
                    double px = x.at(1 / (1 - p.percentile()));
                    double py = y.at(Math.max(yLo, p.value()));
                    if (started) {
                        path.lineTo(px, py);
                    } else {
                        path.moveTo(px, py);
                        started = true;
                    }
                }
                g.setColor(color(i));
                g.draw(path);
            }
            g.setClip(null);

            // Legend: label, p99 and max of each series.
            int lx = left + 12, ly = top + 12, rowH = fm.getHeight() + 2;
            int lw = 0;
            String[] rows = new String[series.size()];
            for (int i = 0; i < series.size(); i++) {
                HgrmFile s = series.get(i);
                rows[i] = String.format(Locale.ROOT, "%s  (p99 %s, max %s)", s.label(), latencyLabel(s.valueAt(99)),
                        latencyLabel(s.max()));
                lw = Math.max(lw, fm.stringWidth(rows[i]));
            }
            g.setColor(new Color(255, 255, 255, 230));
            g.fillRect(lx - 6, ly - 6, lw + 40, rowH * rows.length + 8);
            g.setColor(Color.GRAY);
            g.drawRect(lx - 6, ly - 6, lw + 40, rowH * rows.length + 8);
            for (int i = 0; i < rows.length; i++) {
                int ry = ly + i * rowH;
                g.setColor(color(i));
                g.fillRect(lx, ry + rowH / 2 - 2, 22, 4);
                g.setColor(Color.BLACK);
                g.drawString(rows[i], lx + 30, ry + fm.getAscent());
            }
        } finally {
            g.dispose();
        }
        return img;
    }

    void write(List<HgrmFile> series, Path png) throws IOException {
        BufferedImage img = render(series);
        if (!ImageIO.write(img, "png", png.toFile())) {
            throw new IOException("no PNG writer in this Java runtime");
        }
    }

    /** 10^d as a percentile: 0%, 90%, 99%, 99.9%, … */
    static String percentileLabel(int decade) {
        if (decade == 0) {
            return "0%";
        }
        if (decade == 1) {
            return "90%";
        }
        return "99" + (decade > 2 ? "." + "9".repeat(decade - 2) : "") + "%";
    }

    /** Microseconds in the unit that reads best. */
    static String latencyLabel(double us) {
        if (us >= 1_000_000) {
            return trim(us / 1_000_000) + " s";
        }
        if (us >= 1000) {
            return trim(us / 1000) + " ms";
        }
        return trim(us) + " µs";
    }

    private static String trim(double v) {
        if (v >= 100 || v == Math.rint(v)) {
            return String.format(Locale.ROOT, "%.0f", v);
        }
        return String.format(Locale.ROOT, v >= 10 ? "%.1f" : "%.2f", v);
    }

    @FunctionalInterface
    private interface Axis {
        double at(double value);
    }
}
