package io.snapbd.server.cli;

import com.fasterxml.jackson.databind.JsonNode;
import io.snapbd.server.api.Json;
import io.snapbd.server.api.SnapshotDiff;
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

    private static void print(JsonNode answer) {
        SnapshotDiff r = Json.MAPPER.convertValue(answer, SnapshotDiff.class);
        System.out.printf("%16s %16s %s%n", "OFFSET", "LENGTH", "STATE");
        for (SnapshotDiff.Extent e : r.extents()) {
            System.out.printf("%16d %16d %s%n", e.offset(), e.length(), e.state().label());
        }
        System.out.println("changed " + Sizes.format(r.changedBytes()) + ", unused " + Sizes.format(r.unusedBytes()));
    }
}
