package io.snapbd.server.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.snapbd.server.config.Sizes;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

@Command(name = "mirror", mixinStandardHelpOptions = true,
        description = "Mirrored volumes: leg status and reconciliation (docs/mirrors.md).",
        subcommands = {MirrorCommand.Status.class, MirrorCommand.Reconcile.class, MirrorCommand.Add.class,
                MirrorCommand.Remove.class})
final class MirrorCommand implements Runnable {

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Override
    public void run() {
        throw new CommandLine.ParameterException(spec.commandLine(), "missing subcommand: status, reconcile, add or remove");
    }

    static void print(JsonNode r) {
        System.out.printf("%-4s %-10s %8s %10s %10s %-6s %s%n", "LEG", "STATE", "ENTRIES", "COPIED", "FROM", "DIR", "URI");
        for (JsonNode l : r.path("legs")) {
            System.out.printf("%-4d %-10s %8d %10s %10s %-6s %s%n", l.path("leg").asInt(), l.path("state").asText(),
                    l.path("tableEntries").asLong(), Sizes.format(l.path("bytesCopied").asLong()),
                    Sizes.format(l.path("bytesCopiedFrom").asLong()), l.path("direction").asText(), l.path("uri").asText());
            if (l.has("error")) {
                System.out.println("     error: " + l.path("error").asText());
            }
        }
        JsonNode last = r.path("lastReconciliation");
        if (last.isNull() || last.isMissingNode()) {
            System.out.println("last reconciliation: none since the volume was opened");
        } else {
            System.out.println("last reconciliation: " + last.path("at").asText() + (last.path("atOpen").asBoolean() ? " (at open)" : "")
                    + ": entries matched " + last.path("entriesMatched").asLong() + ", unmatched " + last.path("entriesUnmatched").asLong()
                    + ", bytes compared " + last.path("bytesCompared").asLong()
                    + ", ranges copied " + last.path("rangesCopied").asLong() + ", bytes copied " + last.path("bytesCopied").asLong());
        }
    }

    /** What {@code status} and {@code reconcile} share: the volume, {@code --json}, one request and its printing. */
    abstract static class VolumeRequest implements Runnable {
        @CommandLine.Mixin
        Cli.DataDirOption dataDir;

        @Parameters(paramLabel = "NAME", description = "The mirrored volume.")
        String name;

        @Option(names = "--json", description = "Print JSON.")
        boolean json;

        abstract String command();

        JsonNode call() {
            ObjectNode req = Cli.request(command());
            req.put("volume", name);
            return Cli.call(dataDir.resolve(), req);
        }

        @Override
        public void run() {
            JsonNode r = call();
            if (json) {
                Cli.printJson(r);
            } else {
                print(r);
            }
        }
    }

    @Command(name = "status", mixinStandardHelpOptions = true,
            description = "Per leg: state (in-sync, resyncing, degraded, failed), tag table entries, what the last reconciliation copied.")
    static final class Status extends VolumeRequest {
        @Override
        String command() {
            return "mirror.status";
        }
    }

    @Command(name = "reconcile", mixinStandardHelpOptions = true,
            description = "Reconcile the legs now and resync degraded legs that are back: changes are held back meanwhile;"
                    + " only ranges of unmatched tag table entries (and a degraded leg's recorded regions) are copied."
                    + " With a running server, shows the copy's progress.")
    static final class Reconcile extends VolumeRequest {
        @Override
        String command() {
            return "mirror.reconcile";
        }

        @Override
        JsonNode call() {
            return withProgress(dataDir.resolve(), name, "reconcile " + name, json, super::call);
        }
    }

