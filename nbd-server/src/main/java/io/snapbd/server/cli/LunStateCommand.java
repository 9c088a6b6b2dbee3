package io.snapbd.server.cli;

import com.fasterxml.jackson.databind.JsonNode;
import io.snapbd.server.api.Json;
import io.snapbd.server.api.LunStatus;
import io.snapbd.server.export.ExportName;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

import java.time.Instant;
import java.util.concurrent.Callable;
import java.util.regex.Pattern;

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

    /** enable, disable and get: one request about EXPORT, then its LUN state printed. */
    abstract static class Show implements Runnable {
        @CommandLine.Mixin
        Cli.DataDirOption dataDir;
        @Parameters(paramLabel = "EXPORT")
        String export;
        @Option(names = "--json", description = "Print JSON: export, enabled, counter, timestamp, token.")
        boolean json;

        abstract String command();

        @Override
        public void run() {
            Cli.answer(dataDir, Cli.request(command(), "export", export), json, LunStateCommand::print);
        }
    }

    static void print(JsonNode answer) {
        LunStatus v = Json.MAPPER.convertValue(answer, LunStatus.class);
        long ts = v.timestamp();
        System.out.println(v.export() + ": " + (v.enabled() ? "enabled" : "disabled") + ", counter " + v.counter()
                + ", timestamp " + ts + (ts > 0 ? " (" + Instant.ofEpochSecond(ts / 1_000_000_000L, ts % 1_000_000_000L) + ")" : ""));
        System.out.println("token: " + (v.token() != null ? v.token()
                : "none (tracking is disabled: writes are not counted, so no value taken now can prove anything)"));
    }

    /** A volume token (UUID:COUNTER) or a snapshot token (UUID@SEQUENCE), as {@code get} prints them. */
    static final Pattern TOKEN = Pattern.compile("[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}[:@][0-9]{1,19}");

    @Command(name = "enable", mixinStandardHelpOptions = true, description = "Start counting altering requests; the value is kept.")
    static final class Enable extends Show {
        @Override
        String command() {
            return "lun.enable";
        }
    }

    @Command(name = "disable", mixinStandardHelpOptions = true, description = "Bump the value once (saved values stop matching), then stop counting.")
    static final class Disable extends Show {
        @Override
        String command() {
            return "lun.disable";
        }
    }

    @Command(name = "get", mixinStandardHelpOptions = true, description = "Print the current state (works whether or not tracking is enabled).")
    static final class Get extends Show {
        @Override
        String command() {
            return "lun.get";
        }
    }

    @Command(name = "check", mixinStandardHelpOptions = true,
            description = "Exit 0 if the export is the same one, unchanged, since TOKEN was saved; 3 if it changed, "
                    + "is another volume under the same name, or is not tracking writes.")
    static final class Check implements Callable<Integer> {
        @CommandLine.Mixin
        Cli.DataDirOption dataDir;
        @Parameters(paramLabel = "EXPORT")
        String export;
        @Option(names = "--expect", required = true, paramLabel = "TOKEN",
                description = "The token saved when the backup was taken ('token' of 'lun-state get --json', or of 'snapshot clone --track').")
        String expect;

        @Override
        public Integer call() {
            String saved = expect.strip();
            if (saved.matches("[0-9]+")) {
                throw new Cli.ExitException(2, "--expect " + saved + " is a bare counter, which cannot tell this volume from an "
                        + "earlier one of the same name (delete + create starts again at 0): give the token that "
                        + "'lun-state get " + export + " --json' prints (UUID:COUNTER)");
            }
            if (!TOKEN.matcher(saved).matches()) {
                throw new Cli.ExitException(2, "--expect '" + saved + "' is not a LUN state token (UUID:COUNTER for a volume, "
                        + "UUID@SEQUENCE for a snapshot export)");
            }
            LunStatus v = Json.MAPPER.convertValue(Cli.call(dataDir.resolve(), Cli.request("lun.get", "export", export)),
                    LunStatus.class);
            String now = v.token();
            if (saved.equals(now)) {
                System.out.println(export + ": unchanged (token " + now + ")");
                return 0;
            }
            String why;
            if (now == null) {
                why = ExportName.parse(export).isSnapshot() ? "the snapshot is no longer active" : "LUN state tracking is disabled";
            } else if (!now.substring(0, 36).equals(saved.substring(0, 36))) {
                why = "not the volume the token was saved from (deleted and created again?)";
            } else {
                why = "counter " + v.counter() + ", saved " + saved.substring(37);
            }
            System.out.println(export + ": CHANGED (" + why + "; token now " + now + ", expected " + saved + ")");
            return 3;
        }
    }
}
