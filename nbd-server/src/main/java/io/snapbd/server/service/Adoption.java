package io.snapbd.server.service;

import io.snapbd.server.Log;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.time.Duration;

/**
 * The restart job's successor (docs/kernel-attach.md, "systemctl restart"): {@code ExecStop=} prepares a successor
 * ({@code snapbd restart --prepare}), the old server hands over to it at its SIGTERM, and the unit's next
 * {@code ExecStart=} (bin/snapbd) makes it the main process instead of starting a second server. Under
 * {@code NotifyAccess=main} only the ExecStart process may send that MAINPID=, so the successor stays silent towards
 * systemd until then. The two sides meet at {@link Handover#ADOPTION_FILE}:
 * <ol>
 * <li>the old server writes {@code PID} (the successor's) just before it hands over, so the launcher, which runs once
 * the old server has exited, knows a successor is taking over;</li>
 * <li>the successor rewrites it as {@code PID serving} once it serves (its READY=1 then is muted);</li>
 * <li>the launcher checks PID (alive, in the unit's cgroup, holding the data directory's lock), sends
 * {@code READY=1 MAINPID=PID} as the main process, waits for systemd to have read it and deletes the file;</li>
 * <li>the successor sees the file gone: its notifications come after the launcher's, so systemd takes them from the
 * main PID; it sends READY=1 and starts feeding the watchdog.</li>
 * </ol>
 */
public final class Adoption {

    /** How long a successor that serves waits for the launcher to adopt it before it gives up on systemd's notifications. */
    public static final Duration ADOPTER_BOUND = Duration.ofMinutes(2);
    private static final long POLL_MILLIS = 20;

    private Adoption() {
    }

    /** The adoption file of this successor ({@link Handover#ADOPTION_ENV}), or null in any other server. */
    public static Path file() {
        String f = System.getenv(Handover.ADOPTION_ENV);
        return f == null || f.isEmpty() ? null : Path.of(f);
    }

    /** The old server, just before it hands over: the launcher will find {@code pid} there. */
    static void announce(Path file, long pid) throws IOException {
        write(file, pid + "\n");
    }

    /** The successor, once it serves: the launcher may adopt it now. */
    public static void serving(Path file) throws IOException {
        write(file, ProcessHandle.current().pid() + " serving\n");
    }

    /**
     * Waits (polling, bounded) until the launcher deleted the file or wrote it for another process: true once adopted,
     * false at the bound. Reading a missing file is the common case, so it costs nothing to poll.
     */
    public static boolean awaitAdopted(Path file, Duration bound) throws InterruptedException {
        long deadline = System.nanoTime() + bound.toNanos();
        String mine = Long.toString(ProcessHandle.current().pid());
        while (System.nanoTime() < deadline) {
            try {
                String s = Files.readString(file, StandardCharsets.US_ASCII).strip();
                if (!s.split(" ")[0].equals(mine)) {
                    return true;
                }
            } catch (NoSuchFileException e) {
                return true;
            } catch (IOException e) {
                Log.warn("reading %s: %s", file, e.getMessage());
            }
            Thread.sleep(POLL_MILLIS);
        }
        return false;
    }

    /** A file left by an adoption that never came (no launcher ran): a later start must not adopt by mistake. */
    static void discard(Path file) {
        try {
            Files.deleteIfExists(file);
        } catch (IOException e) {
            Log.warn("cannot delete %s: %s", file, e.getMessage());
        }
    }

    private static void write(Path file, String content) throws IOException {
        Path tmp = file.resolveSibling(file.getFileName() + ".tmp");
        Files.writeString(tmp, content, StandardCharsets.US_ASCII);
        Files.move(tmp, file, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
    }
}
