package io.snapbd.server.cli;

import picocli.CommandLine;
import picocli.CommandLine.Command;

/** Entry point of {@code bin/snapbd}. */
@Command(name = "snapbd", mixinStandardHelpOptions = true, versionProvider = Main.Version.class,
        description = "User-space block device: an NBD server over preallocated memory-mapped volumes with snapshots.",
        subcommands = {ServeCommand.class, VolumeCommand.class, SnapshotCommand.class, DiffCommand.class, ReplicateCommand.class, LunStateCommand.class, StatusCommand.class, StatsCommand.class, FsckCommand.class,
                AttachCommand.class, DetachCommand.class,
                CommandLine.HelpCommand.class})
public final class Main implements Runnable {

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    public static void main(String[] args) {
        System.exit(run(args));
    }

    public static int run(String... args) {
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
        return cl.execute(args);
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
