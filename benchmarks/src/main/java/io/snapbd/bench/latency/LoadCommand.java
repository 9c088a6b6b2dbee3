package io.snapbd.bench.latency;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import io.snapbd.server.client.NbdUri;
import io.snapbd.server.config.Sizes;
import org.HdrHistogram.Histogram;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;

/**
 * {@code bench load URI}: runs a workload against any NBD server and reports its latency distribution.
 */
@Command(name = "load", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Runs a workload against an NBD export and records the latency of every request (HdrHistogram).",
                "Closed loop by default (--depth requests in flight per connection); with --rate, open loop at a fixed",
                "rate, latency measured from when each request was due (coordinated omission corrected).",
                "Writes LABEL-write.hgrm / LABEL-read.hgrm (µs) and LABEL.json into --out; prints a summary table."},
        exitCodeListHeading = "%nExit codes:%n",
        exitCodeList = {"0:the run completed without errors", "1:some requests failed or a connection broke",
                "2:bad arguments or the export cannot take the workload"})
public final class LoadCommand implements Callable<Integer> {

    @Parameters(index = "0", paramLabel = "URI", description = "NBD URI: nbd://HOST[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=PATH; "
            + "TLS: nbds://HOST[:PORT]/EXPORT?tls-certificates=DIR (libnbd's parameters, also tls-verify-peer=false)")
    String uri;

    @Option(names = {"-w", "--workload"}, defaultValue = "randwrite", paramLabel = "NAME",
            description = "randwrite (4k random writes), randrw (4k, 70%% reads), seqwrite (64k sequential). Default: ${DEFAULT-VALUE}")
    String workload;

    @Option(names = "--bs", paramLabel = "SIZE", description = "request size (default: the workload's, 4k or 64k)")
    String blockSize;

    @Option(names = {"-c", "--connections"}, defaultValue = "1", description = "connections. Default: ${DEFAULT-VALUE}")
    int connections;

    @Option(names = {"-d", "--depth"}, defaultValue = "32", description = "closed loop: requests in flight per connection. Default: ${DEFAULT-VALUE}")
    int depth;

    @Option(names = {"-r", "--rate"}, paramLabel = "IOPS", description = "open loop: requests per second over all connections")
    double rate;

    @Option(names = {"-t", "--duration"}, defaultValue = "30", paramLabel = "SECONDS", description = "measured seconds. Default: ${DEFAULT-VALUE}")
    double duration;

    @Option(names = "--warmup", defaultValue = "5", paramLabel = "SECONDS", description = "seconds run before measuring, latencies dropped. Default: ${DEFAULT-VALUE}")
    double warmup;

    @Option(names = "--ops", paramLabel = "N", description = "stop after N requests (all measured, no warm-up unless given) instead of after --duration")
    long ops;

    @Option(names = "--offset", defaultValue = "0", paramLabel = "SIZE", description = "start of the range used. Default: 0")
    String offset;

    @Option(names = "--size", paramLabel = "SIZE", description = "bytes of the range used (default: to the end of the export)")
    String size;

    @Option(names = "--warmup-offset", defaultValue = "0", paramLabel = "SIZE",
            description = "with --warmup-size: start of the range the warm-up writes to instead of the measured one. Default: 0")
    String warmupOffset;

    @Option(names = "--warmup-size", paramLabel = "SIZE",
            description = {"bytes of a separate warm-up range (random offsets; its requests do not count against --ops).",
                    "The warm-up then ends quiet: nothing in flight while --at-measure-start runs. For count-bound",
                    "first-write rows: the client warms up without using up the blocks to be measured"})
    String warmupSize;

    @Option(names = "--seed", defaultValue = "1", description = "seed of offsets and data. Default: ${DEFAULT-VALUE}")
    long seed;

    @Option(names = {"-l", "--label"}, paramLabel = "NAME", description = "name of the run in files, tables and plots (default: the workload)")
    String label;

    @Option(names = {"-o", "--out"}, paramLabel = "DIR", description = "write LABEL-*.hgrm and LABEL.json here")
    Path out;

    @Option(names = "--at-measure-start", paramLabel = "COMMAND",
            description = "shell command run when the warm-up ends, load still running (e.g. reset the server's statistics); measuring starts when it returns")
    String atMeasureStart;

    @Option(names = "--json", description = "print the result as JSON on stdout instead of the table")
    boolean json;

    @Override
    public Integer call() throws Exception {
        LoadRun.Settings settings;
        try {
            settings = settings();
        } catch (IllegalArgumentException e) {
            System.err.println("bench load: " + e.getMessage());
            return 2;
        }
        LoadRun.Result result;
        try {
            result = new LoadRun(settings, System.err, System.console() != null).run();
        } catch (IllegalArgumentException e) {
            System.err.println("bench load: " + e.getMessage());
            return 2;
        } catch (IOException e) {
            System.err.println("bench load: " + e.getMessage());
            return 1;
        }
        String name = label != null ? label : settings.workload().label;
        Map<String, Object> doc = document(name, result);
        if (out != null) {
            Files.createDirectories(out);
            writeHgrm(out.resolve(name + "-write.hgrm"), result.write());
            writeHgrm(out.resolve(name + "-read.hgrm"), result.read());
            if (settings.openLoop()) {
                writeHgrm(out.resolve(name + "-write-service.hgrm"), result.writeService());
                writeHgrm(out.resolve(name + "-read-service.hgrm"), result.readService());
            }
            mapper().writeValue(out.resolve(name + ".json").toFile(), doc);
        }
        if (json) {
            System.out.println(mapper().writeValueAsString(doc));
        } else {
            printTable(System.out, name, result);
        }
        return result.errors() > 0 ? 1 : 0;
    }

