package io.snapbd.server.cli;

import io.snapbd.server.mirror.NbdLegOpener;
import picocli.CommandLine;
import picocli.CommandLine.Command;

import java.nio.file.Path;
import java.util.Objects;

/** Entry point of {@code bin/snapbd}. */
@Command(name = "snapbd", mixinStandardHelpOptions = true, versionProvider = Main.Version.class,
        description = "User-space block device: an NBD server over preallocated memory-mapped volumes with snapshots.",
        subcommands = {ServeCommand.class, VolumeCommand.class, SnapshotCommand.class, DiffCommand.class, ReplicateCommand.class, LunStateCommand.class, StatusCommand.class, StatsCommand.class, FsckCommand.class, MirrorCommand.class,
                AttachCommand.class, DetachCommand.class, RestartCommand.class,
                CommandLine.HelpCommand.class})
public final class Main implements Runnable {

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    /** Global options: given before the command, they apply to it as if given after it (see {@link #applyGlobals}). */
    static final String[] GLOBAL_OPTIONS = {"--data-dir", "--json"};

    @CommandLine.Option(names = "--data-dir", paramLabel = "DIR",
            description = "Data directory of the command that follows (the same as giving it after the command).")
    Path dataDir;

    @CommandLine.Option(names = "--json", description = "JSON output of the command that follows, for commands that have one.")
    boolean json;

    public static void main(String[] args) {
        System.exit(run(args));
    }

    public static int run(String... args) {
        NbdLegOpener.install();         // commands that open volumes offline (create, fsck, ...) accept NBD legs too
        CommandLine cl = new CommandLine(new Main());
        cl.setExecutionExceptionHandler((ex, cmd, parsed) -> {
            cmd.getErr().println("snapbd: error: " + Cli.message(ex));
            return ex instanceof Cli.ExitException ee ? ee.code : 1;
        });
        cl.setParameterExceptionHandler((ex, a) -> {
            CommandLine cmd = ex.getCommandLine();
            cmd.getErr().println("snapbd: " + ex.getMessage());
            cmd.getErr().println("Try '" + cmd.getCommandSpec().qualifiedName() + " --help'.");
            return 2;
        });
        cl.setExecutionStrategy(parsed -> {
            applyGlobals(parsed);
            return new CommandLine.RunLast().execute(parsed);
        });
        return cl.execute(args);
    }

    /**
     * Hands the global options given before the command to the command that runs, so that
     * {@code snapbd --data-dir D volume list} is {@code snapbd volume list --data-dir D}. A global option the
     * command does not take, or one given in both places with different values, is a usage error.
     */
    static void applyGlobals(CommandLine.ParseResult root) {
        CommandLine.ParseResult leaf = root;
        while (leaf.hasSubcommand()) {
            leaf = leaf.subcommand();
        }
        if (leaf == root || leaf.commandSpec().userObject() instanceof CommandLine.HelpCommand) {
            return;
        }
        for (CommandLine.ParseResult p = root; p != null; p = p.hasSubcommand() ? p.subcommand() : null) {
            if (p.isUsageHelpRequested() || p.isVersionHelpRequested()) {
                return;             // the help printed is all that happens
            }
        }
        CommandLine cmd = leaf.commandSpec().commandLine();
        for (String name : GLOBAL_OPTIONS) {
            if (!root.hasMatchedOption(name)) {
                continue;
            }
            Object value = root.matchedOption(name).getValue();
            CommandLine.Model.OptionSpec own = leaf.commandSpec().findOption(name);
            if (own == null) {
                throw new CommandLine.ParameterException(cmd, name + " does not apply to '"
                        + leaf.commandSpec().qualifiedName() + "'");
            }
            if (leaf.hasMatchedOption(name)) {
                Object mine = leaf.matchedOption(name).getValue();
                if (!Objects.equals(mine, value)) {
                    throw new CommandLine.ParameterException(cmd, name + " given twice with different values ("
                            + value + " before the command, " + mine + " after it)");
                }
                continue;
            }
            own.setValue(value);
        }
    }

    @Override
    public void run() {
        spec.commandLine().usage(System.out);
    }

    static final class Version implements CommandLine.IVersionProvider {
        @Override
        public String[] getVersion() {
            String v = Main.class.getPackage().getImplementationVersion();
            return new String[]{"snapbd " + (v == null ? "development build" : v),
                    "Java " + System.getProperty("java.version") + " (" + System.getProperty("java.vm.name") + ")"};
        }
    }
}
