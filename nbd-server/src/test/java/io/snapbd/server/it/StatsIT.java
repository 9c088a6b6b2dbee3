package io.snapbd.server.it;

import com.fasterxml.jackson.databind.JsonNode;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

import static io.snapbd.server.it.SnapshotSupport.createSnapshot;
import static io.snapbd.server.it.SnapshotSupport.json;
import static io.snapbd.server.it.SnapshotSupport.nbdsh;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * {@code snapbd stats}: server-side request counts and latency percentiles per export, driven by real clients
 * (fio's nbd engine, nbdsh) whose exact request counts are known, the volume's copy-on-write copies and save volume
 * use, {@code --reset}, {@code --hgrm}, and the {@code --latency-histograms=off} switch.
 */
@Timeout(value = 10, unit = TimeUnit.MINUTES)
@ExtendWith(ServerLiveness.class)
class StatsIT {

    static final String[] ORDER = {"min", "p50", "p90", "p99", "p99.9", "p99.99", "max"};

    @TempDir
    static Path tmp;
    static final int metricsPort = freePort();
    @RegisterExtension
    static final SnapbdServerExtension SNAPBD = SnapbdServerExtension.builder("StatsIT").volume("first", "32M", "4M")
            .config("metrics = 127.0.0.1:" + metricsPort + "\n").build();
    static final ServerProcess server = SNAPBD.server();

    static int freePort() {
        try (ServerSocket ss = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            return ss.getLocalPort();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    static String metrics() throws IOException, InterruptedException {
        HttpResponse<String> r = HttpClient.newHttpClient().send(
                HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + metricsPort + "/metrics")).build(), HttpResponse.BodyHandlers.ofString());
        assertEquals(200, r.statusCode(), r.body());
        return r.body();
    }

    static String newVolume(ServerProcess s, String name) {
        s.cli("volume", "create", name, "--size", "32M", "--save-size", "16M").assertOk();
        return name;
    }

    /** fio's nbd engine: exactly {@code n} requests of {@code rw}, 4 KiB each, one job. */
    static void fio(ServerProcess s, String export, String rw, int n, int iodepth, String... extra) {
        List<String> cmd = new ArrayList<>(List.of("fio", "--name=stats", "--ioengine=nbd", "--uri=" + s.unixUri(export), "--rw=" + rw,
                "--bs=4k", "--size=32M", "--number_ios=" + n, "--iodepth=" + iodepth));
        cmd.addAll(List.of(extra));
        Tools.Result r = Tools.run(Tools.DEFAULT_TIMEOUT, null, cmd).assertOk();
        assertTrue(r.stdout().contains("Run status group"), r.toString());
    }

    /**
     * {@code stats EXPORT --json} once the export has no connection left: a request is recorded right after its
     * reply is sent, so a client that has just exited may be a request ahead of the server's numbers until the
     * server has closed its connection.
     */
    static JsonNode stats(ServerProcess s, String export, String... extra) {
        JsonNode j;
        while ((j = statsNow(s, export)).path("connections").asInt() > 0) {
            try {
                Thread.sleep(50);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new AssertionError(e);
            }
        }
        return extra.length == 0 ? j : statsNow(s, export, extra);
    }

    static JsonNode statsNow(ServerProcess s, String export, String... extra) {
        List<String> args = new ArrayList<>(List.of("stats", export, "--json"));
        args.addAll(List.of(extra));
        JsonNode j = json(s.cli(args.toArray(String[]::new)));
        assertEquals(export, j.path("export").asText(), j.toString());
        return j;
    }

    static JsonNode op(JsonNode stats, String op) {
        JsonNode o = stats.path("ops").path(op);
        assertTrue(o.isObject(), "no " + op + " in " + stats);
        return o;
    }

    /** Latency present, counting every request, percentiles in order. */
    static void assertLatency(JsonNode stats, String op) {
        JsonNode o = op(stats, op);
        JsonNode l = o.path("latencyMicros");
        assertTrue(l.isObject(), op + " has latencies: " + stats);
        assertEquals(o.path("requests").asLong(), l.path("count").asLong(), "every " + op + " recorded: " + stats);
        double prev = 0;
        for (String p : ORDER) {
            assertTrue(l.has(p), p + " of " + op + ": " + l);
            double v = l.path(p).asDouble();
            assertTrue(v > 0, p + " of " + op + " is positive: " + l);
            assertTrue(v >= prev, p + " of " + op + " is not below the previous percentile: " + l);
            prev = v;
        }
        double mean = l.path("mean").asDouble();
        assertTrue(mean >= l.path("min").asDouble() && mean <= l.path("max").asDouble(), "mean within min..max: " + l);
    }

    @Test
    void countsAreExactlyWhatTheClientsSent() throws Exception {
        Tools.require("fio", "nbdsh");
        String vol = newVolume(server, "counted");
        JsonNode before = stats(server, vol);
        assertEquals(0, before.path("requests").asLong(), before.toString());
        assertTrue(before.path("latencyHistograms").asBoolean(), "on by default: " + before);

        fio(server, vol, "randwrite", 1234, 8);
        fio(server, vol, "randread", 777, 4);
        // FLUSH and FUA writes are answered from the sync pool, TRIM and WRITE_ZEROES inline
        nbdsh(server.unixUri(vol), String.join("\n",
                "buf = b'x' * 4096",
                "for i in range(5): h.flush()",
                "for i in range(2): h.pwrite(buf, i * 4096, nbd.CMD_FLAG_FUA)",
                "for i in range(3): h.trim(65536, (100 + i) * 65536)",
                "for i in range(4): h.zero(8192, (200 + i) * 65536)"));

        JsonNode s = stats(server, vol);
        assertEquals(1234 + 2, op(s, "write").path("requests").asLong(), s.toString());
        assertEquals((1234 + 2) * 4096L, op(s, "write").path("bytes").asLong(), s.toString());
        assertEquals((1234 + 2) * 4096L, s.path("bytesWritten").asLong(), s.toString());
        assertEquals(777, op(s, "read").path("requests").asLong(), s.toString());
        assertEquals(777 * 4096L, s.path("bytesRead").asLong(), s.toString());
        assertEquals(5, op(s, "flush").path("requests").asLong(), s.toString());
        assertEquals(3, op(s, "trim").path("requests").asLong(), s.toString());
        assertEquals(3 * 65536L, op(s, "trim").path("bytes").asLong(), s.toString());
        assertEquals(4, op(s, "write_zeroes").path("requests").asLong(), s.toString());
        assertEquals(1234 + 2 + 777 + 5 + 3 + 4, s.path("requests").asLong(), s.toString());
        assertEquals(0, s.path("errors").asLong(), s.toString());
        for (String op : new String[] {"write", "read", "flush", "trim", "write_zeroes"}) {
            assertLatency(s, op);
        }
        assertTrue(op(s, "cache").path("latencyMicros").isNull(), "a type never sent has no latency: " + s);

        // the human table shows the same numbers
        String table = server.cli("stats", vol).assertOk().stdout();
        assertTrue(table.contains("p99.99") && table.lines().anyMatch(l -> l.strip().startsWith("write") && l.contains(" 1236 ")), table);
        assertTrue(table.lines().anyMatch(l -> l.strip().startsWith("read") && l.contains(" 777 ")), table);

        // the metrics endpoint counts the same requests: buckets from the same histograms
        String m = metrics();
        String w = "{export=\"" + vol + "\",op=\"write\"";
        assertTrue(m.contains("snapbd_export_op_requests_total" + w + "} 1236\n"), m);
        assertTrue(m.contains("snapbd_export_request_duration_seconds_count" + w + "} 1236\n"), m);
        assertTrue(m.contains("snapbd_export_request_duration_seconds_bucket" + w + ",le=\"+Inf\"} 1236\n"), m);
        assertTrue(m.contains("snapbd_export_op_requests_total{export=\"" + vol + "\",op=\"read\"} 777\n"), m);

        // without EXPORT: every export
        JsonNode all = json(server.cli("stats", "--json"));
        List<String> names = new ArrayList<>();
        all.path("exports").forEach(e -> names.add(e.path("export").asText()));
        assertTrue(names.contains(vol) && names.contains("first"), all.toString());
    }

    @Test
    void copyOnWriteCopiesGrowAfterASnapshot() {
        Tools.require("fio");
        String vol = newVolume(server, "cow");
        fio(server, vol, "write", 256, 4);                 // blocks 0..255 in use
        JsonNode before = stats(server, vol);
        assertEquals(0, before.path("copyOnWriteCopies").asLong(), before.toString());
        assertEquals(0, before.path("saveVolume").path("bytesUsed").asLong(), before.toString());
        assertEquals(16L << 20, before.path("saveVolume").path("bytes").asLong(), before.toString());

        createSnapshot(server, vol, "s1");
        fio(server, vol, "write", 256, 4);                 // the same blocks: each one copied once
        JsonNode after = stats(server, vol);
        assertEquals(256, after.path("copyOnWriteCopies").asLong(), after.toString());
        assertEquals(256 * 4096L, after.path("saveVolume").path("bytesUsed").asLong(), after.toString());
        assertEquals(512, op(after, "write").path("requests").asLong(), after.toString());

        // the snapshot is an export of its own, with its own counts
        fio(server, vol + "@s1", "randread", 100, 2);
        JsonNode snap = stats(server, vol + "@s1");
        assertEquals("s1", snap.path("snapshot").asText(), snap.toString());
        assertTrue(snap.path("readOnly").asBoolean(), snap.toString());
        assertEquals(100, op(snap, "read").path("requests").asLong(), snap.toString());
        assertEquals(0, op(snap, "write").path("requests").asLong(), snap.toString());
        assertEquals(256 * 4096L, snap.path("snapshotSaveBytesUsed").asLong(), snap.toString());
        assertLatency(snap, "read");
    }

    @Test
    void resetStartsANewPeriodAndHgrmWritesDistributions() throws Exception {
        Tools.require("fio");
        String vol = newVolume(server, "reset");
        fio(server, vol, "randwrite", 300, 4);
        Path dir = tmp.resolve("hgrm");
        JsonNode s = stats(server, vol, "--reset", "--hgrm", dir.toString());
        assertEquals(300, op(s, "write").path("requests").asLong(), s.toString());
        assertTrue(s.path("reset").asBoolean(), s.toString());
        assertFalse(op(s, "write").has("hdrHistogram"), "the encoded histogram goes to the file, not to stdout");
        Path f = dir.resolve(vol + ".write.hgrm");
        assertTrue(Files.isRegularFile(f), "missing " + f);
        String text = Files.readString(f);
        assertTrue(text.contains("Value     Percentile TotalCount") && java.util.regex.Pattern.compile("Total count\\s+=\\s+300\\]").matcher(text).find(), text);
        assertFalse(Files.exists(dir.resolve(vol + ".read.hgrm")), "no file for a type without requests");

        JsonNode fresh = stats(server, vol);
        assertEquals(0, fresh.path("requests").asLong(), "counts start again after --reset: " + fresh);
        fio(server, vol, "randwrite", 50, 1);
        JsonNode again = stats(server, vol);
        assertEquals(50, op(again, "write").path("requests").asLong(), again.toString());
        assertLatency(again, "write");
    }

    @Test
    void offSwitchRecordsNoLatency() {
        Tools.require("fio");
        Path data = tmp.resolve("off-data");
        ServerProcess.snapbd(data, "volume", "create", "quiet", "--size", "32M", "--save-size", "4M").assertOk();
        try (ServerProcess off = ServerProcess.start(data, "StatsIT-off", "--latency-histograms=off")) {
            assertTrue(off.log().contains("latency histograms are off"), off.log());
            fio(off, "quiet", "randwrite", 100, 4);
            JsonNode s = stats(off, "quiet");
            assertFalse(s.path("latencyHistograms").asBoolean(), s.toString());
            assertEquals(100, op(s, "write").path("requests").asLong(), "counts go on: " + s);
            assertEquals(100 * 4096L, s.path("bytesWritten").asLong(), s.toString());
            assertTrue(op(s, "write").path("latencyMicros").isNull(), "no latency while off: " + s);
            String table = off.cli("stats", "quiet").assertOk().stdout();
            assertTrue(table.contains("latency histograms are off") && !table.contains("p99"), table);
        }
        ServerProcess.snapbd(null, "serve", "--latency-histograms=maybe", "--data-dir", data.toString()).assertExit(2);
    }
}