    private LoadRun.Settings settings() {
        Workload w = Workload.parse(workload);
        int bs = blockSize == null ? w.defaultBlockSize : Math.toIntExact(Sizes.parse(blockSize));
        if (bs < 512 || bs > 32 << 20 || Integer.bitCount(bs) != 1) {
            throw new IllegalArgumentException("--bs must be a power of two from 512 bytes to 32 MiB: " + blockSize);
        }
        if (connections < 1 || connections > 1024) {
            throw new IllegalArgumentException("--connections must be 1..1024: " + connections);
        }
        if (depth < 1 || depth > 4096) {
            throw new IllegalArgumentException("--depth must be 1..4096: " + depth);
        }
        if (rate < 0 || Double.isNaN(rate) || rate > 10_000_000) {
            throw new IllegalArgumentException("--rate must be a positive number of requests per second: " + rate);
        }
        if (!(duration > 0) || !(warmup >= 0)) {
            throw new IllegalArgumentException("--duration must be > 0 and --warmup >= 0 seconds");
        }
        if (ops < 0) {
            throw new IllegalArgumentException("--ops must be positive: " + ops);
        }
        NbdUri parsed = NbdUri.parse(uri);
        long warm = ops > 0 && !warmupGiven() ? 0 : (long) (warmup * 1e9);
        return new LoadRun.Settings(parsed, w, bs, connections, depth, rate, Sizes.parse(offset),
                size == null ? 0 : Sizes.parse(size), Sizes.parse(warmupOffset), warmupSize == null ? 0 : Sizes.parse(warmupSize),
                warm, (long) (duration * 1e9), ops, seed, atMeasureStart);
    }

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    private boolean warmupGiven() {
        return spec != null && spec.commandLine() != null && spec.commandLine().getParseResult().hasMatchedOption("--warmup");
    }

    static ObjectMapper mapper() {
        return new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);
    }

    private Map<String, Object> document(String name, LoadRun.Result r) {
        LoadRun.Settings s = r.settings();
        Map<String, Object> doc = new LinkedHashMap<>();
        doc.put("label", name);
        doc.put("uri", uri);
        doc.put("workload", s.workload().label);
        doc.put("block_size", s.blockSize());
        doc.put("connections", s.connections());
        doc.put("mode", s.openLoop() ? "open" : "closed");
        if (s.openLoop()) {
            doc.put("rate", s.rate());
        } else {
            doc.put("depth", s.depth());
        }
        doc.put("warmup_seconds", s.warmupNanos() / 1e9);
        if (s.warmBytes() > 0) {
            doc.put("warmup_range", Map.of("offset", s.warmOffset(), "bytes", s.warmBytes()));
        }
        doc.put("export_size", r.exportSize());
        doc.put("seconds", r.seconds());
        doc.put("errors", r.errors());
        doc.put("write_repeats", r.firstWriteRepeats());
        List<LatencySummary> summaries = r.summaries();
        doc.put("results", summaries);
        if (s.openLoop()) {
            doc.put("service", List.of(LatencySummary.of("write", r.writeService(), r.seconds()),
                    LatencySummary.of("read", r.readService(), r.seconds())).stream().filter(x -> x.requests() > 0).toList());
        }
        return doc;
    }

    static void writeHgrm(Path file, Histogram h) throws IOException {
        if (h.getTotalCount() == 0) {
            Files.deleteIfExists(file);
            return;
        }
        try (PrintStream p = new PrintStream(Files.newOutputStream(file), false, StandardCharsets.UTF_8)) {
            h.outputPercentileDistribution(p, 1000.0); // nanoseconds recorded, microseconds written
        }
    }

    private static void printTable(PrintStream o, String name, LoadRun.Result r) {
        LoadRun.Settings s = r.settings();
        o.printf(Locale.ROOT, "%s: %s bs=%d, %d connection(s), %s, %.1f s measured%n", name, s.workload().label,
                s.blockSize(), s.connections(), s.openLoop() ? String.format(Locale.ROOT, "open loop at %.0f IOPS", s.rate())
                        : "closed loop, depth " + s.depth(), r.seconds());
        o.printf(Locale.ROOT, "%-6s %10s %10s %10s %10s %10s %10s %10s%n", "op", "IOPS", "p50 µs", "p99 µs", "p99.9 µs",
                "p99.99 µs", "max µs", "requests");
        for (LatencySummary x : r.summaries()) {
            o.printf(Locale.ROOT, "%-6s %,10.0f %,10.1f %,10.1f %,10.1f %,10.1f %,10.1f %,10d%n", x.op(), x.iops(), x.p50Us(),
                    x.p99Us(), x.p999Us(), x.p9999Us(), x.maxUs(), x.requests());
        }
        if (r.errors() > 0) {
            o.println("errors: " + r.errors());
        }
        if (r.firstWriteRepeats() > 0) {
            o.println("note: more writes than blocks in the range: " + r.firstWriteRepeats()
                    + " writes (warm-up included) hit a block already written in this run");
        }
    }
}
