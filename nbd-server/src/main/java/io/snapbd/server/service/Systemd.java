package io.snapbd.server.service;

import io.snapbd.nativeio.SdNotify;
import io.snapbd.server.Log;

import java.io.IOException;
import java.time.Duration;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;

/**
 * The service manager's side of the server (sd_notify(3)): STATUS while starting, READY=1 once every volume is
 * open and every listener bound, RELOADING=1 / READY=1 around a reload, STOPPING=1 at stop, and WATCHDOG=1
 * pings every WATCHDOG_USEC/2 when the unit sets WatchdogSec=. Everything here does nothing outside systemd.
 */
public final class Systemd {

    private static volatile boolean warned;
    /** A successor of an in-place restart before the handover: systemd takes notifications from the main PID only. */
    private static volatile boolean muted;

    private Systemd() {
    }

    /** True when started by systemd with a notification socket (Type=notify). */
    public static boolean notifying() {
        if (muted) {
            return false;
        }
        String s = System.getenv("NOTIFY_SOCKET");
        return s != null && !s.isEmpty();
    }

    /** Sends newline-separated {@code KEY=VALUE} lines; a failure is logged once and otherwise ignored. */
    public static boolean notify(String state) {
        if (muted) {
            return false;
        }
        try {
            return SdNotify.notify(state);
        } catch (IOException | RuntimeException | LinkageError e) {
            if (!warned) {
                warned = true;
                Log.warn("cannot notify systemd: %s", e.getMessage());
            }
            return false;
        }
    }

    /**
     * Silences every notification (true) until unmuted: a successor is not the unit's main process before the
     * predecessor hands over (systemd would log each one as refused), and its rehearsal start must not say READY=1.
     */
    public static void mute(boolean on) {
        muted = on;
    }

    public static void status(String status) {
        notify("STATUS=" + oneLine(status));
    }

    /** A status line for a step of the start that may take long: also pushes the start timeout {@code extend} away. */
    public static void startStep(String status, Duration extend) {
        notify("STATUS=" + oneLine(status) + "\nEXTEND_TIMEOUT_USEC=" + extend.toNanos() / 1000);
    }

    public static void ready(String status) {
        notify("READY=1\nSTATUS=" + oneLine(status));
    }

    public static void reloading() {
        notify("RELOADING=1\nSTATUS=reloading the configuration");
    }

    public static void stopping(String status) {
        notify("STOPPING=1\nSTATUS=" + oneLine(status));
    }

    private static String oneLine(String s) {
        return s.replace('\n', ' ');
    }

    /**
     * The watchdog interval systemd asks for (WATCHDOG_USEC, if WATCHDOG_PID is unset or ours), else null.
     */
    static Duration watchdogInterval(String usec, String pid, long ourPid) {
        if (usec == null || usec.isEmpty()) {
            return null;
        }
        if (pid != null && !pid.isEmpty()) {
            try {
                if (Long.parseLong(pid.strip()) != ourPid) {
                    return null;
                }
            } catch (NumberFormatException e) {
                return null;
            }
        }
        try {
            long us = Long.parseLong(usec.strip());
            return us > 0 ? Duration.ofNanos(us * 1000) : null;
        } catch (NumberFormatException e) {
            Log.warn("ignoring WATCHDOG_USEC='%s': not a number", usec);
            return null;
        }
    }

    /**
     * Starts WATCHDOG=1 pings at half the interval systemd asked for; null when it asked for none. The pings come
     * from a thread of their own, so they stop when the JVM no longer runs its threads (a stuck process is then
     * restarted by systemd), not when one part of the server is busy.
     */
    public static Watchdog startWatchdog() {
        Duration interval = watchdogInterval(System.getenv("WATCHDOG_USEC"), System.getenv("WATCHDOG_PID"),
                ProcessHandle.current().pid());
        if (interval == null || !notifying()) {
            return null;
        }
        return new Watchdog(interval);
    }

    /** The ping thread; {@link #close} stops it. */
    public static final class Watchdog implements AutoCloseable {
        private final ScheduledExecutorService timer;

        private Watchdog(Duration interval) {
            long every = Math.max(1, interval.toNanos() / 1000 / 2);
            timer = Executors.newSingleThreadScheduledExecutor(r -> {
                Thread t = new Thread(r, "systemd-watchdog");
                t.setDaemon(true);
                return t;
            });
            Log.info("systemd watchdog: pinging every %d ms (WatchdogSec=%d ms)", every / 1000, interval.toMillis());
            timer.scheduleAtFixedRate(() -> Systemd.notify("WATCHDOG=1"), 0, every, TimeUnit.MICROSECONDS);
        }

        @Override
        public void close() {
            timer.shutdownNow();
        }
    }
}
