package io.snapbd.server.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

import java.time.Instant;
import java.util.concurrent.Callable;

@Command(name = "lun-state", mixinStandardHelpOptions = true,
        description = "HP LUN state of an export: a counter and timestamp of altering requests, to prove a backup copy was not changed.",
        subcommands = {LunStateCommand.Enable.class, LunStateCommand.Disable.class, LunStateCommand.Get.class, LunStateCommand.Check.class})
final class LunStateCommand implements Runnable {

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Override
    public void run() {
        throw new CommandLine.ParameterException(spec.commandLine(), "missing subcommand: enable, disable, get or check");
    }

    static JsonNode call(Cli.DataDirOption dataDir, String command, String export) {
        ObjectNode r = Cli.request(command);
        r.put("export", export);
        return Cli.call(dataDir.resolve(), r);
    }

    static void print(JsonNode v, boolean json) {
        if (json) {
            Cli.printJson(v);
            return;
        }
        long ts = v.path("timestamp").asLong();
        System.out.println(v.path("export").asText() + ": " + (v.path("enabled").asBoolean() ? "enabled" : "disabled")
                + ", counter " + v.path("counter").asLong() + ", timestamp " + ts
                + (ts > 0 ? " (" + Instant.ofEpochSecond(ts / 1_000_000_000L, ts % 1_000_000_000L) + ")" : ""));
    }

    @Command(name = "enable", mixinStandardHelpOptions = true, description = "Start counting altering requests; the value is kept.")
    static final class Enable implements Runnable {
        @CommandLine.Mixin
        Cli.DataDirOption dataDir;
        @Parameters(paramLabel = "EXPORT")
        String export;
        @Option(names = "--json", description = "Print JSON.")
        boolean json;

        @Override
        public void run() {
            print(call(dataDir, "lun.enable", export), json);
        }
    }

    @Command(name = "disable", mixinStandardHelpOptions = true, description = "Bump the value once (saved values stop matching), then stop counting.")
    static final class Disable implements Runnable {
        @CommandLine.Mixin
        Cli.DataDirOption dataDir;
        @Parameters(paramLabel = "EXPORT")
        String export;
        @Option(names = "--json", description = "Print JSON.")
        boolean json;

        @Override
        public void run() {
            print(call(dataDir, "lun.disable", export), json);
        }
    }

    @Command(name = "get", mixinStandardHelpOptions = true, description = "Print the current state (works whether or not tracking is enabled).")
    static final class Get implements Runnable {
        @CommandLine.Mixin
        Cli.DataDirOption dataDir;
        @Parameters(paramLabel = "EXPORT")
        String export;
        @Option(names = "--json", description = "Print JSON: export, enabled, counter, timestamp.")
        boolean json;

        @Override
        public void run() {
            print(call(dataDir, "lun.get", export), json);
        }
    }

    @Command(name = "check", mixinStandardHelpOptions = true,
            description = "Exit 0 if the counter still equals the saved value, 3 if the export changed since.")
    static final class Check implements Callable<Integer> {
        @CommandLine.Mixin
        Cli.DataDirOption dataDir;
        @Parameters(paramLabel = "EXPORT")
        String export;
        @Option(names = "--expect", required = true, paramLabel = "COUNTER", description = "The counter saved when the backup was taken.")
        long expect;

        @Override
        public Integer call() {
            JsonNode v = LunStateCommand.call(dataDir, "lun.get", export);
            long now = v.path("counter").asLong();
            if (now == expect) {
                System.out.println(export + ": unchanged (counter " + now + ")");
                return 0;
            }
            System.out.println(export + ": CHANGED (counter " + now + ", expected " + expect + ")");
            return 3;
        }
    }
}
