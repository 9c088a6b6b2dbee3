package io.snapbd.bench.fio;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.HdrHistogram.Histogram;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.OutputStream;
import java.io.PrintStream;
import java.io.PrintWriter;
import java.nio.charset.MalformedInputException;
import java.nio.charset.StandardCharsets;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.Callable;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * {@code bench fio2hgrm}: converts fio per-I/O latency logs ({@code write_lat_log} with
 * {@code log_avg_msec=0}) into HdrHistogram percentile distributions ({@code .hgrm}, values in µs), one per
 * direction, so that fio runs can be plotted next to the Java harness's histograms.
 *
 * <p>fio 3.x log lines are {@code time(ms), value(ns), ddir, bs[, offset][, prio]}: ddir 0 is read, 1 write,
 * 2 trim; {@code offset} is there with {@code log_offset=1}; {@code prio} (decimal, or hex with
 * {@code log_prio=1}) since fio 3.2x. Only the first four columns are used. A block size of 0 marks a
 * window average ({@code log_avg_msec > 0}), which is refused: percentiles of averages are not latencies.
 *
 * <p>A LOG argument is a file, or a prefix that fio's per-job naming completes: {@code out/job_lat} stands
 * for {@code out/job_lat.log} (with {@code per_job_logs=0}) and {@code out/job_lat.1.log},
 * {@code out/job_lat.2.log}, … (one per job with {@code numjobs > 1}). All files are merged.
 */
@Command(name = "fio2hgrm", mixinStandardHelpOptions = true, sortOptions = false,
        description = "Converts fio latency logs (write_lat_log, log_avg_msec=0) into one .hgrm per direction"
                + " (LABEL-read.hgrm, LABEL-write.hgrm, LABEL-trim.hgrm; values in µs) and prints count, p50, p99,"
                + " p99.9, p99.99 and max per direction. LOG is a file or a prefix such as out/job_lat, which"
                + " stands for out/job_lat.log or out/job_lat.1.log, out/job_lat.2.log, ... (all merged)."
                + "%nExit status: 0; 2 for bad input (missing, empty or malformed logs); 1 when writing fails.")
public final class FioLogToHgrm implements Callable<Integer> {

    /** Names of fio's {@code ddir} values 0, 1, 2. */
    static final String[] DIRECTIONS = {"read", "write", "trim"};

    /** Unit of the value column: fio 3.x logs nanoseconds (fio 2.x logged microseconds). */
    public enum Unit {
        ns(1), us(1000);

        final long toNanos;

        Unit(long toNanos) {
            this.toNanos = toNanos;
        }
    }

    @Option(names = "--out", paramLabel = "DIR", description = "Directory for the .hgrm files (created; default: .).")
    Path out = Path.of(".");

    @Option(names = "--label", paramLabel = "NAME",
            description = "File name prefix of the .hgrm files (default: the first log's job name, e.g. job for job_lat.1.log).")
    String label;

    @Option(names = "--skip-ms", paramLabel = "N",
            description = "Drop samples logged in the first N ms of each job (warm-up; the time column restarts at 0 after ramp_time). Default: 0.")
    long skipMs;

    @Option(names = "--unit", paramLabel = "ns|us",
            description = "Unit of the value column. fio 3.x always logs ns (it has no option to change it); us is for fio 2.x logs. Default: ns.")
    Unit unit = Unit.ns;

    @Option(names = "--json", description = "Print the summary as JSON on stdout instead of text.")
    boolean json;

    @Parameters(arity = "1..*", paramLabel = "LOG", description = "fio latency log files or prefixes (merged).")
    List<String> logs;

    @Spec
    CommandSpec spec;

    /** Bad input: a message of the form {@code file:line: what is wrong}, exit status 2. */
    public static final class BadInputException extends Exception {
        public BadInputException(String message) {
            super(message);
        }
    }

    /** Histograms (ns) per direction, from one or more merged logs. */
    public static final class Result {
        public final Histogram[] byDirection = new Histogram[DIRECTIONS.length];
        public final List<Path> files = new ArrayList<>();
        public long samples;
        public long skipped;

        Result() {
            for (int i = 0; i < byDirection.length; i++) {
                byDirection[i] = new Histogram(3); // auto-resizing, 3 significant digits
            }
        }

