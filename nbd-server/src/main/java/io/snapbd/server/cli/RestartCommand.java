package io.snapbd.server.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.snapbd.server.admin.AdminClient;
import io.snapbd.server.api.OperationException;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.io.IOException;
import java.nio.channels.SocketChannel;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Locale;
import java.util.concurrent.Callable;

@Command(name = "restart", mixinStandardHelpOptions = true,
        description = {"Restart the running server in place: it starts its successor (the same command line, the jar read anew) "
                + "and serves until the successor is ready, then hands over (kernel devices stay connected; I/O pauses only for "
                + "the stop and the successor's open, not for a JVM start). If the successor fails first, the server keeps "
                + "serving and this command fails (exit 1). Exit status 3: the running server is too old to restart in place; 4: no "
                + "server answers on DIR/admin.sock.",
                "--prepare: only start the successor and return once it is ready; the server hands over to it at its next stop "
                + "(SIGTERM) within 60 s, else the successor is killed. snapbd.service's ExecStop= runs it in a restart job, "
                + "and the unit's next start adopts the successor instead of starting a JVM (systemctl restart without a JVM start "
                + "in the pause).",
                "No signal does this (the JVM keeps SIGUSR2 for suspending its threads). See docs/kernel-attach.md, \"In-place restart\"."})
final class RestartCommand implements Callable<Integer> {

    /** Exit status when the running server does not know the request (a version before the in-place restart). */
    static final int EXIT_UNSUPPORTED = 3;
    /** Exit status when no server answers on the admin socket. */
    static final int EXIT_NO_SERVER = 4;

    @CommandLine.Mixin
    Cli.Query query;

    @Option(names = "--timeout", paramLabel = "SECONDS", description = "How long to wait for the successor to serve after the handover (default 120); "
            + "with --prepare, for it to be ready.")
    int timeoutSeconds = 120;

    @Option(names = "--prepare", description = "Start the successor and return once it is ready to take over at the server's "
            + "next stop (a service manager's restart: snapbd.service's ExecStop=).")
    boolean prepare;

    @Override
    public Integer call() {
        Path dir = query.dataDir.resolve();
        Path socket = dir.resolve("admin.sock");
        if (!query.json) {
            System.out.println("restart: starting the successor; the running server serves meanwhile");
        }
        if (prepare) {
            return prepare(socket);
        }
        long t0 = System.nanoTime();
        SocketChannel ch = AdminClient.connect(socket);
        if (ch == null) {
            throw new Cli.ExitException(EXIT_NO_SERVER, "no server answers on " + socket + ": nothing to restart (start it with 'snapbd serve' "
                    + "or systemctl start snapbd)");
        }
        JsonNode r;
        try {
            r = AdminClient.call(ch, Cli.request("restart"));
        } catch (OperationException e) {
            if (e.getMessage().startsWith("unknown command 'restart'")) {
                throw new Cli.ExitException(EXIT_UNSUPPORTED, "the running server does not restart in place (an older version): "
                        + "use systemctl restart snapbd");
            }
            throw new Cli.ExitException(1, e.getMessage());
        } catch (IOException e) {
            throw new Cli.ExitException(1, Cli.message(e));
        }
        long oldPid = r.path("pid").asLong();
        long newPid = r.path("successorPid").asLong();
        if (!query.json) {
            System.out.printf(Locale.ROOT, "restart: successor pid %d ready after %.1f s; pid %d hands over to it%n", newPid,
                    r.path("successorReadyMillis").asLong() / 1000.0, oldPid);
        }
        long handover = System.nanoTime();
        long deadline = handover + Duration.ofSeconds(timeoutSeconds).toNanos();
        while (true) {
            // the successor's admin socket comes last in its start, just before READY=1
            long pid = serverPid(socket);
            if (pid == newPid) {
                break;
            }
            if (pid < 0 && !ProcessHandle.of(newPid).map(ProcessHandle::isAlive).orElse(false)) {
                throw new Cli.ExitException(1, "the successor (pid " + newPid + ") exited after the handover; see the server's log "
                        + "(under systemd, Restart=on-failure starts the server again)");
            }
            if (System.nanoTime() > deadline) {
                throw new Cli.ExitException(1, "the successor (pid " + newPid + ") does not serve " + timeoutSeconds
                        + " s after the handover; see the server's log");
            }
            try {
                Thread.sleep(50);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new Cli.ExitException(1, "interrupted");
            }
        }
        long servingAfter = (System.nanoTime() - handover) / 1_000_000;
        if (query.json) {
            ObjectNode out = ((ObjectNode) r).deepCopy();
            out.put("servingAfterHandoverMillis", servingAfter);
            out.put("totalMillis", (System.nanoTime() - t0) / 1_000_000);
            Cli.printJson(out);
        } else {
            System.out.printf(Locale.ROOT, "restart: pid %d serves (%.1f s after the handover); pid %d has stopped%n", newPid,
                    servingAfter / 1000.0, oldPid);
        }
        return 0;
    }

    /** {@code --prepare}: the successor is ready; the handover waits for the server's stop. */
    private int prepare(Path socket) {
        SocketChannel ch = AdminClient.connect(socket);
        if (ch == null) {
            throw new Cli.ExitException(EXIT_NO_SERVER, "no server answers on " + socket + ": nothing to restart");
        }
        JsonNode r;
        try {
            r = AdminClient.call(ch, Cli.request("restart.prepare", "readyTimeoutSeconds", timeoutSeconds));
        } catch (OperationException e) {
            if (e.getMessage().startsWith("unknown command 'restart.prepare'")) {
                throw new Cli.ExitException(EXIT_UNSUPPORTED, "the running server cannot prepare a restart (an older version)");
            }
            throw new Cli.ExitException(1, e.getMessage());
        } catch (IOException e) {
            throw new Cli.ExitException(1, Cli.message(e));
        }
        if (query.json) {
            Cli.printJson(r);
        } else {
            System.out.printf(Locale.ROOT, "restart: successor pid %d ready after %.1f s; pid %d hands over to it at its stop%n",
                    r.path("successorPid").asLong(), r.path("successorReadyMillis").asLong() / 1000.0, r.path("pid").asLong());
        }
        return 0;
    }

    /** The pid of the server answering on the admin socket, or -1 when none answers. */
    private static long serverPid(Path socket) {
        SocketChannel ch = AdminClient.connect(socket);
        if (ch == null) {
            return -1;
        }
        try {
            return AdminClient.call(ch, Cli.request("status")).path("pid").asLong(-1);
        } catch (IOException | OperationException e) {
            return -1;
        }
    }
}
