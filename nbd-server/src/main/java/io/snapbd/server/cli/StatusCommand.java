package io.snapbd.server.cli;

import com.fasterxml.jackson.databind.JsonNode;
import io.snapbd.server.config.Sizes;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.util.ArrayList;
import java.util.List;

@Command(name = "status", mixinStandardHelpOptions = true, description = "Show the server (if running) and its volumes.")
final class StatusCommand implements Runnable {

    @CommandLine.Mixin
    Cli.DataDirOption dataDir;

    @Option(names = "--json", description = "Print JSON.")
    boolean json;

    @Override
    public void run() {
        JsonNode s = Cli.call(dataDir.resolve(), Cli.request("status"));
        if (json) {
            Cli.printJson(s);
            return;
        }
        System.out.println("data directory: " + s.path("dataDir").asText());
        System.out.println("server:         " + s.path("server").asText()
                + (s.has("pid") ? " (pid " + s.path("pid").asLong() + ", up " + s.path("uptimeSeconds").asLong() + " s)" : ""));
        if (s.has("listeners")) {
            System.out.println("listeners:      " + String.join(", ", iter(s.path("listeners"))));
            System.out.println("connections:    " + s.path("connections").asInt() + " open, "
                    + s.path("connectionsAccepted").asLong() + " accepted, " + s.path("connectionsRejected").asLong() + " refused");
            System.out.println("default export: " + s.path("defaultExport").asText());
            for (JsonNode a : s.path("attachments")) {
                System.out.println("attached:       " + a.path("device").asText() + " -> " + a.path("export").asText()
                        + " (" + (a.path("readOnly").asBoolean() ? "read-only" : "read-write") + ", since " + a.path("since").asText() + ")");
            }
        }
        System.out.println("file space:     " + s.path("fileSpace").asText());
        System.out.println("volumes:");
        for (JsonNode v : s.path("volumes")) {
            if (v.has("reason")) {
                System.out.println("  " + v.path("name").asText() + ": " + v.path("state").asText().toUpperCase().replace('-', ' ')
                        + (s.has("listeners") ? " (not exported)" : "") + ": " + v.path("reason").asText());
                continue;
            }
            StringBuilder sb = new StringBuilder("  " + v.path("name").asText() + ": " + Sizes.format(v.path("size").asLong())
                    + ", block " + v.path("blockSize").asInt() + ", save volume " + Sizes.format(v.path("saveSize").asLong()));
            if (v.has("bytesInUse")) {
                sb.append(", in use ").append(Sizes.format(v.path("bytesInUse").asLong()));
            }
            if (v.has("connections")) {
                sb.append(", ").append(v.path("connections").asInt()).append(" connection(s)");
            }
            System.out.println(sb);
            if (v.has("restore")) {
                System.out.println("    " + SnapshotCommand.restoreLine(v.path("restore")));
            }
        }
    }

    private static Iterable<String> iter(JsonNode arr) {
        List<String> l = new ArrayList<>();
        arr.forEach(n -> l.add(n.asText()));
        return l;
    }
}
