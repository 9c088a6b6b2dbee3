package io.snapbd.bench.latency;

import io.snapbd.server.client.NbdClient;
import io.snapbd.server.client.NbdException;
import io.snapbd.server.client.NbdUri;
import org.HdrHistogram.Histogram;

import java.io.IOException;
import java.io.PrintStream;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * One load run: N connections to one export, a warm-up whose latencies are dropped, then the measured
 * window. Ends after the duration, or once every connection sent its share of {@code ops}.
 */
final class LoadRun {

    /** What to run; all sizes in bytes, times in nanoseconds. */
    record Settings(NbdUri uri, Workload workload, int blockSize, int connections, int depth, double rate,
                    long rangeOffset, long rangeBytes, long warmOffset, long warmBytes, long warmupNanos,
                    long durationNanos, long ops, long seed, String atMeasureStart) {
        boolean openLoop() {
            return rate > 0;
        }
    }

    /** Histograms in nanoseconds; {@code seconds} is the measured window. */
    record Result(Settings settings, long exportSize, double seconds, Histogram write, Histogram read,
                  Histogram writeService, Histogram readService, long errors, long firstWriteRepeats) {

        List<LatencySummary> summaries() {
            List<LatencySummary> s = new ArrayList<>();
            if (write.getTotalCount() > 0) {
                s.add(LatencySummary.of("write", write, seconds));
            }
            if (read.getTotalCount() > 0) {
                s.add(LatencySummary.of("read", read, seconds));
            }
            return s;
        }
    }

    /** Open loop: requests allowed in flight per connection before sending is held up (and charged). */
    static final int OPEN_LOOP_SLOTS = 1024;

    private final Settings settings;
    private final PrintStream progress;
    private final boolean terminal;

    LoadRun(Settings settings, PrintStream progress, boolean terminal) {
        this.settings = settings;
        this.progress = progress;
        this.terminal = terminal;
    }

    Result run() throws IOException, InterruptedException {
        Settings s = settings;
        int slots = s.openLoop() ? OPEN_LOOP_SLOTS : s.depth();
        NbdClient.Options options = NbdClient.Options.defaults().withMaxInFlight(slots);
        List<NbdClient> clients = new ArrayList<>();
        List<ConnectionWorker> workers = new ArrayList<>();
        try {
            for (int i = 0; i < s.connections(); i++) {
                clients.add(NbdClient.connect(s.uri(), options));
            }
            NbdClient first = clients.get(0);
            long size = first.size();
            if (s.workload().writes() && first.isReadOnly()) {
                throw new IllegalArgumentException(s.uri() + " is read-only; workload " + s.workload().label + " writes");
            }
            long rangeBytes = s.rangeBytes() > 0 ? s.rangeBytes() : size - s.rangeOffset();
            if (s.rangeOffset() < 0 || s.rangeOffset() % s.blockSize() != 0 || rangeBytes < s.blockSize()
                    || s.rangeOffset() + rangeBytes > size) {
                throw new IllegalArgumentException("range " + s.rangeOffset() + "+" + rangeBytes + " does not fit the export ("
                        + size + " bytes) in whole " + s.blockSize() + "-byte blocks");
            }
            if (s.warmBytes() > 0 && (s.warmOffset() < 0 || s.warmOffset() % s.blockSize() != 0 || s.warmBytes() < s.blockSize()
                    || s.warmOffset() + s.warmBytes() > size)) {
                throw new IllegalArgumentException("warm-up range " + s.warmOffset() + "+" + s.warmBytes() + " does not fit the export ("
                        + size + " bytes) in whole " + s.blockSize() + "-byte blocks");
            }
            long interval = s.openLoop() ? Math.max(1, Math.round(1e9 * s.connections() / s.rate())) : 0;
            for (int i = 0; i < s.connections(); i++) {
                // Count-bound runs: the connections share the count exactly.
                long share = s.ops() / s.connections() + (i < s.ops() % s.connections() ? 1 : 0);
                if (s.ops() > 0 && share == 0) {
                    throw new IllegalArgumentException("--ops " + s.ops() + " is less than one request per connection");
                }
                workers.add(new ConnectionWorker(clients.get(i), s.workload(), s.blockSize(), s.rangeOffset(),
                        rangeBytes, s.warmOffset(), s.warmupNanos() > 0 ? s.warmBytes() : 0, i, s.connections(), slots,
                        interval, share, s.seed()));
            }
            long start = System.nanoTime();
            for (int i = 0; i < workers.size(); i++) {
                // Open loop: stagger the connections' schedules so the offered load is even.
                workers.get(i).start(start + interval * i / Math.max(1, workers.size()), "load-" + i);
            }
            Histogram write = histogram(), read = histogram(), writeSvc = histogram(), readSvc = histogram();
            long measureFrom = start;
            if (s.warmupNanos() > 0) {
                watch(workers, start, start + s.warmupNanos(), "warm-up");
                boolean ownRange = s.warmBytes() > 0;
                if (ownRange) {
                    // A warm-up with its own range ends quiet: nothing in flight while the hook runs (it may
                    // take a snapshot, say), and the measured requests start after it.
                    for (ConnectionWorker w : workers) {
                        w.pause();
                    }
                    awaitQuiet(workers);
                }
                runHook(s.atMeasureStart());
                for (ConnectionWorker w : workers) {
                    w.discard();
                }
                measureFrom = System.nanoTime();
                if (ownRange) {
                    for (ConnectionWorker w : workers) {
                        w.measure();
                    }
                }
            }
            long deadline = s.ops() > 0 ? Long.MAX_VALUE : measureFrom + s.durationNanos();
            long end = watch(workers, measureFrom, deadline, "measure");
            for (ConnectionWorker w : workers) {
                w.stop();
            }
            if (s.ops() > 0) {
                // Count-bound runs measure every request: wait for the last replies first.
                for (ConnectionWorker w : workers) {
                    w.join();
                }
                awaitReplies(workers);
                end = System.nanoTime();
            }
            for (ConnectionWorker w : workers) {
                // Replies after the end of the window are not part of it.
                w.drainInto(write, read, writeSvc, readSvc);
            }
            for (ConnectionWorker w : workers) {
                w.join();
            }
            long errors = 0;
            int lastError = 0;
            for (ConnectionWorker w : workers) {
                if (w.failure() != null) {
                    throw new IOException("connection failed: " + w.failure().getMessage(), w.failure());
                }
                errors += w.errors();
                if (w.lastError() != 0) {
                    lastError = w.lastError();
                }
            }
            if (errors > 0 && progress != null) {
                progress.println("load: " + errors + " requests failed, the last with "
                        + (lastError < 0 ? "a lost connection" : NbdException.errnoName(lastError)));
            }
            long written = 0;
            for (ConnectionWorker w : workers) {
                written += w.measuredIssued();
            }
            long repeats = s.workload().random ? Math.max(0, Math.round(written * (100 - s.workload().readPercent) / 100.0)
                    - rangeBytes / s.blockSize()) : 0;
            return new Result(s, size, (end - measureFrom) / 1e9, write, read, writeSvc, readSvc, errors, repeats);
        } finally {
            for (ConnectionWorker w : workers) {
                w.stop();
            }
            for (NbdClient c : clients) {
                c.close();
            }
        }
    }

