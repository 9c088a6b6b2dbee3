package io.snapbd.server;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
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
    private static final boolean JOURNAL = stderrIsJournal(System.getenv("JOURNAL_STREAM"));
    private static final DateTimeFormatter TIME = DateTimeFormatter.ofPattern("yyyy-MM-dd HH:mm:ss.SSS");
    private static volatile Level threshold = Level.INFO;

    private Log() {
    }

    public static void setLevel(Level level) {
        threshold = level;
    }

    public static Level level() {
        return threshold;
    }

    /** {@code error}, {@code warn}, {@code info} or {@code debug} (any case). */
    public static Level parseLevel(String s) {
        for (Level l : Level.values()) {
            if (l.name().equalsIgnoreCase(s.strip()) || (l == Level.WARN && s.strip().equalsIgnoreCase("warning"))) {
                return l;
            }
        }
        throw new IllegalArgumentException("'" + s + "' is not a log level (error, warn, info, debug)");
    }

    /**
     * True when stderr is the journal stream systemd set up: JOURNAL_STREAM holds its device and inode
     * ({@code DEV:INO}), and a redirected stderr (e.g. {@code 2>file} in a unit's script) does not match them.
     */
    static boolean stderrIsJournal(String journalStream) {
        if (journalStream == null || journalStream.isEmpty()) {
            return false;
        }
        try {
            String[] devIno = journalStream.split(":");
            Path stderr = Path.of("/proc/self/fd/2");
            long dev = ((Number) Files.getAttribute(stderr, "unix:dev")).longValue();
            long ino = ((Number) Files.getAttribute(stderr, "unix:ino")).longValue();
            return devIno.length == 2 && Long.parseLong(devIno[0]) == dev && Long.parseLong(devIno[1]) == ino;
        } catch (RuntimeException | IOException e) {
            return true;        // cannot tell (no /proc?): trust the variable
        }
    }

    /**
     * Loads what a first log line needs without printing one: its time stamp reads the time zone rules (tens of
     * milliseconds on a first use). The successor of an in-place restart calls it while its predecessor still
     * serves, so its first line after the handover does not pay for that.
     */
    public static void warmUp() {
        String line = LocalDateTime.now().format(TIME) + " " + Level.INFO + " " + String.format("%s %d", "warm-up", 1);
        if (line.isEmpty()) {
            throw new AssertionError();     // keeps the work from being optimised away
        }
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
                ? "<" + level.syslog + ">" + msg.replace("\n", "\n<" + level.syslog + ">")  // journald reads each line on its own
                : LocalDateTime.now().format(TIME) + " " + level + " " + msg;
        synchronized (OUT) {
            OUT.println(line);
        }
    }
}
