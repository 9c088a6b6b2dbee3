package io.snapbd.server.cli;

import io.snapbd.server.config.Sizes;

import java.io.PrintStream;
import java.util.Locale;

/**
 * Progress of a long operation: a redrawn bar with rate and ETA when stdout is a terminal, plain lines
 * (at most one every few seconds, plus the last) otherwise, so logs and pipes stay readable.
 */
final class Progress {
    private final PrintStream out;
    private final String label;
    private final boolean terminal;
    private final long start = System.nanoTime();
    private long lastLine;

    Progress(PrintStream out, String label) {
        this(out, label, System.console() != null);
    }

    Progress(PrintStream out, String label, boolean terminal) {
        this.out = out;
        this.label = label;
        this.terminal = terminal;
    }

    void update(long done, long total, boolean finished) {
        double secs = Math.max(1e-3, (System.nanoTime() - start) / 1e9);
        double rate = done / secs;
        String eta = total > 0 && rate > 0 && done < total ? formatSeconds((total - done) / rate) : "-";
        double pct = total > 0 ? 100.0 * done / total : (finished ? 100 : 0);
        String stats = String.format(Locale.ROOT, "%5.1f%% %s/%s %s/s ETA %s", pct, Sizes.format(done),
                total >= 0 ? Sizes.format(total) : "?", Sizes.format((long) rate), eta);
        if (terminal) {
            int width = 30;
            int filled = (int) Math.round(width * Math.min(1, pct / 100));
            out.print("\r" + label + " [" + "#".repeat(filled) + " ".repeat(width - filled) + "] " + stats + "   ");
            if (finished) {
                out.println();
            }
            out.flush();
        } else {
            long now = System.nanoTime();
            if (finished || now - lastLine > 2_000_000_000L) {
                out.println(label + ": " + stats);
                lastLine = now;
            }
        }
    }

    private static String formatSeconds(double s) {
        long t = (long) Math.ceil(s);
        return t >= 3600 ? String.format(Locale.ROOT, "%dh%02dm", t / 3600, t % 3600 / 60)
                : String.format(Locale.ROOT, "%dm%02ds", t / 60, t % 60);
    }
}
