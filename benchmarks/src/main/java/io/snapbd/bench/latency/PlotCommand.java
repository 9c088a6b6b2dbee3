package io.snapbd.bench.latency;

import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

import java.io.IOException;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;

/** {@code bench plot -o PNG [LABEL=]FILE.hgrm...}: several runs on one latency-by-percentile plot. */
@Command(name = "plot", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Plots HdrHistogram percentile distributions (.hgrm, values in µs) as latency by percentile,",
                "log axes, several runs on one PNG. Works without a display."})
public final class PlotCommand implements Callable<Integer> {

    @Parameters(arity = "1..*", paramLabel = "[LABEL=]FILE", description = ".hgrm files; the label defaults to the file name")
    List<String> files;

    @Option(names = {"-o", "--output"}, required = true, paramLabel = "PNG", description = "the PNG to write")
    Path output;

    @Option(names = "--title", description = "title above the plot")
    String title;

    @Option(names = "--width", defaultValue = "1200", description = "pixels. Default: ${DEFAULT-VALUE}")
    int width;

    @Option(names = "--height", defaultValue = "700", description = "pixels. Default: ${DEFAULT-VALUE}")
    int height;

    @Override
    public Integer call() {
        List<HgrmFile> series = new ArrayList<>();
        try {
            for (String f : files) {
                int eq = f.indexOf('=');
                Path p = Path.of(eq >= 0 ? f.substring(eq + 1) : f);
                String label = eq >= 0 ? f.substring(0, eq) : p.getFileName().toString().replaceFirst("\\.hgrm$", "");
                series.add(HgrmFile.read(p, label));
            }
            new LatencyPlot(width, height, title).write(series, output);
        } catch (NoSuchFileException e) {
            System.err.println("bench plot: no such file: " + e.getFile());
            return 2;
        } catch (IOException | IllegalArgumentException e) {
            System.err.println("bench plot: " + e.getMessage());
            return 2;
        }
        System.err.println("bench plot: wrote " + output + " (" + series.size() + " series)");
        return 0;
    }
}
