package io.snapbd.bench;

import io.snapbd.bench.fio.FioLogToHgrm;
import io.snapbd.bench.latency.LoadCommand;
import io.snapbd.bench.latency.PlotCommand;
import picocli.CommandLine;
import picocli.CommandLine.Command;

/**
 * {@code benchmarks/bench SUBCOMMAND}: the latency harness and its tools, one jar
 * ({@code benchmarks/target/snapbd-bench.jar}).
 */
@Command(name = "bench", mixinStandardHelpOptions = true,
        description = "snapbd benchmark tools: NBD load generator, latency plots, fio log conversion.",
        subcommands = {CommandLine.HelpCommand.class})
public final class BenchMain {

    public static void main(String[] args) {
        System.exit(commandLine().execute(args));
    }

    /** Registered here so each tool stays a self-contained class. */
    public static CommandLine commandLine() {
        CommandLine cl = new CommandLine(new BenchMain());
        cl.addSubcommand("load", new LoadCommand());
        cl.addSubcommand("plot", new PlotCommand());
        cl.addSubcommand("diff", new DiffBench.Command());
        cl.addSubcommand("fio2hgrm", new FioLogToHgrm());
        cl.addSubcommand("power-loss", new io.snapbd.bench.powerloss.PowerLossCommand());
        cl.addSubcommand("trace-load", new io.snapbd.bench.mirror.TraceLoad());
        cl.addSubcommand("trace-check", new io.snapbd.bench.mirror.TraceCheck());
        return cl;
    }
}