        public Histogram direction(String name) {
            for (int i = 0; i < DIRECTIONS.length; i++) {
                if (DIRECTIONS[i].equals(name)) {
                    return byDirection[i];
                }
            }
            throw new IllegalArgumentException(name);
        }
    }

    @Override
    public Integer call() {
        PrintWriter err = spec.commandLine().getErr();
        PrintWriter stdout = spec.commandLine().getOut();
        Result result;
        String name;
        try {
            if (skipMs < 0) {
                throw new BadInputException("--skip-ms must be >= 0, not " + skipMs);
            }
            List<Path> files = resolve(logs);
            name = label != null ? label : defaultLabel(files.get(0));
            if (name.isEmpty() || name.contains("/")) {
                throw new BadInputException("--label must be a non-empty file name prefix, not '" + name + "'");
            }
            result = parse(files, skipMs, unit);
        } catch (BadInputException e) {
            err.println("fio2hgrm: " + e.getMessage());
            err.flush();
            return 2;
        } catch (IOException e) {
            err.println("fio2hgrm: " + e);
            err.flush();
            return 2;
        }
        Map<String, Path> written = new LinkedHashMap<>();
        try {
            Files.createDirectories(out);
            for (int d = 0; d < DIRECTIONS.length; d++) {
                Histogram h = result.byDirection[d];
                if (h.getTotalCount() == 0) {
                    continue;
                }
                Path file = out.resolve(name + "-" + DIRECTIONS[d] + ".hgrm");
                writeHgrm(h, file);
                written.put(DIRECTIONS[d], file);
            }
        } catch (IOException e) {
            err.println("fio2hgrm: cannot write to " + out + ": " + e);
            err.flush();
            return 1;
        }
        if (unit == Unit.ns) {
            Histogram all = new Histogram(3);
            for (Histogram h : result.byDirection) {
                all.add(h);
            }
            if (all.getValueAtPercentile(50) < 1000) {
                err.println("fio2hgrm: warning: the median latency is under 1 µs; if these logs come from fio 2.x"
                        + " (values in µs), pass --unit us");
            }
        }
        if (result.skipped > 0) {
            err.printf("fio2hgrm: skipped %d sample(s) logged in the first %d ms%n", result.skipped, skipMs);
        }
        err.flush();
        if (json) {
            stdout.println(toJson(name, result, written));
        } else {
            for (Map.Entry<String, Path> e : written.entrySet()) {
                stdout.println(summaryLine(name, e.getKey(), result.direction(e.getKey()), e.getValue()));
            }
        }
        stdout.flush();
        return 0;
    }

    // ---- input ---------------------------------------------------------------------------------------------

    private static final Pattern LOG_NAME = Pattern.compile("(.*?)(_(?:c|s)?lat)?(?:\\.(\\d+))?\\.log");
    private static final Pattern KIND = Pattern.compile(".*_((?:c|s)?lat)(?:\\.\\d+)?\\.log");

    /**
     * Expands the LOG arguments into files: an existing regular file stands for itself, anything else is a
     * prefix completed by fio's naming ({@code PREFIX.log}, {@code PREFIX.N.log}, sorted by N). Refuses
     * arguments that match nothing, and a mix of lat, clat and slat logs (which would count I/Os twice).
     */
    public static List<Path> resolve(List<String> args) throws BadInputException, IOException {
        Set<Path> files = new LinkedHashSet<>();
        for (String arg : args) {
            Path p = Path.of(arg);
            if (Files.isRegularFile(p)) {
                files.add(p.toRealPath());
                continue;
            }
            if (Files.isDirectory(p)) {
                throw new BadInputException(arg + ": is a directory; pass the log files, or a prefix such as "
                        + p.resolve("JOB_lat"));
            }
            Path dir = p.toAbsolutePath().getParent();
            String base = p.getFileName() == null ? "" : p.getFileName().toString();
            TreeMap<Long, Path> matches = new TreeMap<>();
            if (dir != null && Files.isDirectory(dir) && !base.isEmpty()) {
                Pattern perJob = Pattern.compile(Pattern.quote(base) + "(?:\\.(\\d{1,9}))?\\.log");
                try (DirectoryStream<Path> ds = Files.newDirectoryStream(dir)) {
                    for (Path f : ds) {
                        Matcher m = perJob.matcher(f.getFileName().toString());
                        if (m.matches() && Files.isRegularFile(f)) {
                            matches.put(m.group(1) == null ? 0L : Long.parseLong(m.group(1)), f.toRealPath());
                        }
                    }
                }
            }
            if (matches.isEmpty()) {
                throw new BadInputException(arg + ": no such file (nor " + arg + ".log or " + arg + ".N.log)");
            }
            files.addAll(matches.values());
        }
        Set<String> kinds = new LinkedHashSet<>();
        for (Path f : files) {
            Matcher m = KIND.matcher(f.getFileName().toString());
            if (m.matches()) {
                kinds.add(m.group(1));
            }
        }
        if (kinds.size() > 1) {
            throw new BadInputException("the logs are of different kinds (" + String.join(", ", kinds)
                    + "); convert one kind at a time: every I/O is in each kind's log");
        }
        return new ArrayList<>(files);
    }

