package io.snapbd.server.cli;

import com.fasterxml.jackson.databind.JsonNode;
import io.snapbd.server.config.Sizes;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

@Command(name = "attach", mixinStandardHelpOptions = true,
        description = {"Attach an export to the kernel as /dev/nbdN, served by the running server (root, nbd module loaded).",
                "Snapshot exports (VOLUME@SNAPSHOT) are always read-only. 'status' lists attachments; 'detach' ends one."})
final class AttachCommand implements Runnable {

    @CommandLine.Mixin
    Cli.Query query;

    @Parameters(index = "0", paramLabel = "EXPORT", description = "Export name: VOLUME or VOLUME@SNAPSHOT.")
    String export;

    @Parameters(index = "1", paramLabel = "DEVICE", description = "nbd device, e.g. /dev/nbd0.")
    String device;

    @Option(names = "--read-only", description = "Attach read-only (the kernel refuses writes).")
    boolean readOnly;

    @Option(names = "--timeout", paramLabel = "SECONDS", description = "Request timeout of the nbd driver (default: the driver's).")
    Integer timeout;

    @Override
    public void run() {
        query.answer(Cli.request("attach", "export", export, "device", device, "readOnly", readOnly, "timeout", timeout),
                AttachCommand::print);
    }

    private static void print(JsonNode r) {
        System.out.println("attached " + r.path("export").asText() + " to " + r.path("device").asText() + " ("
                + Sizes.format(r.path("size").asLong()) + ", " + (r.path("readOnly").asBoolean() ? "read-only" : "read-write")
                + ", block size " + r.path("blockSize").asInt() + ")");
    }
}
