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
        subcommands = {MirrorCommand.Status.class, MirrorCommand.Reconcile.class})
final class MirrorCommand implements Runnable {

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Override
    public void run() {
        throw new CommandLine.ParameterException(spec.commandLine(), "missing subcommand: status or reconcile");
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
                    + ", ranges copied " + last.path("rangesCopied").asLong() + ", bytes copied " + last.path("bytesCopied").asLong());
        }
    }

    @Command(name = "status", mixinStandardHelpOptions = true,
            description = "Per leg: state (in-sync, resyncing, degraded, failed), tag table entries, what the last reconciliation copied.")
    static final class Status implements Runnable {
        @CommandLine.Mixin
        Cli.DataDirOption dataDir;

        @Parameters(paramLabel = "NAME", description = "The mirrored volume.")
        String name;

        @Option(names = "--json", description = "Print JSON.")
        boolean json;

        @Override
        public void run() {
            ObjectNode req = Cli.request("mirror.status");
            req.put("volume", name);
            JsonNode r = Cli.call(dataDir.resolve(), req);
            if (json) {
                Cli.printJson(r);
            } else {
                print(r);
            }
        }
    }

    @Command(name = "reconcile", mixinStandardHelpOptions = true,
            description = "Reconcile the legs now: changes are held back meanwhile; only ranges of unmatched tag table entries are copied.")
    static final class Reconcile implements Runnable {
        @CommandLine.Mixin
        Cli.DataDirOption dataDir;

        @Parameters(paramLabel = "NAME", description = "The mirrored volume.")
        String name;

        @Option(names = "--json", description = "Print JSON.")
        boolean json;

        @Override
        public void run() {
            ObjectNode req = Cli.request("mirror.reconcile");
            req.put("volume", name);
            JsonNode r = Cli.call(dataDir.resolve(), req);
            if (json) {
                Cli.printJson(r);
            } else {
                print(r);
            }
        }
    }
}