    /** {@code job} for {@code job_lat.1.log}, {@code job_clat.log} or {@code job.log}. */
    static String defaultLabel(Path file) {
        String n = file.getFileName().toString();
        Matcher m = LOG_NAME.matcher(n);
        return m.matches() && !m.group(1).isEmpty() ? m.group(1) : n;
    }

    /** Reads and merges the logs into histograms of nanoseconds per direction. */
    public static Result parse(List<Path> files, long skipMs, Unit unit) throws BadInputException, IOException {
        Result r = new Result();
        for (Path f : files) {
            long before = r.samples + r.skipped;
            try (BufferedReader in = Files.newBufferedReader(f, StandardCharsets.UTF_8)) {
                parse(in, f.toString(), skipMs, unit, r);
            } catch (NoSuchFileException e) {
                throw new BadInputException(f + ": no such file");
            } catch (MalformedInputException e) {
                throw new BadInputException(f + ": not a text file (is it a compressed log? fio's"
                        + " log_compression/log_store_compressed is not supported)");
            }
            if (r.samples + r.skipped == before) {
                throw new BadInputException(f + ": empty log (no samples); did the fio job fail or not run?");
            }
            r.files.add(f);
        }
        if (r.samples == 0) {
            throw new BadInputException("all " + r.skipped + " samples were logged in the first " + skipMs
                    + " ms (--skip-ms); nothing left");
        }
        return r;
    }

    /** Parses one log ({@code source} names it in errors) into {@code r}. */
    static void parse(BufferedReader in, String source, long skipMs, Unit unit, Result r)
            throws BadInputException, IOException {
        long[] fields = new long[4];
        String line;
        long lineNo = 0;
        while ((line = in.readLine()) != null) {
            lineNo++;
            if (line.isBlank()) {
                continue;
            }
            String problem = parseLine(line, fields);
            if (problem != null) {
                throw new BadInputException(source + ":" + lineNo + ": " + problem + ": '" + abbreviate(line) + "'");
            }
            long timeMs = fields[0];
            long value = fields[1];
            int ddir = (int) fields[2];
            if (timeMs < skipMs) {
                r.skipped++;
                continue;
            }
            if (value > Long.MAX_VALUE / unit.toNanos) {
                throw new BadInputException(source + ":" + lineNo + ": latency " + value + " " + unit + " is too large");
            }
            r.byDirection[ddir].recordValue(value * unit.toNanos);
            r.samples++;
        }
    }

    /**
     * Parses {@code time, value, ddir, bs[, offset][, prio]} into {@code fields} (time, value, ddir, bs);
     * returns what is wrong, or null. Hand-written: logs have millions of lines.
     */
    static String parseLine(String line, long[] fields) {
        int n = line.length();
        int pos = 0;
        int column = 0;
        while (pos <= n) {
            int comma = line.indexOf(',', pos);
            int end = comma < 0 ? n : comma;
            if (column < 4) {
                long v = parseLong(line, pos, end);
                if (v < 0) {
                    return "column " + (column + 1) + " (" + COLUMN_NAMES[column] + ") is "
                            + (v == -1 ? "not a non-negative integer" : "too large");
                }
                fields[column] = v;
            } else if (column < 6) {
                // offset (decimal) and prio (decimal, or 0x... with log_prio=1): not used, only checked present
                if (line.substring(pos, end).isBlank()) {
                    return "column " + (column + 1) + " is empty";
                }
            }
            column++;
            if (comma < 0) {
                break;
            }
            pos = comma + 1;
        }
        if (column < 4) {
            return "expected at least 4 comma-separated columns (time ms, latency, ddir, block size), found " + column;
        }
        if (column > 6) {
            return "expected at most 6 columns (time, latency, ddir, bs, offset, prio), found " + column
                    + " (histogram logs from write_hist_log are not per-I/O latency logs)";
        }
        if (fields[2] >= DIRECTIONS.length) {
            return "ddir " + fields[2] + " is not 0 (read), 1 (write) or 2 (trim)";
        }
        if (fields[3] == 0) {
            return "block size 0 marks a window average: the log was written with log_avg_msec > 0;"
                    + " rerun fio with log_avg_msec=0 so every I/O is logged";
        }
        return null;
    }

