package io.snapbd.server.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.snapbd.server.api.CloneState;
import io.snapbd.server.api.CloneStatus;
import io.snapbd.server.api.Deleted;
import io.snapbd.server.api.Json;
import io.snapbd.server.api.RestoreResult;
import io.snapbd.server.api.RestoreStatus;
import io.snapbd.server.api.SaveSpace;
import io.snapbd.server.api.SnapshotList;
import io.snapbd.server.api.SnapshotStatus;
import io.snapbd.server.config.Sizes;
import io.snapbd.server.export.ExportName;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

import java.util.ArrayList;
import java.util.List;

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

    /** What the subcommands on one snapshot share: the data directory, VOLUME and SNAPSHOT. */
    abstract static class OnSnapshot implements Runnable {
        @CommandLine.Mixin
        Cli.DataDirOption dataDir;
        @Parameters(index = "0", paramLabel = "VOLUME")
        String volume;
        @Parameters(index = "1", paramLabel = "SNAPSHOT")
        String name;

        /** The request {@code command} about this snapshot, with {@code more} name/value pairs after VOLUME and SNAPSHOT. */
        ObjectNode request(String command, Object... more) {
            return Cli.with(Cli.request(command, "volume", volume, "name", name), more);
        }
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
    static final class Create extends OnSnapshot {
        @Option(names = "--json", description = "Print JSON.")
        boolean json;

        @Override
        public void run() {
            Cli.answer(dataDir, request("snapshot.create"), json, answer -> {
                SnapshotStatus s = Json.MAPPER.convertValue(answer, SnapshotStatus.class);
                System.out.println("created snapshot " + name + " of " + volume + " (sequence " + s.sequence() + ", "
                        + s.createMicros() + " us), exported as " + ExportName.format(volume, name));
            });
        }
    }

    @Command(name = "list", mixinStandardHelpOptions = true, description = "List the snapshots of a volume, oldest first.")
    static final class ListSnapshots implements Runnable {
        @CommandLine.Mixin
        Cli.Query query;
        @Parameters(index = "0", paramLabel = "VOLUME")
        String volume;

        @Override
        public void run() {
            query.answer(Cli.request("snapshot.list", "volume", volume), ListSnapshots::print);
        }

        private static void print(JsonNode answer) {
            SnapshotList r = Json.MAPPER.convertValue(answer, SnapshotList.class);
            System.out.printf("%-20s %5s %-24s %-28s %10s %s%n", "NAME", "SEQ", "CREATED", "STATE", "SAVED", "LUN STATE AT CREATION");
            for (SnapshotStatus s : r.snapshots()) {
                String state = s.state().label() + (s.reason() != null ? ": " + s.reason() : "");
                SnapshotStatus.LunAtCreation lun = s.lunStateAtCreation();
                System.out.printf("%-20s %5d %-24s %-28s %10s %s%n", s.name(), s.sequence(), s.created(), state,
                        Sizes.format(s.saveBytesUsed()), (lun.enabled() ? "enabled" : "disabled") + " counter=" + lun.counter());
            }
            if (r.restore() != null) {
                System.out.println(restoreLine(r.restore()));
            }
            SaveSpace sv = r.saveVolume();
            System.out.println("save volume: " + Sizes.format(sv.bytesUsed()) + " of " + Sizes.format(sv.bytes()) + " used");
        }
    }

    @Command(name = "delete", mixinStandardHelpOptions = true,
            description = "Delete a snapshot at any position; older snapshots keep every before-image they need.")
    static final class Delete extends OnSnapshot {
        @Option(names = "--force", description = "Delete even while clients read the snapshot export.")
        boolean force;

        @Override
        public void run() {
            Deleted r = Json.MAPPER.convertValue(Cli.call(dataDir.resolve(), request("snapshot.delete", "force", force)),
                    Deleted.class);
            SaveSpace sv = r.saveVolume();
            System.out.println("deleted snapshot " + ExportName.format(volume, name) + "; save volume " + Sizes.format(sv.bytesUsed()) + " used");
        }
    }

    @Command(name = "restore", mixinStandardHelpOptions = true,
            description = "Make the volume exactly the snapshot's content (and its in-use map). Younger snapshots keep their content. Refused while clients have the volume attached, unless --force.")
    static final class Restore extends OnSnapshot {
        @Option(names = "--force", description = "Restore even while clients have the volume attached read-write.")
        boolean force;
        @Option(names = "--json", description = "Print JSON.")
        boolean json;

        @Override
        public void run() {
            Cli.answer(dataDir, request("snapshot.restore", "force", force), json, answer -> {
                RestoreResult r = Json.MAPPER.convertValue(answer, RestoreResult.class);
                System.out.println("restored " + volume + " from snapshot " + name + ": " + r.blocksChanged()
                        + " block(s) changed in " + r.millis() + " ms");
            });
        }
    }

    @Command(name = "clone", mixinStandardHelpOptions = true,
            description = "Copy a snapshot's in-use blocks into a new writable volume in the background; the new export refuses connections until the copy completes.")
    static final class Clone extends OnSnapshot {
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
        List<String> mirrors = new ArrayList<>();

        @Override
        public void run() {
            JsonNode job = Cli.call(dataDir.resolve(), request("snapshot.clone", "target", target, "mirrors", Cli.legs(mirrors),
                    "track", track ? true : null));
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
                    job = Cli.call(dataDir.resolve(), Cli.request("clone.status", "target", target));
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
        Cli.Query query;
        @Parameters(index = "0", paramLabel = "NEWVOLUME")
        String target;

        @Override
        public void run() {
            query.answer(Cli.request("clone.status", "target", target), this::print);
        }

        private void print(JsonNode job) {
            CloneStatus c = Json.MAPPER.convertValue(job, CloneStatus.class);
            System.out.println("clone of " + c.source() + " into " + target + ": " + c.state().label()
                    + " (" + Sizes.format(c.bytesDone()) + " of " + Sizes.format(Math.max(0, c.bytesTotal()))
                    + ")" + (c.error() != null ? ": " + c.error() : ""));
            printToken(c);
        }
    }
}
