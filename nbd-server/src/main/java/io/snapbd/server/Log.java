package io.snapbd.server;

import java.io.PrintStream;
import java.time.LocalDateTime;
import java.time.format.DateTimeFormatter;

/**
 * Server log on stderr. Under systemd (JOURNAL_STREAM set) lines carry syslog priority prefixes and no
 * timestamp, since journald adds its own; elsewhere they carry a local timestamp.
 */
public final class Log {

    public enum Level {
        ERROR(3), WARN(4), INFO(6), DEBUG(7);
        final int syslog;

        Level(int syslog) {
            this.syslog = syslog;
        }
    }

    private static final PrintStream OUT = System.err;
    private static final boolean JOURNAL = System.getenv("JOURNAL_STREAM") != null;
    private static final DateTimeFormatter TIME = DateTimeFormatter.ofPattern("yyyy-MM-dd HH:mm:ss.SSS");
    private static volatile Level threshold = Level.INFO;

    private Log() {
    }

    public static void setLevel(Level level) {
        threshold = level;
    }

    public static boolean enabled(Level level) {
        return level.ordinal() <= threshold.ordinal();
    }

    public static void error(String fmt, Object... args) {
        log(Level.ERROR, fmt, args);
    }

    public static void warn(String fmt, Object... args) {
        log(Level.WARN, fmt, args);
    }

    public static void info(String fmt, Object... args) {
        log(Level.INFO, fmt, args);
    }

    public static void debug(String fmt, Object... args) {
        if (threshold == Level.DEBUG) {
            log(Level.DEBUG, fmt, args);
        }
    }

    private static void log(Level level, String fmt, Object... args) {
        if (!enabled(level)) {
            return;
        }
        String msg = args.length == 0 ? fmt : String.format(fmt, args);
        String line = JOURNAL
                ? "<" + level.syslog + ">" + msg
                : LocalDateTime.now().format(TIME) + " " + level + " " + msg;
        synchronized (OUT) {
            OUT.println(line);
        }
    }
}