    private static final String[] COLUMN_NAMES = {"time ms", "latency", "ddir", "block size"};

    /** Decimal digits between {@code from} and {@code to}, spaces around allowed; -1 if malformed, -2 on overflow. */
    private static long parseLong(String s, int from, int to) {
        while (from < to && (s.charAt(from) == ' ' || s.charAt(from) == '\t')) {
            from++;
        }
        while (to > from && (s.charAt(to - 1) == ' ' || s.charAt(to - 1) == '\t' || s.charAt(to - 1) == '\r')) {
            to--;
        }
        if (from == to) {
            return -1;
        }
        long v = 0;
        for (int i = from; i < to; i++) {
            char c = s.charAt(i);
            if (c < '0' || c > '9') {
                return -1;
            }
            if (v > (Long.MAX_VALUE - (c - '0')) / 10) {
                return -2;
            }
            v = v * 10 + (c - '0');
        }
        return v;
    }

    private static String abbreviate(String line) {
        return line.length() <= 120 ? line : line.substring(0, 117) + "...";
    }

    // ---- output --------------------------------------------------------------------------------------------

    /** The harness's .hgrm convention: recorded in ns, printed in µs (scaling ratio 1000). */
    public static void writeHgrm(Histogram h, Path file) throws IOException {
        try (OutputStream os = Files.newOutputStream(file);
             PrintStream ps = new PrintStream(os, false, StandardCharsets.UTF_8)) {
            h.outputPercentileDistribution(ps, 1000.0);
            ps.flush();
            if (ps.checkError()) {
                throw new IOException("write failed: " + file);
            }
        }
    }

    static double us(Histogram h, double percentile) {
        return h.getValueAtPercentile(percentile) / 1000.0;
    }

    static String summaryLine(String label, String direction, Histogram h, Path file) {
        return String.format(Locale.ROOT,
                "%s %s: count %d, p50 %.1f µs, p99 %.1f µs, p99.9 %.1f µs, p99.99 %.1f µs, max %.1f µs -> %s",
                label, direction, h.getTotalCount(), us(h, 50), us(h, 99), us(h, 99.9), us(h, 99.99),
                h.getMaxValue() / 1000.0, file);
    }

    static String toJson(String label, Result r, Map<String, Path> written) {
        ObjectMapper mapper = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);
        ObjectNode root = mapper.createObjectNode();
        root.put("label", label);
        root.put("unit", "us");
        ArrayNode files = root.putArray("logs");
        r.files.forEach(f -> files.add(f.toString()));
        root.put("skipped", r.skipped);
        ObjectNode dirs = root.putObject("directions");
        for (Map.Entry<String, Path> e : written.entrySet()) {
            Histogram h = r.direction(e.getKey());
            ObjectNode d = dirs.putObject(e.getKey());
            d.put("count", h.getTotalCount());
            d.put("p50", us(h, 50));
            d.put("p99", us(h, 99));
            d.put("p99.9", us(h, 99.9));
            d.put("p99.99", us(h, 99.99));
            d.put("max", h.getMaxValue() / 1000.0);
            d.put("mean", h.getMean() / 1000.0);
            d.put("hgrm", e.getValue().toString());
        }
        try {
            return mapper.writeValueAsString(root);
        } catch (IOException e) {
            throw new IllegalStateException(e);
        }
    }

    /** Standalone entry point (the shaded jar's is {@code BenchMain}). */
    public static void main(String[] args) {
        System.exit(new CommandLine(new FioLogToHgrm()).execute(args));
    }
}