    /**
     * Runs {@code call} (a request to the running server, if any) while a thread polls {@code mirror.status} of
     * volume {@code name} and draws the copy's progress ({@code copy} in the status) under {@code label}.
     */
    static JsonNode withProgress(java.nio.file.Path dd, String name, String label, boolean json,
                                 java.util.function.Supplier<JsonNode> call) {
        Thread poller = new Thread(() -> showProgress(dd, name, label, json), label + " progress");
        poller.setDaemon(true);
        poller.start();
        try {
            return call.get();
        } finally {
            poller.interrupt();
            try {
                poller.join(2000);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
    }

    /** Polls {@code mirror.status} of the running server (if any) and draws the copy's progress. */
    private static void showProgress(java.nio.file.Path dd, String name, String label, boolean json) {
        java.nio.file.Path sock = dd.resolve("admin.sock");
        Progress bar = null;
        long done = 0;
        long total = 0;
        try {
            while (!Thread.currentThread().isInterrupted()) {
                Thread.sleep(500);
                ObjectNode req = Cli.request("mirror.status");
                req.put("volume", name);
                JsonNode st;
                try (java.nio.channels.SocketChannel ch = io.snapbd.server.admin.AdminClient.connect(sock)) {
                    if (ch == null) {
                        return;            // no server: the work runs in this process
                    }
                    st = io.snapbd.server.admin.AdminClient.call(ch, req);
                }
                done = st.path("copy").path("bytesDone").asLong();
                total = st.path("copy").path("bytesTotal").asLong();
                if (total > 0) {
                    if (bar == null) {
                        bar = new Progress(json ? System.err : System.out, label);
                    }
                    bar.update(done, total, false);
                }
            }
        } catch (InterruptedException e) {
            if (bar != null) {
                bar.update(total, total, true);
            }
        } catch (Exception e) {
            // progress is a courtesy: the request's own answer says what happened
        }
    }

    /**
     * What {@code add} and {@code remove} share. With a server running on the data directory they are requests to
     * it ({@code mirror.add}, {@code mirror.remove}: the volume stays served; add shows the copy's progress).
     * Otherwise they work on the stopped volume, directly on the data directory (its lock held); the volume is
     * opened once first, which reconciles and resyncs what it can, and closed cleanly.
     */
    abstract static class OfflineLegChange implements Runnable {
        @CommandLine.Mixin
        Cli.DataDirOption dataDir;

        @Parameters(index = "0", paramLabel = "NAME", description = "The volume.")
        String name;

        @Parameters(index = "1", paramLabel = "LEG", description = "A file path or an NBD URI (nbd://HOST[:PORT]/EXPORT, nbd+unix:///EXPORT?socket=PATH), as volume create --mirror.")
        String leg;

        @Option(names = "--json", description = "Print the answer (the legs after the change) as JSON (with a running server).")
        boolean json;

        abstract void change(java.nio.file.Path dir, io.snapbd.engine.volume.VolumeHeader h, String uri,
                             io.snapbd.engine.io.FileSpace space) throws java.io.IOException;

        /** The change as a request to the running server. */
        abstract JsonNode online(java.nio.file.Path dd, String uri);

        @Override
        public void run() {
            java.nio.file.Path dd = dataDir.resolve();
            String uri = leg.contains("://") ? leg : java.nio.file.Path.of(leg).toAbsolutePath().toString();
            boolean served = false;
            try (java.nio.channels.SocketChannel ch = io.snapbd.server.admin.AdminClient.connect(dd.resolve("admin.sock"))) {
                served = ch != null;
            } catch (java.io.IOException ignored) {
                // no server answers
            }
            if (served) {
                JsonNode r = online(dd, uri);
                if (json) {
                    Cli.printJson(r);
                } else {
                    print(r);
                }
                return;
            }
            try (io.snapbd.engine.volume.VolumeCatalog c = io.snapbd.engine.volume.VolumeCatalog.open(dd,
                    io.snapbd.server.service.FileSpaces.best(), false)) {
                if (!c.exists(name)) {
                    throw new Cli.ExitException(2, "no volume named " + name);
                }
                java.nio.file.Path dir = c.volumeDir(name);
                io.snapbd.engine.volume.VolumeHeader h;
                try (io.snapbd.engine.volume.Volume v = io.snapbd.engine.volume.Volume.open(dir, c.space())) {
                    h = v.header();
                }
                change(dir, h, uri, c.space());
            } catch (IllegalArgumentException e) {
                throw new Cli.ExitException(2, e.getMessage());
            } catch (java.io.IOException e) {
                throw new Cli.ExitException(1, e.getMessage());
            }
        }
    }

    @Command(name = "add", mixinStandardHelpOptions = true,
            description = "Add a leg: a new file or a zeroed NBD export, filled with a full copy of the volume's blocks"
                    + " (with progress), then listed; the leg is then in sync. With a server running, the volume stays"
                    + " served: the leg takes every change while the copy runs.")
    static final class Add extends OfflineLegChange {
        @Option(names = "--sparse", description = "Make a file leg sparse instead of preallocated.")
        boolean sparse;

        @Option(names = "--force", description = "Make the leg even where it holds another volume's tag table (that volume's leg is overwritten), or replace an existing file leg's files.")
        boolean force;

        @Override
        void change(java.nio.file.Path dir, io.snapbd.engine.volume.VolumeHeader h, String uri,
                    io.snapbd.engine.io.FileSpace space) throws java.io.IOException {
            Progress p = new Progress(System.out, "mirror add " + name);
            int n = io.snapbd.engine.mirror.LegChanges.add(dir, h.uuid(), h.size(),
                    dir.resolve(io.snapbd.engine.volume.Volume.DATA_FILE), uri, sparse, space, force,
                    (done, total) -> p.update(done, total, done == total));
            System.out.println("volume " + name + ": mirror leg " + n + " (" + uri + ") added, in sync");
        }

        @Override
        JsonNode online(java.nio.file.Path dd, String uri) {
            ObjectNode req = Cli.request("mirror.add", "volume", name, "leg", uri, "sparse", sparse, "force", force);
            return withProgress(dd, name, "mirror add " + name, json, () -> Cli.call(dd, req));
        }
    }

    @Command(name = "remove", mixinStandardHelpOptions = true,
            description = "Remove a leg (a degraded one too); its files stay as they are. With a server running, the"
                    + " volume stays served (not the last extra leg). On a stopped volume the last leg removed makes it"
                    + " unmirrored.")
    static final class Remove extends OfflineLegChange {
        @Override
        void change(java.nio.file.Path dir, io.snapbd.engine.volume.VolumeHeader h, String uri,
                    io.snapbd.engine.io.FileSpace space) throws java.io.IOException {
            io.snapbd.engine.mirror.LegChanges.remove(dir, h.uuid(), h.size(), uri);
            System.out.println("volume " + name + ": mirror leg " + uri + " removed (its files are left as they are)");
        }

        @Override
        JsonNode online(java.nio.file.Path dd, String uri) {
            return Cli.call(dd, Cli.request("mirror.remove", "volume", name, "leg", uri));
        }
    }
}
