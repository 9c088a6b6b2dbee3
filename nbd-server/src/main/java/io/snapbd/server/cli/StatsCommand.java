package io.snapbd.server.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.snapbd.server.api.Json;
import io.snapbd.server.api.SaveSpace;
import io.snapbd.server.config.Sizes;
import org.HdrHistogram.Histogram;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import java.util.Locale;
import java.util.zip.DataFormatException;

@Command(name = "stats", mixinStandardHelpOptions = true,
        description = {"Request statistics of an export measured in the running server: per request type the requests, errors, bytes "
                + "and latency percentiles (from reading a request to sending its reply, in microseconds), and the volume's "
                + "copy-on-write copies and save volume use. Without EXPORT: every export.",
                "Counts run since the server started or the last --reset; latencies need latency-histograms = on (the default)."})
final class StatsCommand implements Runnable {

    @CommandLine.Mixin
    Cli.DataDirOption dataDir;

    @Parameters(paramLabel = "EXPORT", arity = "0..1", description = "VOLUME or VOLUME@SNAPSHOT (default: every export).")
    String export;

    @Option(names = "--json", description = "Print JSON (the admin protocol's stats result).")
    boolean json;

    @Option(names = "--reset", description = "Start a new period after printing: the next stats count from now (metrics are not affected).")
    boolean reset;

    @Option(names = "--hgrm", paramLabel = "DIR",
            description = "Also write each request type's latency distribution as DIR/EXPORT.OP.hgrm (HdrHistogram percentile output, microseconds).")
    Path hgrm;

    private static final String[] PERCENTILES = {"p50", "p90", "p99", "p99.9", "p99.99", "max", "mean"};

    @Override
    public void run() {
        JsonNode r = Cli.call(dataDir.resolve(), Cli.request("stats", "export", export, "reset", reset ? true : null,
                "histograms", hgrm != null ? true : null));
        List<JsonNode> list = new ArrayList<>();
        if (export != null) {
            list.add(r);
        } else {
            r.path("exports").forEach(list::add);
        }
        if (hgrm != null) {
            writeHgrm(list);
            for (JsonNode e : list) {       // the encoded histograms are for the files, not for the reader
                e.path("ops").forEach(op -> ((ObjectNode) op).remove("hdrHistogram"));
            }
        }
        if (json) {
            Cli.printJson(r);
            return;
        }
        boolean first = true;
        for (JsonNode e : list) {
            if (!first) {
                System.out.println();
            }
            first = false;
            print(e);
        }
        if (list.isEmpty()) {
            System.out.println("no exports");
        }
    }

    private static void print(JsonNode e) {
        System.out.println(e.path("export").asText() + ": " + e.path("connections").asInt() + " connection(s), since "
                + e.path("since").asText() + String.format(Locale.ROOT, " (%.1f s)", e.path("seconds").asDouble())
                + (e.path("reset").asBoolean() ? ", reset now" : ""));
        boolean histograms = e.path("latencyHistograms").asBoolean();
        StringBuilder head = new StringBuilder(String.format(Locale.ROOT, "  %-13s %10s %7s %11s", "op", "requests", "errors", "bytes"));
        if (histograms) {
            for (String p : PERCENTILES) {
                head.append(String.format(Locale.ROOT, " %9s", p));
            }
            head.append("  (latency in µs)");
        }
        System.out.println(head);
        boolean any = false;
        for (var it = e.path("ops").fields(); it.hasNext(); ) {
            var op = it.next();
            JsonNode o = op.getValue();
            if (o.path("requests").asLong() == 0) {
                continue;
            }
            any = true;
            StringBuilder line = new StringBuilder(String.format(Locale.ROOT, "  %-13s %10d %7d %11s", op.getKey(),
                    o.path("requests").asLong(), o.path("errors").asLong(), Sizes.format(o.path("bytes").asLong())));
            JsonNode l = o.path("latencyMicros");
            if (histograms) {
                for (String p : PERCENTILES) {
                    line.append(l.isObject() ? String.format(Locale.ROOT, " %9s", micros(l.path(p).asDouble())) : String.format(" %9s", "-"));
                }
            }
            System.out.println(line);
        }
        if (!any) {
            System.out.println("  (no requests)");
        }
        if (!histograms) {
            System.out.println("  latency histograms are off (serve --latency-histograms=on, or latency-histograms = on in the config file)");
        }
        if (e.has("copyOnWriteCopies")) {
            System.out.println("  copy-on-write copies: " + e.path("copyOnWriteCopies").asLong() + " (since the volume was opened)");
        }
        if (e.path("saveVolume").isObject()) {
            SaveSpace save = Json.MAPPER.convertValue(e.path("saveVolume"), SaveSpace.class);
            long used = save.bytesUsed();
            long size = save.bytes();
            System.out.println("  save volume: " + Sizes.format(used) + " of " + Sizes.format(size) + " used"
                    + (size > 0 ? String.format(Locale.ROOT, " (%.1f %%)", 100.0 * used / size) : "")
                    + (e.has("snapshotSaveBytesUsed") ? ", " + Sizes.format(e.path("snapshotSaveBytesUsed").asLong()) + " by this snapshot" : ""));
        }
    }

    private static String micros(double us) {
        return us < 100 ? String.format(Locale.ROOT, "%.2f", us) : us < 10_000 ? String.format(Locale.ROOT, "%.1f", us)
                : String.format(Locale.ROOT, "%.0f", us);
    }

    /** DIR/EXPORT.OP.hgrm for each type with latencies: HdrHistogram's percentile distribution in microseconds. */
    private void writeHgrm(List<JsonNode> list) {
        try {
            Files.createDirectories(hgrm);
            for (JsonNode e : list) {
                for (var it = e.path("ops").fields(); it.hasNext(); ) {
                    var op = it.next();
                    String enc = op.getValue().path("hdrHistogram").asText(null);
                    if (enc == null) {
                        continue;
                    }
                    Histogram h = Histogram.decodeFromCompressedByteBuffer(ByteBuffer.wrap(Base64.getDecoder().decode(enc)), 0);
                    Path f = hgrm.resolve(e.path("export").asText() + "." + op.getKey() + ".hgrm");
                    try (PrintStream out = new PrintStream(Files.newOutputStream(f), false, "UTF-8")) {
                        h.outputPercentileDistribution(out, 1000.0);
                    }
                }
            }
        } catch (IOException | DataFormatException | IllegalArgumentException e) {
            throw new Cli.ExitException(1, "--hgrm " + hgrm + ": " + Cli.message(e));
        }
    }
}
