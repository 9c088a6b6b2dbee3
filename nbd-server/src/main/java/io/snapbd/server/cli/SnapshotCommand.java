package io.snapbd.server.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.snapbd.server.api.CloneState;
import io.snapbd.server.api.CloneStatus;
import io.snapbd.server.api.Json;
import io.snapbd.server.api.RestoreStatus;
import io.snapbd.server.api.SaveSpace;
import io.snapbd.server.config.Sizes;
import io.snapbd.server.export.ExportName;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

@Command(name = "snapshot", mixinStandardHelpOptions = true,
        description = "Create, list, delete, restore and clone snapshots (exported read-only as VOLUME@SNAPSHOT).",
        subcommands = {SnapshotCommand.Create.class, SnapshotCommand.ListSnapshots.class, SnapshotCommand.Delete.class,
                SnapshotCommand.Restore.class, SnapshotCommand.Clone.class, SnapshotCommand.CloneProgress.class})
final class SnapshotCommand implements Runnable {

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Override
    public void run() {
        throw new CommandLine.ParameterException(spec.commandLine(), "missing subcommand: create, list, delete, restore or clone");
    }

    static ObjectNode request(String command, String volume, String name) {
        ObjectNode r = Cli.request(command);
        r.put("volume", volume);
        if (name != null) {
            r.put("name", name);
        }
        return r;
    }

    /** One line for a restore in progress (or failed) as {@code status} and {@code snapshot list} report it. */
    static String restoreLine(RestoreStatus r) {
        String base = "restore from snapshot " + r.snapshot() + " " + r.state()
                + " (" + r.phase() + ", " + r.blocksChanged() + " block(s) changed, started " + r.started() + ")";
        return r.error() != null ? base + ": " + r.error()
                + "; production is partly restored until a restore completes (the next start finishes it)" : base;
    }

    @Command(name = "create", mixinStandardHelpOptions = true,
            description = "Take a snapshot: in-flight writes finish first, later ones wait; time does not grow with volume size.")
    static final class Create implements Runnable {
        @CommandLine.Mixin
        Cli.DataDirOption dataDir;
        @Parameters(index = "0", paramLabel = "VOLUME")
        String volume;
        @Parameters(index = "1", paramLabel = "SNAPSHOT")
        String name;
        @Option(names = "--json", description = "Print JSON.")
        boolean json;

        @Override
        public void run() {
            JsonNode r = Cli.call(dataDir.resolve(), request("snapshot.create", volume, name));
            if (json) {
                Cli.printJson(r);
            } else {
                System.out.println("created snapshot " + name + " of " + volume + " (sequence " + r.path("sequence").asLong()
                        + ", " + r.path("createMicros").asLong() + " us), exported as " + ExportName.format(volume, name));
            }
        }
    }

    @Command(name = "list", mixinStandardHelpOptions = true, description = "List the snapshots of a volume, oldest first.")
    static final class ListSnapshots implements Runnable {
        @CommandLine.Mixin
        Cli.DataDirOption dataDir;
        @Parameters(index = "0", paramLabel = "VOLUME")
        String volume;
        @Option(names = "--json", description = "Print JSON.")
        boolean json;

        @Override
        public void run() {
            JsonNode r = Cli.call(dataDir.resolve(), request("snapshot.list", volume, null));
            if (json) {
                Cli.printJson(r);
                return;
            }
            System.out.printf("%-20s %5s %-24s %-28s %10s %s%n", "NAME", "SEQ", "CREATED", "STATE", "SAVED", "LUN STATE AT CREATION");
            for (JsonNode s : r.path("snapshots")) {
                String state = s.path("state").asText();
                if (s.has("reason")) {
                    state += ": " + s.path("reason").asText();
                }
                JsonNode lun = s.path("lunStateAtCreation");
                System.out.printf("%-20s %5d %-24s %-28s %10s %s%n", s.path("name").asText(), s.path("sequence").asLong(),
                        s.path("created").asText(), state, Sizes.format(s.path("saveBytesUsed").asLong()),
                        (lun.path("enabled").asBoolean() ? "enabled" : "disabled") + " counter=" + lun.path("counter").asLong());
            }
            if (r.has("restore")) {
                System.out.println(restoreLine(Json.MAPPER.convertValue(r.path("restore"), RestoreStatus.class)));
            }
            SaveSpace sv = Json.MAPPER.convertValue(r.path("saveVolume"), SaveSpace.class);
            System.out.println("save volume: " + Sizes.format(sv.bytesUsed()) + " of " + Sizes.format(sv.bytes()) + " used");
        }
    }

    @Command(name = "delete", mixinStandardHelpOptions = true,
            description = "Delete a snapshot at any position; older snapshots keep every before-image they need.")
    static final class Delete implements Runnable {
        @CommandLine.Mixin
        Cli.DataDirOption dataDir;
        @Parameters(index = "0", paramLabel = "VOLUME")
        String volume;
        @Parameters(index = "1", paramLabel = "SNAPSHOT")
        String name;
        @Option(names = "--force", description = "Delete even while clients read the snapshot export.")
        boolean force;

        @Override
        public void run() {
            ObjectNode req = request("snapshot.delete", volume, name);
            req.put("force", force);
            JsonNode r = Cli.call(dataDir.resolve(), req);
            SaveSpace sv = Json.MAPPER.convertValue(r.path("saveVolume"), SaveSpace.class);
            System.out.println("deleted snapshot " + ExportName.format(volume, name) + "; save volume " + Sizes.format(sv.bytesUsed()) + " used");
        }
    }

