package io.snapbd.server.service;

import io.snapbd.nativeio.FdPassing;
import io.snapbd.nativeio.InheritedSockets;
import io.snapbd.nativeio.NativeSocket;
import io.snapbd.nativeio.UnixListeners;
import io.snapbd.server.Log;
import io.snapbd.server.kernel.HandedConnection;
import io.snapbd.server.kernel.KernelAttachments;

import java.io.ByteArrayOutputStream;
import java.io.EOFException;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.ByteChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.security.SecureRandom;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;

/**
 * The in-place restart's protocol between the running server (the predecessor) and the successor process it
 * starts (docs/kernel-attach.md, "In-place restart"). The predecessor listens on {@code DATA_DIR/handover.sock}
 * (mode 0600) and starts the successor with its own command line and environment plus {@link #SOCKET_ENV} and a
 * random {@link #TOKEN_ENV}. The successor starts its JVM and rehearses its start without the data directory,
 * connects and sends {@code ready TOKEN PID}; the predecessor stops (keeping its devices), then answers
 * {@code go KEPT_AT_MILLIS DEVICE,...} (the devices it left connected, "-" for none) and exits; the successor
 * then opens the volumes. A successor that exits or does not report within the bound is no successor: the
 * predecessor kills it, if need be, and keeps serving. One line each way, ASCII; after the {@code go} line, the
 * kernel connections stopped at a request boundary follow, one {@link HandedConnection} each (descriptor passing:
 * the socket is made with {@link UnixListeners}), until the predecessor closes the socket. Their devices are in the
 * {@code go} line too: a successor that does not take them (or a predecessor that sends none) reconnects them.
 */
public final class Handover {

    /** In the successor's environment: the predecessor's handover socket. */
    public static final String SOCKET_ENV = "SNAPBD_HANDOVER_SOCKET";
    /** In the successor's environment: the secret it proves itself with (the socket is only root's anyway). */
    public static final String TOKEN_ENV = "SNAPBD_HANDOVER_TOKEN";
    /** In the launcher's environment (bin/snapbd): the launcher itself, so a successor starts through it. */
    public static final String LAUNCHER_ENV = "SNAPBD_LAUNCHER";
    /**
     * In the environment of a successor prepared for a service manager's restart ({@code snapbd restart --prepare}):
     * the file {@link #ADOPTION_FILE} through which the unit's next ExecStart (bin/snapbd) adopts it as the main
     * process instead of starting a second server (docs/kernel-attach.md, "systemctl restart").
     */
    public static final String ADOPTION_ENV = "SNAPBD_ADOPTION_FILE";
    /**
     * {@code DATA_DIR/successor.pid}: "PID" written by the predecessor just before it hands over to a prepared
     * successor, "PID serving" once that successor serves; the launcher deletes it once it made PID the main process.
     */
    public static final String ADOPTION_FILE = "successor.pid";
    static final String SOCKET_FILE = "handover.sock";
    private static final int MAX_LINE = 64 * 1024;

    private Handover() {
    }

    /** The successor did not get ready: the predecessor keeps serving. The message says why, in one line. */
    public static final class Refused extends IOException {
        public Refused(String message) {
            super(message);
        }
    }

    // ---- the predecessor's side ----------------------------------------------------------------------------

    /**
     * The command that starts a successor: through the launcher when this JVM was started by it (it picks the
     * JVM options and the jar anew), else this JVM's own command line; both read the jar anew. {@code cmdline}
     * is /proc/self/cmdline split at NULs; {@code launcher} is {@link #LAUNCHER_ENV} or null.
     */
    static List<String> successorCommand(List<String> cmdline, String launcher) {
        int jar = cmdline.indexOf("-jar");
        if (launcher != null && !launcher.isEmpty() && Files.isExecutable(Path.of(launcher)) && jar >= 0 && jar + 1 < cmdline.size()) {
            List<String> c = new ArrayList<>();
            c.add(launcher);
            c.addAll(cmdline.subList(jar + 2, cmdline.size()));
            return c;
        }
        return List.copyOf(cmdline);
    }

