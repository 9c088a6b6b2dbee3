package io.snapbd.server.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.snapbd.server.api.Json;
import io.snapbd.server.api.VolumeList;
import io.snapbd.server.api.VolumeStatus;
import io.snapbd.server.config.Sizes;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

import java.util.ArrayList;
import java.util.List;

@Command(name = "volume", mixinStandardHelpOptions = true, description = "Create, list and delete volumes.",
        subcommands = {VolumeCommand.Create.class, VolumeCommand.ListVolumes.class, VolumeCommand.Delete.class})
final class VolumeCommand implements Runnable {

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Override
    public void run() {
        throw new CommandLine.ParameterException(spec.commandLine(), "missing subcommand: create, list or delete");
    }

    @Command(name = "create", mixinStandardHelpOptions = true,
            description = "Create a volume; a running server exports it at once.")
    static final class Create implements Runnable {
        @CommandLine.Mixin
        Cli.DataDirOption dataDir;

        @Parameters(paramLabel = "NAME", description = "Volume name (letters, digits, '.', '_', '-').")
        String name;

        @Option(names = "--size", required = true, paramLabel = "SIZE", description = "Size, e.g. 1G (suffixes K, M, G, T).")
        String size;

        @Option(names = "--save-size", paramLabel = "SIZE", description = "Save volume for snapshots (default: 256M or the volume size if smaller).")
        String saveSize;

        @Option(names = "--block-size", paramLabel = "N", defaultValue = "4096", description = "Block size, power of two 512..65536 (default 4096).")
        int blockSize;

        @Option(names = "--sparse", description = "Do not preallocate (testing and benchmarks only: writes may then fail with ENOSPC).")
        boolean sparse;

        @Option(names = "--json", description = "Print the new volume as JSON.")
        boolean json;

        @Option(names = "--mirror", paramLabel = "LEG",
                description = "Keep a synchronous copy of the volume's blocks on this leg: a new file (its tag table goes to PATH.tags), or an NBD export nbd://HOST[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=PATH of at least the volume's size + 2101248 bytes (zeroed). Repeat for more legs. See docs/mirrors.md.")
        List<String> mirrors = new ArrayList<>();

        @Option(names = "--force", description = "Make a --mirror leg even where it holds another volume's tag table (that volume's leg is overwritten), or replace an existing file leg's files.")
        boolean force;

        @Override
        public void run() {
            List<String> legs = Cli.legs(mirrors);
            ObjectNode req;
            try {
                req = Cli.request("volume.create", "name", name, "mirrors", legs, "size", Sizes.parse(size),
                        "saveSize", saveSize != null ? Sizes.parse(saveSize) : null, "blockSize", blockSize, "sparse", sparse,
                        "force", force);
            } catch (IllegalArgumentException e) {
                throw new Cli.ExitException(2, e.getMessage());
            }
            Cli.answer(dataDir, req, json, v -> {
                VolumeStatus created = Json.MAPPER.convertValue(v, VolumeStatus.class);
                System.out.println("created volume " + name + ": " + Sizes.format(created.size())
                        + ", block size " + created.blockSize() + ", save volume " + Sizes.format(created.saveSize())
                        + (legs.isEmpty() ? "" : ", mirrored to " + String.join(", ", legs)));
            });
        }
    }

    @Command(name = "list", mixinStandardHelpOptions = true, description = "List volumes.")
    static final class ListVolumes implements Runnable {
        @CommandLine.Mixin
        Cli.Query query;

        @Override
        public void run() {
            query.answer(Cli.request("volume.list"), ListVolumes::print);
        }

        private static void print(JsonNode answer) {
            System.out.printf("%-20s %10s %6s %10s %10s %s%n", "NAME", "SIZE", "BLOCK", "SAVE", "IN USE", "CONNECTIONS");
            for (VolumeStatus v : Json.MAPPER.convertValue(answer, VolumeList.class).volumes()) {
                if (v.reason() != null) {
                    // set aside (server) or damaged (offline): no figures to show, only why
                    System.out.printf("%-20s %s: %s%n", v.name(), v.state().label(), v.reason());
                    continue;
                }
                String inUse = v.bytesInUse() != null ? Sizes.format(v.bytesInUse()) : "-";
                String conns = v.connections() != null ? String.valueOf(v.connections()) : "-";
                System.out.printf("%-20s %10s %6d %10s %10s %s%n", v.name(), Sizes.format(v.size()), v.blockSize(),
                        Sizes.format(v.saveSize()), inUse, conns);
            }
        }
    }

    @Command(name = "delete", mixinStandardHelpOptions = true, description = "Delete a volume and its files.")
    static final class Delete implements Runnable {
        @CommandLine.Mixin
        Cli.DataDirOption dataDir;

        @Parameters(paramLabel = "NAME")
        String name;

        @Option(names = "--force", description = "Delete even while clients are connected (they get ESHUTDOWN), or a volume the server set aside as damaged.")
        boolean force;

        @Override
        public void run() {
            Cli.call(dataDir.resolve(), Cli.request("volume.delete", "name", name, "force", force));
            System.out.println("deleted volume " + name);
        }
    }
}
