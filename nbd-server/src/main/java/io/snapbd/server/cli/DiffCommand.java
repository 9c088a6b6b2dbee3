package io.snapbd.server.cli;

import com.fasterxml.jackson.databind.JsonNode;
import io.snapbd.server.config.Sizes;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

@Command(name = "diff", mixinStandardHelpOptions = true,
        description = "Extents that changed from snapshot OLDER to the younger snapshot YOUNGER (state 'changed'), and extents not in use in YOUNGER (state 'unused'); unchanged extents are not listed.")
final class DiffCommand implements Runnable {
    @CommandLine.Mixin
    Cli.DataDirOption dataDir;
    @Parameters(index = "0", paramLabel = "VOLUME")
    String volume;
    @Parameters(index = "1", paramLabel = "OLDER")
    String older;
    @Parameters(index = "2", paramLabel = "YOUNGER")
    String younger;
    @Option(names = "--json", description = "Print JSON: extents with offset, length, state.")
    boolean json;

    @Override
    public void run() {
        Cli.answer(dataDir, Cli.request("snapshot.diff", "volume", volume, "older", older, "younger", younger), json,
                DiffCommand::print);
    }

    private static void print(JsonNode r) {
        System.out.printf("%16s %16s %s%n", "OFFSET", "LENGTH", "STATE");
        for (JsonNode e : r.path("extents")) {
            System.out.printf("%16d %16d %s%n", e.path("offset").asLong(), e.path("length").asLong(), e.path("state").asText());
        }
        System.out.println("changed " + Sizes.format(r.path("changedBytes").asLong()) + ", unused "
                + Sizes.format(r.path("unusedBytes").asLong()));
    }
}
