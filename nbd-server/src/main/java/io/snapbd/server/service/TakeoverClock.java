package io.snapbd.server.service;

import io.snapbd.server.Log;

import java.util.EnumMap;
import java.util.Map;

/**
 * Times the successor's part of an in-place restart's pause, from the predecessor's {@code go} line to the admin
 * socket (what {@code snapbd restart} waits for), one log line with each part: {@code takeover: ...}. It runs once
 * per process, only in a successor: the rehearsal's start and any start without a {@code go} record nothing.
 */
final class TakeoverClock {

    /** The parts of the start after the {@code go} line, in their order in {@link SnapbdServer#startUp}. */
    enum Part {
        /** The go line and the handed-over connections received, up to the start of the data directory's open. */
        RECEIVED("connections received"),
        DATA_DIR("data directory opened"),
        VOLUMES("volumes opened and exported"),
        DEVICES("devices reconnected or adopted"),
        LISTENERS("listeners bound"),
        ADMIN("admin socket open");

        final String label;

        Part(String label) {
            this.label = label;
        }
    }

    private static long goNanos;
    private static long lastNanos;
    private static final Map<Part, Long> laps = new EnumMap<>(Part.class);

    private TakeoverClock() {
    }

    /** The predecessor's go line has come: the pause's successor side starts now. */
    static synchronized void go() {
        goNanos = System.nanoTime();
        lastNanos = goNanos;
        laps.clear();
    }

    /** Only in a successor's real start: marks the end of {@code part}. */
    static synchronized void lap(Part part) {
        if (goNanos == 0) {
            return;
        }
        long now = System.nanoTime();
        laps.put(part, now - lastNanos);
        lastNanos = now;
    }

    /** Logs the parts once (the successor's first real start), then stops timing. */
    static synchronized void report() {
        if (goNanos == 0) {
            return;
        }
        StringBuilder b = ms(new StringBuilder("takeover: serving "), lastNanos - goNanos).append(" ms after the go line (");
        String sep = "";
        for (Map.Entry<Part, Long> e : laps.entrySet()) {
            ms(b.append(sep).append(e.getKey().label).append(' '), e.getValue()).append(" ms");
            sep = ", ";
        }
        Log.info("%s)", b);
        goNanos = 0;
    }

    /**
     * Milliseconds with one decimal, without the floating-point formatter or a string concatenation of a new shape
     * (either loads classes on its first use: after the handover, in the time measured).
     */
    private static StringBuilder ms(StringBuilder b, long nanos) {
        long tenths = nanos / 100_000;
        return b.append(tenths / 10).append('.').append(tenths % 10);
    }
}