    @Command(name = "restore", mixinStandardHelpOptions = true,
            description = "Make the volume exactly the snapshot's content (and its in-use map). Younger snapshots keep their content. Refused while clients have the volume attached, unless --force.")
    static final class Restore implements Runnable {
        @CommandLine.Mixin
        Cli.DataDirOption dataDir;
        @Parameters(index = "0", paramLabel = "VOLUME")
        String volume;
        @Parameters(index = "1", paramLabel = "SNAPSHOT")
        String name;
        @Option(names = "--force", description = "Restore even while clients have the volume attached read-write.")
        boolean force;
        @Option(names = "--json", description = "Print JSON.")
        boolean json;

        @Override
        public void run() {
            ObjectNode req = request("snapshot.restore", volume, name);
            req.put("force", force);
            JsonNode r = Cli.call(dataDir.resolve(), req);
            if (json) {
                Cli.printJson(r);
            } else {
                System.out.println("restored " + volume + " from snapshot " + name + ": " + r.path("blocksChanged").asLong()
                        + " block(s) changed in " + r.path("millis").asLong() + " ms");
            }
        }
    }

    @Command(name = "clone", mixinStandardHelpOptions = true,
            description = "Copy a snapshot's in-use blocks into a new writable volume in the background; the new export refuses connections until the copy completes.")
    static final class Clone implements Runnable {
        @CommandLine.Mixin
        Cli.DataDirOption dataDir;
        @Parameters(index = "0", paramLabel = "VOLUME")
        String volume;
        @Parameters(index = "1", paramLabel = "SNAPSHOT")
        String name;
        @Parameters(index = "2", paramLabel = "NEWVOLUME")
        String target;
        @Option(names = "--wait", description = "Wait for the copy, showing progress.")
        boolean waitForIt;
        @Option(names = "--track", description = "Enable LUN state on the new volume before anyone can write to it "
                + "(the copy's writes count too); the token to save is reported when the copy is complete.")
        boolean track;
        @Option(names = "--json", description = "Print JSON.")
        boolean json;
        @Option(names = "--mirror", paramLabel = "LEG", description = "Make the new volume mirrored to this leg, a file or an NBD URI (as volume create --mirror); repeatable.")
        java.util.List<String> mirrors = new java.util.ArrayList<>();

        @Override
        public void run() {
            ObjectNode req = request("snapshot.clone", volume, name);
            req.put("target", target);
            var legs = req.putArray("mirrors");
            for (String m : mirrors) {
                legs.add(m.contains("://") ? m : java.nio.file.Path.of(m).toAbsolutePath().normalize().toString());
            }
            if (track) {
                req.put("track", true);
            }
            JsonNode job = Cli.call(dataDir.resolve(), req);
            CloneStatus c = Json.MAPPER.convertValue(job, CloneStatus.class);
            if (waitForIt) {
                // With --json, stdout carries only the JSON: progress goes to stderr.
                Progress p = new Progress(json ? System.err : System.out, "clone " + ExportName.format(volume, name) + " -> " + target);
                while (c.state() == CloneState.COPYING) {
                    p.update(c.bytesDone(), c.bytesTotal(), false);
                    try {
                        Thread.sleep(250);
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                        break;
                    }
                    ObjectNode st = Cli.request("clone.status");
                    st.put("target", target);
                    job = Cli.call(dataDir.resolve(), st);
                    c = Json.MAPPER.convertValue(job, CloneStatus.class);
                }
                p.update(c.bytesDone(), c.bytesTotal(), true);
                if (c.state() != CloneState.DONE) {
                    throw new Cli.ExitException(1, "clone " + c.state().label() + ": " + (c.error() == null ? "" : c.error()));
                }
            }
            if (json) {
                Cli.printJson(job);
            } else if (!waitForIt) {
                System.out.println("clone of " + ExportName.format(volume, name) + " into " + target + ": " + c.state().label()
                        + " (" + Sizes.format(c.bytesDone()) + " copied); follow it with 'snapbd snapshot clone-status "
                        + target + "'");
            } else {
                printToken(c);
            }
        }
    }

    /** The LUN state token of a finished tracked clone, the value a backup tool saves. */
    static void printToken(CloneStatus job) {
        if (job.lunState() != null && job.lunState().token() != null) {
            System.out.println("LUN state token to save: " + job.lunState().token());
        }
    }

    @Command(name = "clone-status", mixinStandardHelpOptions = true,
            description = "Progress of the copy into NEWVOLUME (running server); when a --track clone is done, the LUN state token to save.")
    static final class CloneProgress implements Runnable {
        @CommandLine.Mixin
        Cli.DataDirOption dataDir;
        @Parameters(index = "0", paramLabel = "NEWVOLUME")
        String target;
        @Option(names = "--json", description = "Print JSON.")
        boolean json;

        @Override
        public void run() {
            ObjectNode st = Cli.request("clone.status");
            st.put("target", target);
            JsonNode job = Cli.call(dataDir.resolve(), st);
            if (json) {
                Cli.printJson(job);
                return;
            }
            CloneStatus c = Json.MAPPER.convertValue(job, CloneStatus.class);
            System.out.println("clone of " + c.source() + " into " + target + ": " + c.state().label()
                    + " (" + Sizes.format(c.bytesDone()) + " of " + Sizes.format(Math.max(0, c.bytesTotal()))
                    + ")" + (c.error() != null ? ": " + c.error() : ""));
            printToken(c);
        }
    }
}
