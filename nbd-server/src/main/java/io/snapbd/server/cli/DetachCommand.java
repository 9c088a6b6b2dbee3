package io.snapbd.server.cli;

import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

@Command(name = "detach", mixinStandardHelpOptions = true,
        description = "Detach an nbd device attached by the running server: flush it, disconnect it, release it.")
final class DetachCommand implements Runnable {

    @CommandLine.Mixin
    Cli.Query query;

    @Parameters(index = "0", paramLabel = "DEVICE", description = "nbd device, e.g. /dev/nbd0.")
    String device;

    @Option(names = "--force", description = "Detach even while a file system on it is mounted (it then gets I/O errors).")
    boolean force;

    @Override
    public void run() {
        query.answer(Cli.request("detach", "device", device, "force", force), r -> System.out.println("detached "
                + r.path("device").asText() + " (" + r.path("export").asText() + ", "
                + (r.path("flushed").asBoolean() ? "flushed" : "not flushed") + ")"));
    }
}