    /** This process's command line (/proc/self/cmdline). */
    static List<String> ownCommandLine() throws IOException {
        byte[] b = Files.readAllBytes(Path.of("/proc/self/cmdline"));
        List<String> args = new ArrayList<>();
        int start = 0;
        for (int i = 0; i < b.length; i++) {
            if (b[i] == 0) {
                args.add(new String(b, start, i - start, StandardCharsets.UTF_8));
                start = i + 1;
            }
        }
        if (start < b.length) {
            args.add(new String(b, start, b.length - start, StandardCharsets.UTF_8));
        }
        if (args.isEmpty()) {
            throw new IOException("/proc/self/cmdline is empty");
        }
        return args;
    }

    /** A started successor, before or after it reported ready. */
    public static final class Pending implements AutoCloseable {
        private final ProcessHandle process;
        private final Path socketFile;
        private final InheritedSockets.Listener listener;
        private final String token;
        private final long startNanos = System.nanoTime();
        private volatile NativeSocket channel;
        private volatile boolean aborted;

        private Pending(ProcessHandle process, Path socketFile, InheritedSockets.Listener listener, String token) {
            this.process = process;
            this.socketFile = socketFile;
            this.listener = listener;
            this.token = token;
        }

        public long pid() {
            return process.pid();
        }

        /** Since the successor was started. */
        public long elapsedMillis() {
            return (System.nanoTime() - startNanos) / 1_000_000;
        }

        /**
         * Waits until the successor reports ready; on a failure (it exited, it did not report within
         * {@code timeout}, {@link #close} meanwhile) it is killed if still alive and {@link Refused} says why.
         */
        public void awaitReady(Duration timeout) throws Refused {
            long deadline = System.nanoTime() + timeout.toNanos();
            try {
                while (true) {
                    if (aborted) {
                        throw new Refused("the restart was abandoned: the server is stopping");
                    }
                    NativeSocket ch = listener.accept(20);
                    if (ch != null) {
                        String line = readLine(ch);
                        String[] f = line == null ? new String[0] : line.split(" ");
                        if (f.length == 3 && f[0].equals("ready") && f[1].equals(token)) {
                            channel = ch;
                            return;
                        }
                        ch.close();     // not our successor
                        continue;
                    }
                    if (!process.isAlive()) {
                        throw new Refused("the successor (pid " + process.pid() + ") exited before it was ready (its log says why)");
                    }
                    if (System.nanoTime() > deadline) {
                        throw new Refused("the successor (pid " + process.pid() + ") was not ready within "
                                + timeout.toSeconds() + " s");
                    }
                }
            } catch (Refused e) {
                close();
                throw e;
            } catch (IOException e) {
                close();
                throw new Refused("handover socket " + socketFile + ": " + e.getMessage());
            }
        }

        /**
         * After this server stopped: tells the successor to take over the data directory, and which devices were
         * left connected for it and when, then passes it the kernel connections stopped at a request boundary
         * ({@code handed}). Each handed connection's descriptors here are closed without a shutdown, passed or not
         * (one that did not go: its device is in the line, the successor reconnects it). False when the successor
         * is gone (systemd's restart then applies).
         */
        public boolean go(Set<String> keptDevices, long keptAtMillis, List<KernelAttachments.Handing> handed) {
            NativeSocket ch = channel;
            try {
                if (ch == null) {
                    for (KernelAttachments.Handing h : handed) {
                        h.release();
                    }
                    return false;
                }
                String line = "go " + keptAtMillis + " " + (keptDevices.isEmpty() ? "-" : String.join(",", new TreeSet<>(keptDevices))) + "\n";
                ByteBuffer b = ByteBuffer.wrap(line.getBytes(StandardCharsets.US_ASCII));
                while (b.hasRemaining()) {
                    ch.write(b);
                }
                FdPassing passing = handed.isEmpty() ? null : new FdPassing(1);
                boolean sending = true;
                for (KernelAttachments.Handing h : handed) {
                    if (sending) {
                        try {
                            h.connection().send(passing, ch, h.fd());
                            Log.info("handed %s (%s) over to pid %d: its connection, %d byte(s) read ahead", h.device(),
                                    h.connection().export(), process.pid(), h.connection().readAhead().length);
                        } catch (IOException e) {
                            sending = false;     // the rest go the reconnect way
                            Log.warn("could not hand %s over (%s): the successor reconnects it", h.device(), e.getMessage());
                        }
                    }
                    h.release();
                }
                return true;
            } catch (IOException e) {
                for (KernelAttachments.Handing h : handed) {
                    h.release();
                }
                return false;
            } finally {
                closeFiles();
            }
        }

