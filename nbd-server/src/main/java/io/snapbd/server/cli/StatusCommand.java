package io.snapbd.server.cli;

import com.fasterxml.jackson.databind.JsonNode;
import io.snapbd.server.api.AttachmentStatus;
import io.snapbd.server.api.Json;
import io.snapbd.server.api.VolumeStatus;
import io.snapbd.server.config.Sizes;
import picocli.CommandLine;
import picocli.CommandLine.Command;

import java.util.ArrayList;
import java.util.List;

@Command(name = "status", mixinStandardHelpOptions = true, description = "Show the server (if running) and its volumes.")
final class StatusCommand implements Runnable {

    @CommandLine.Mixin
    Cli.Query query;

    @Override
    public void run() {
        query.answer(Cli.request("status"), StatusCommand::print);
    }

    private static void print(JsonNode s) {
        System.out.println("data directory: " + s.path("dataDir").asText());
        System.out.println("server:         " + s.path("server").asText()
                + (s.has("pid") ? " (pid " + s.path("pid").asLong() + ", up " + s.path("uptimeSeconds").asLong() + " s)" : ""));
        if (s.has("listeners")) {
            System.out.println("listeners:      " + String.join(", ", iter(s.path("listeners"))));
            System.out.println("connections:    " + s.path("connections").asInt() + " open, "
                    + s.path("connectionsAccepted").asLong() + " accepted, " + s.path("connectionsRejected").asLong() + " refused");
            System.out.println("default export: " + s.path("defaultExport").asText());
            for (JsonNode n : s.path("attachments")) {
                AttachmentStatus a = Json.MAPPER.convertValue(n, AttachmentStatus.class);
                System.out.println("attached:       " + a.device() + " -> " + a.export()
                        + " (" + (a.readOnly() ? "read-only" : "read-write") + ", since " + a.since()
                        + (a.kernelInterface() == null ? "" : ", " + a.kernelInterface()) + ")");
            }
        }
        System.out.println("file space:     " + s.path("fileSpace").asText());
        System.out.println("volumes:");
        for (JsonNode n : s.path("volumes")) {
            VolumeStatus v = Json.MAPPER.convertValue(n, VolumeStatus.class);
            if (v.reason() != null) {
                System.out.println("  " + v.name() + ": " + v.state().label().toUpperCase().replace('-', ' ')
                        + (s.has("listeners") ? " (not exported)" : "") + ": " + v.reason());
                continue;
            }
            StringBuilder sb = new StringBuilder("  " + v.name() + ": " + Sizes.format(v.size())
                    + ", block " + v.blockSize() + ", save volume " + Sizes.format(v.saveSize()));
            if (v.bytesInUse() != null) {
                sb.append(", in use ").append(Sizes.format(v.bytesInUse()));
            }
            if (v.connections() != null) {
                sb.append(", ").append(v.connections()).append(" connection(s)");
            }
            System.out.println(sb);
            if (v.restore() != null) {
                System.out.println("    " + SnapshotCommand.restoreLine(v.restore()));
            }
        }
    }

    private static Iterable<String> iter(JsonNode arr) {
        List<String> l = new ArrayList<>();
        arr.forEach(n -> l.add(n.asText()));
        return l;
    }
}
