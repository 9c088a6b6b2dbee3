package io.snapbd.bench.fio;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.snapbd.bench.BenchMain;
import org.HdrHistogram.Histogram;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import picocli.CommandLine;

import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

class FioLogToHgrmTest {

    @TempDir
    Path dir;

    /** Output of one run of {@code bench fio2hgrm ARGS}, through BenchMain as the launcher runs it. */
    record Run(int exit, String out, String err) {
    }

    private Run run(String... args) {
        CommandLine cl = BenchMain.commandLine();
        StringWriter out = new StringWriter();
        StringWriter err = new StringWriter();
        cl.setOut(new PrintWriter(out));
        cl.setErr(new PrintWriter(err));
        String[] all = new String[args.length + 1];
        all[0] = "fio2hgrm";
        System.arraycopy(args, 0, all, 1, args.length);
        int exit = cl.execute(all);
        return new Run(exit, out.toString(), err.toString());
    }

    private Path log(String name, List<String> lines) throws IOException {
        Path f = dir.resolve(name);
        Files.write(f, lines);
        return f;
    }

    /** fio 3.33's default format: time ms, latency ns, ddir, bs, prio. */
    private static String line(long timeMs, long ns, int ddir) {
        return timeMs + ", " + ns + ", " + ddir + ", 4096, 0";
    }

    /** Total count from the footer of an .hgrm ({@code #[Max = ..., Total count = N]}). */
    private static long hgrmCount(Path hgrm) throws IOException {
        for (String l : Files.readAllLines(hgrm)) {
            int i = l.indexOf("Total count");
            if (i >= 0) {
                return Long.parseLong(l.substring(l.indexOf('=', i) + 1, l.indexOf(']', i)).trim());
            }
        }
        throw new AssertionError("no Total count in " + hgrm);
    }

    /** Max from the .hgrm footer, in the file's unit (µs). */
    private static double hgrmMax(Path hgrm) throws IOException {
        for (String l : Files.readAllLines(hgrm)) {
            int i = l.indexOf("#[Max");
            if (i >= 0) {
                return Double.parseDouble(l.substring(l.indexOf('=', i) + 1, l.indexOf(',', i)).trim());
            }
        }
        throw new AssertionError("no Max in " + hgrm);
    }

    private static void assertNear(double expected, double actual, String what) {
        // 3 significant digits: HdrHistogram's relative error is below 0.1 %
        assertTrue(Math.abs(expected - actual) <= expected * 0.001 + 1e-9,
                what + ": expected " + expected + " within 0.1 %, got " + actual);
    }

    @Test
    void thousandKnownLatencies() throws Exception {
        List<String> lines = new ArrayList<>();
        for (int i = 1; i <= 1000; i++) {
            lines.add(line(i, i * 1000L, 1)); // 1 µs .. 1000 µs, in ns
        }
        Path f = log("job_lat.1.log", lines);
        Path outDir = dir.resolve("out");

        FioLogToHgrm.Result r = FioLogToHgrm.parse(List.of(f), 0, FioLogToHgrm.Unit.ns);
        Histogram w = r.direction("write");
        assertEquals(1000, w.getTotalCount());
        assertEquals(0, r.direction("read").getTotalCount());
        assertNear(500_000, w.getValueAtPercentile(50), "p50 ns");
        assertNear(990_000, w.getValueAtPercentile(99), "p99 ns");
        assertNear(999_000, w.getValueAtPercentile(99.9), "p99.9 ns");
        assertNear(1_000_000, w.getMaxValue(), "max ns");

        Run run = run("--out", outDir.toString(), f.toString());
        assertEquals(0, run.exit(), run.err());
        Path hgrm = outDir.resolve("job-write.hgrm"); // default label: the job name
        assertTrue(Files.isRegularFile(hgrm));
        assertFalse(Files.exists(outDir.resolve("job-read.hgrm")), "no reads, no read.hgrm");
        assertEquals(1000, hgrmCount(hgrm));
        assertNear(1000.0, hgrmMax(hgrm), "max in the .hgrm, µs");
        assertTrue(run.out().startsWith("job write: count 1000, p50 500."), run.out());
        assertTrue(run.out().contains("p99 990."), run.out());
    }

    @Test
    void readsAndWritesGoToTheirOwnHistograms() throws Exception {
        List<String> lines = new ArrayList<>();
        for (int i = 0; i < 1000; i++) {
            boolean read = i % 10 < 7; // 70/30
            lines.add(line(i, read ? 100_000 : 2_000_000, read ? 0 : 1));
        }
        lines.add(line(1000, 50_000, 2)); // one trim
        Path f = log("mix_clat.1.log", lines);
        Run run = run("--out", dir.toString(), "--label", "snapbd-randrw", "--json", f.toString());
        assertEquals(0, run.exit(), run.err());

        JsonNode json = new ObjectMapper().readTree(run.out());
        assertEquals("snapbd-randrw", json.get("label").asText());
        assertEquals(700, json.at("/directions/read/count").asLong());
        assertEquals(300, json.at("/directions/write/count").asLong());
        assertEquals(1, json.at("/directions/trim/count").asLong());
        assertNear(100.0, json.at("/directions/read/p99.99").asDouble(), "read p99.99 µs");
        assertNear(2000.0, json.at("/directions/write/p50").asDouble(), "write p50 µs");
        assertEquals(700, hgrmCount(dir.resolve("snapbd-randrw-read.hgrm")));
        assertEquals(300, hgrmCount(dir.resolve("snapbd-randrw-write.hgrm")));
        assertEquals(1, hgrmCount(dir.resolve("snapbd-randrw-trim.hgrm")));
    }

