package io.snapbd.server.config;

import java.util.Locale;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Byte sizes with binary suffixes: 4096, 512K, 256M, 1G, 2T (also 1GiB; the letter in either case). Strict:
 * no blank anywhere, and no "KB", "MB", "GB"... (decimal or binary is ambiguous there), so a typo is an error
 * rather than a silently different size.
 */
public final class Sizes {
    private static final Pattern SIZE = Pattern.compile("(\\d+)(?:([KMGTP])(iB)?)?", Pattern.CASE_INSENSITIVE);
    private static final Pattern DECIMAL_UNIT = Pattern.compile("\\d+([KMGTP])B", Pattern.CASE_INSENSITIVE);

    private Sizes() {
    }

    public static long parse(String text) {
        String t = text == null ? "" : text;
        Matcher m = SIZE.matcher(t);
        if (!m.matches()) {
            Matcher d = DECIMAL_UNIT.matcher(t);
            if (d.matches()) {
                String u = d.group(1).toUpperCase(Locale.ROOT);
                throw new IllegalArgumentException("invalid size '" + text + "': " + u + "B is ambiguous, use "
                        + u + " or " + u + "iB (both binary, powers of 1024)");
            }
            throw new IllegalArgumentException("invalid size '" + text + "': use digits with an optional K, M, G, T or P "
                    + "suffix (powers of 1024; KiB... also accepted), no blanks");
        }
        String suffix = m.group(2) == null ? "" : m.group(2);
        int shift = switch (suffix.toUpperCase(Locale.ROOT)) {
            case "K" -> 10;
            case "M" -> 20;
            case "G" -> 30;
            case "T" -> 40;
            case "P" -> 50;
            default -> 0;
        };
        long n;
        try {
            n = Long.parseLong(m.group(1));
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("invalid size '" + text + "': number too large");
        }
        if (n > (Long.MAX_VALUE >> shift)) {
            throw new IllegalArgumentException("invalid size '" + text + "': too large");
        }
        return n << shift;
    }

    public static String format(long bytes) {
        String[] units = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
        int u = 0;
        double v = bytes;
        while (v >= 1024 && u < units.length - 1 && (bytes % (1L << (10 * (u + 1))) == 0 || v >= 10 * 1024)) {
            v /= 1024;
            u++;
        }
        return (v == Math.rint(v) ? String.valueOf((long) v) : String.format(Locale.ROOT, "%.1f", v)) + " " + units[u];
    }
}