        /** Abandons the successor: it is killed (before {@link #go}) and the socket removed. */
        @Override
        public void close() {
            aborted = true;
            if (channel == null || process.isAlive()) {
                process.destroyForcibly();
            }
            closeFiles();
        }

        private void closeFiles() {
            try {
                NativeSocket ch = channel;
                if (ch != null) {
                    ch.close();
                }
                listener.close();
                Files.deleteIfExists(socketFile);
            } catch (IOException e) {
                // best effort
            }
        }
    }

    /**
     * Starts the successor: {@code command} with this process's environment, without the variables that belong
     * to this process only (WATCHDOG_PID, LISTEN_*), plus the handover socket and token; its output goes to this
     * process's standard error. It is started by a shell that exits at once, so it is not this process's child
     * but the service manager's (PID 1, or the subreaper): systemd then supervises it as the unit's main process
     * after MAINPID= like one it started (a main PID that is not its child it would not wait for at a stop).
     * A shell's background job ignores SIGINT and SIGQUIT; the server stops on SIGTERM.
     */
    public static Pending start(List<String> command, Path dataDir) throws Refused {
        return start(command, dataDir, false);
    }

    /**
     * As {@link #start(List, Path)}; {@code forAdoption}: the successor of a service manager's restart, which the
     * unit's next ExecStart makes the main process ({@link #ADOPTION_ENV}) rather than this server's MAINPID=.
     */
    public static Pending start(List<String> command, Path dataDir, boolean forAdoption) throws Refused {
        Path socketFile = dataDir.resolve(SOCKET_FILE);
        InheritedSockets.Listener listener;
        try {
            Files.deleteIfExists(socketFile);
            listener = UnixListeners.listen(socketFile, 4);
            Files.setPosixFilePermissions(socketFile, PosixFilePermissions.fromString("rw-------"));
        } catch (IOException | UnsupportedOperationException e) {
            throw new Refused("cannot listen on " + socketFile + " for the successor: " + e.getMessage());
        }
        byte[] secret = new byte[16];
        new SecureRandom().nextBytes(secret);
        String token = HexFormat.of().formatHex(secret);
        List<String> sh = new ArrayList<>(List.of("/bin/sh", "-c", "\"$@\" >&2 </dev/null & echo $!", "snapbd-successor"));
        sh.addAll(command);
        ProcessBuilder pb = new ProcessBuilder(sh).redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null")))
                .redirectOutput(ProcessBuilder.Redirect.PIPE).redirectError(ProcessBuilder.Redirect.INHERIT);
        Map<String, String> env = pb.environment();
        // the watchdog variables name this process; systemd's sockets are not passed on (see SnapbdServer)
        env.remove("WATCHDOG_PID");
        env.remove("LISTEN_PID");
        env.remove("LISTEN_FDS");
        env.remove("LISTEN_FDNAMES");
        env.put(SOCKET_ENV, socketFile.toAbsolutePath().toString());
        env.put(TOKEN_ENV, token);
        if (forAdoption) {
            env.put(ADOPTION_ENV, dataDir.resolve(ADOPTION_FILE).toAbsolutePath().toString());
        } else {
            env.remove(ADOPTION_ENV);
        }
        try {
            Process shell = pb.start();
            String out = new String(shell.getInputStream().readNBytes(64), StandardCharsets.US_ASCII).strip();
            shell.waitFor();
            ProcessHandle successor;
            try {
                successor = ProcessHandle.of(Long.parseLong(out)).orElse(null);
            } catch (NumberFormatException e) {
                throw new IOException("the shell that starts it said '" + out + "'");
            }
            if (successor == null) {
                throw new Refused("the successor " + command + " (pid " + out + ") exited at once (its log says why)");
            }
            return new Pending(successor, socketFile, listener, token);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            closeQuietly(listener, socketFile);
            throw new Refused("interrupted while starting the successor");
        } catch (Refused e) {
            closeQuietly(listener, socketFile);
            throw e;
        } catch (IOException e) {
            try {
                listener.close();
                Files.deleteIfExists(socketFile);
            } catch (IOException ignored) {
                // best effort
            }
            throw new Refused("cannot start the successor " + command + ": " + e.getMessage());
        }
    }