    @Test
    void warmUpIsSkippedPerJob() throws Exception {
        List<String> job1 = new ArrayList<>();
        List<String> job2 = new ArrayList<>();
        for (int t = 0; t < 2000; t++) {
            // the first second is slow (warm-up), the rest 10 µs
            job1.add(line(t, t < 1000 ? 50_000_000 : 10_000, 1));
            job2.add(line(t, t < 1000 ? 50_000_000 : 10_000, 1));
        }
        log("w_lat.1.log", job1);
        log("w_lat.2.log", job2);
        // the prefix stands for both jobs' logs
        Run run = run("--out", dir.toString(), "--skip-ms", "1000", "--json", dir.resolve("w_lat").toString());
        assertEquals(0, run.exit(), run.err());
        JsonNode json = new ObjectMapper().readTree(run.out());
        assertEquals("w", json.get("label").asText());
        assertEquals(2, json.get("logs").size());
        assertEquals(2000, json.get("skipped").asLong());
        assertEquals(2000, json.at("/directions/write/count").asLong());
        assertNear(10.0, json.at("/directions/write/max").asDouble(), "max µs after the warm-up");
        assertTrue(run.err().contains("skipped 2000"), run.err());

        Run all = run("--out", dir.toString(), "--json", dir.resolve("w_lat").toString());
        assertEquals(4000, new ObjectMapper().readTree(all.out()).at("/directions/write/count").asLong());

        Run everything = run("--out", dir.toString(), "--skip-ms", "5000", dir.resolve("w_lat").toString());
        assertEquals(2, everything.exit());
        assertTrue(everything.err().contains("nothing left"), everything.err());
    }

    @Test
    void malformedLineNamesFileAndLine() throws Exception {
        Path f = log("bad_lat.1.log", List.of(line(0, 1000, 1), line(1, 2000, 1), "2, 12x4, 1, 4096, 0", line(3, 1, 1)));
        Run run = run("--out", dir.toString(), f.toString());
        assertEquals(2, run.exit());
        assertTrue(run.err().contains("bad_lat.1.log:3: column 2 (latency) is not a non-negative integer"), run.err());
        assertEquals("", run.out());
        assertFalse(Files.exists(dir.resolve("bad-write.hgrm")), "nothing written on bad input");

        Path few = log("few_lat.log", List.of(line(0, 1000, 1), "1, 2000"));
        Run r2 = run("--out", dir.toString(), few.toString());
        assertEquals(2, r2.exit());
        assertTrue(r2.err().contains("few_lat.log:2: expected at least 4"), r2.err());

        Path ddir = log("ddir_lat.log", List.of("0, 1000, 7, 4096, 0"));
        Run r3 = run("--out", dir.toString(), ddir.toString());
        assertEquals(2, r3.exit());
        assertTrue(r3.err().contains("ddir_lat.log:1: ddir 7 is not 0 (read), 1 (write) or 2 (trim)"), r3.err());

        Path avg = log("avg_lat.1.log", List.of("500, 96605, 1, 0, 0"));
        Run r4 = run("--out", dir.toString(), avg.toString());
        assertEquals(2, r4.exit());
        assertTrue(r4.err().contains("avg_lat.1.log:1: block size 0") && r4.err().contains("log_avg_msec=0"), r4.err());
    }

    @Test
    void emptyMissingAndMixedInputsAreRefused() throws Exception {
        Path empty = log("empty_lat.1.log", List.of());
        Run r1 = run("--out", dir.toString(), empty.toString());
        assertEquals(2, r1.exit());
        assertTrue(r1.err().contains("empty_lat.1.log: empty log"), r1.err());

        Run r2 = run("--out", dir.toString(), dir.resolve("nope_lat").toString());
        assertEquals(2, r2.exit());
        assertTrue(r2.err().contains("nope_lat: no such file"), r2.err());

        Path lat = log("m_lat.1.log", List.of(line(0, 1000, 1)));
        Path clat = log("m_clat.1.log", List.of(line(0, 900, 1)));
        Run r3 = run("--out", dir.toString(), lat.toString(), clat.toString());
        assertEquals(2, r3.exit());
        assertTrue(r3.err().contains("different kinds (lat, clat)"), r3.err());

        Run r4 = run("--unit", "ms", lat.toString());
        assertEquals(2, r4.exit(), "picocli usage errors exit 2 as well");
    }

    @Test
    void fioFormatsWithOffsetHexPrioAndMicroseconds() throws Exception {
        // log_offset=1 and log_prio=1 (fio 3.33): time, value, ddir, bs, offset, 0xprio; and a 4-column older log
        Path six = log("six_lat.1.log", List.of("0, 385916, 2, 4096, 54312960, 0x0000", "1000, 123574, 0, 4096, 29687808, 0x0000"));
        Path four = log("four_lat.1.log", List.of("0, 250, 1, 65536", "3, 750, 1, 65536"));
        FioLogToHgrm.Result r = FioLogToHgrm.parse(List.of(six), 0, FioLogToHgrm.Unit.ns);
        assertEquals(1, r.direction("trim").getTotalCount());
        assertEquals(1, r.direction("read").getTotalCount());

        Run run = run("--out", dir.toString(), "--unit", "us", "--json", four.toString());
        assertEquals(0, run.exit(), run.err());
        JsonNode json = new ObjectMapper().readTree(run.out());
        assertNear(750.0, json.at("/directions/write/max").asDouble(), "µs values kept as µs");
        assertNear(250.0, json.at("/directions/write/p50").asDouble(), "p50 µs");

        Run ns = run("--out", dir.toString(), four.toString());
        assertEquals(0, ns.exit(), ns.err());
        assertTrue(ns.err().contains("--unit us"), "sub-µs median in ns warns: " + ns.err());
    }
}