    /**
     * Runs the --at-measure-start command (e.g. resetting the server's own statistics) while the load goes on,
     * so that the server's window and ours start together: ours starts when it returns.
     */
    private void runHook(String command) throws IOException, InterruptedException {
        if (command == null || command.isBlank()) {
            return;
        }
        Process p = new ProcessBuilder("/bin/sh", "-c", command).redirectErrorStream(true)
                .redirectOutput(ProcessBuilder.Redirect.DISCARD).start();
        int exit = p.waitFor();
        if (exit != 0) {
            throw new IOException("--at-measure-start command failed with exit status " + exit + ": " + command);
        }
    }

    static Histogram histogram() {
        return new Histogram(1, ConnectionWorker.HIGHEST_NANOS, 3);
    }

    private static void awaitQuiet(List<ConnectionWorker> workers) throws InterruptedException {
        for (ConnectionWorker w : workers) {
            while (!w.quiet() && !w.finished() && w.failure() == null) {
                Thread.sleep(1);
            }
        }
    }

    private static void awaitReplies(List<ConnectionWorker> workers) throws InterruptedException {
        for (ConnectionWorker w : workers) {
            while (w.inFlight() > 0 && w.failure() == null) {
                Thread.sleep(1);
            }
        }
    }

    /** Shows progress until the deadline or until every worker ended; returns the time it stopped watching. */
    private long watch(List<ConnectionWorker> workers, long from, long deadline, String phase) throws InterruptedException {
        long lastPrint = from;
        long lastCompleted = completed(workers);
        long lastLine = from;
        while (true) {
            long now = System.nanoTime();
            boolean allDone = true;
            for (ConnectionWorker w : workers) {
                allDone &= w.finished() || w.stopped();
            }
            if (now >= deadline || allDone) {
                if (terminal && progress != null && lastPrint != from) {
                    progress.println();
                }
                return Math.min(now, deadline);
            }
            Thread.sleep(Math.max(1, Math.min(100, (deadline - now) / 1_000_000)));
            now = System.nanoTime();
            if (progress != null && now - lastPrint >= 1_000_000_000L) {
                long c = completed(workers);
                double iops = (c - lastCompleted) / ((now - lastPrint) / 1e9);
                lastCompleted = c;
                lastPrint = now;
                double elapsed = (now - from) / 1e9;
                double total = deadline == Long.MAX_VALUE ? -1 : (deadline - from) / 1e9;
                if (terminal) {
                    int width = 30;
                    int filled = total > 0 ? (int) Math.min(width, Math.round(width * elapsed / total)) : 0;
                    progress.printf(Locale.ROOT, "\r%s [%s%s] %4.0f/%s s %,10.0f IOPS   ", phase, "#".repeat(filled),
                            " ".repeat(width - filled), elapsed, total > 0 ? String.format(Locale.ROOT, "%.0f", total) : "?", iops);
                    progress.flush();
                } else if (now - lastLine >= 5_000_000_000L) {
                    progress.printf(Locale.ROOT, "%s: %.0f/%s s, %,.0f IOPS%n", phase, elapsed,
                            total > 0 ? String.format(Locale.ROOT, "%.0f", total) : "?", iops);
                    lastLine = now;
                }
            }
        }
    }

    private static long completed(List<ConnectionWorker> workers) {
        long c = 0;
        for (ConnectionWorker w : workers) {
            c += w.completed();
        }
        return c;
    }
}