    private static void closeQuietly(InheritedSockets.Listener listener, Path socketFile) {
        try {
            listener.close();
            Files.deleteIfExists(socketFile);
        } catch (IOException ignored) {
            // best effort
        }
    }

    // ---- the successor's side ------------------------------------------------------------------------------

    /**
     * What the predecessor handed over: the devices it left connected and when, and the kernel connections it
     * passed (their descriptors owned by this process now; empty from a predecessor that passes none).
     */
    public record Go(long keptAtMillis, Set<String> devices, List<HandedConnection.Received> connections) {
        Go(long keptAtMillis, Set<String> devices) {
            this(keptAtMillis, devices, List.of());
        }

        static Go parse(String line) throws IOException {
            String[] f = line == null ? new String[0] : line.split(" ");
            if (f.length != 3 || !f[0].equals("go")) {
                throw new IOException("the predecessor ended the handover without handing over"
                        + (line == null ? "" : " ('" + line + "')"));
            }
            try {
                return new Go(Long.parseLong(f[1]), f[2].equals("-") ? Set.of() : Set.copyOf(Arrays.asList(f[2].split(","))));
            } catch (NumberFormatException e) {
                throw new IOException("bad handover line '" + line + "'");
            }
        }
    }

    /** True in a successor (the environment names a handover socket). */
    public static boolean isSuccessor() {
        String s = System.getenv(SOCKET_ENV);
        return s != null && !s.isEmpty();
    }

    /**
     * In a successor, once it is ready to take over: reports ready and waits (unbounded: the predecessor's stop is
     * bounded by its stop-timeout, and its end closes the socket) for the predecessor to have stopped.
     */
    public static Go readyAndAwaitGo() throws IOException {
        Path socket = Path.of(System.getenv(SOCKET_ENV));
        String token = System.getenv(TOKEN_ENV);
        try (NativeSocket ch = UnixListeners.connect(socket)) {
            ByteBuffer b = ByteBuffer.wrap(("ready " + token + " " + ProcessHandle.current().pid() + "\n")
                    .getBytes(StandardCharsets.US_ASCII));
            while (b.hasRemaining()) {
                ch.write(b);
            }
            Go go = Go.parse(readLine(ch));
            TakeoverClock.go();
            List<HandedConnection.Received> connections = receiveConnections(ch);
            TakeoverClock.lap(TakeoverClock.Part.RECEIVED);
            return new Go(go.keptAtMillis(), go.devices(), connections);
        }
    }

    /**
     * The kernel connections that follow the {@code go} line, until the predecessor closes the socket. One that
     * cannot be read ends the list (its device, and those after it, are reconnected instead); the log says so.
     */
    private static List<HandedConnection.Received> receiveConnections(NativeSocket ch) {
        List<HandedConnection.Received> got = new ArrayList<>();
        FdPassing passing;
        try {
            passing = new FdPassing(1);
        } catch (IOException e) {
            Log.warn("cannot receive the predecessor's kernel connections (%s): their devices are reconnected", e.getMessage());
            return got;
        }
        while (true) {
            try {
                got.add(HandedConnection.receive(passing, ch));
            } catch (EOFException e) {
                return got;
            } catch (IOException e) {
                Log.warn("receiving the predecessor's kernel connections: %s; the devices not received are reconnected",
                        e.getMessage());
                return got;
            }
        }
    }

    /** One line (without its newline), or null at end of stream before one. */
    static String readLine(ByteChannel ch) throws IOException {
        ByteArrayOutputStream line = new ByteArrayOutputStream();
        ByteBuffer one = ByteBuffer.allocate(1);
        while (line.size() < MAX_LINE) {
            one.clear();
            if (ch.read(one) < 0) {
                return null;
            }
            if (one.get(0) == '\n') {
                return line.toString(StandardCharsets.US_ASCII);
            }
            line.write(one.get(0));
        }
        throw new IOException("handover line longer than " + MAX_LINE + " bytes");
    }
}
