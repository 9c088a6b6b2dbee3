package io.snapbd.server.service;

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import io.snapbd.engine.lun.LunState;
import io.snapbd.engine.snapshot.SnapshotSet;
import io.snapbd.engine.volume.Volume;
import io.snapbd.engine.volume.VolumeCatalog;
import io.snapbd.server.Log;
import io.snapbd.server.export.Export;
import io.snapbd.server.export.ExportRegistry;
import io.snapbd.server.export.ExportStats;
import io.snapbd.server.kernel.KernelAttachments;
import io.snapbd.server.snapshot.CloneJobs;
import io.snapbd.server.transport.NbdServer;
import org.HdrHistogram.Histogram;

import java.io.IOException;
import java.io.OutputStream;
import java.math.BigDecimal;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;

/**
 * The optional metrics endpoint ({@code metrics = HOST:PORT}): {@code GET /metrics} in the Prometheus text
 * format 0.0.4, served by the JDK's HTTP server on one thread of its own. Every scrape reads the live
 * counters; nothing is computed on the I/O path for it. Metric names are listed in docs/production.md.
 */
public final class Metrics implements AutoCloseable {

    private final VolumeCatalog catalog;
    private final ExportRegistry exports;
    private final NbdServer nbd;
    private final KernelAttachments attachments;
    private final CloneJobs clones;
    private final long startMillis = System.currentTimeMillis();
    private HttpServer http;
    private ExecutorService executor;

    Metrics(VolumeCatalog catalog, ExportRegistry exports, NbdServer nbd, KernelAttachments attachments, CloneJobs clones) {
        this.catalog = catalog;
        this.exports = exports;
        this.nbd = nbd;
        this.attachments = attachments;
        this.clones = clones;
    }

    /** Binds the endpoint; the caller treats a failure as a failed start (wrong address, port taken). */
    synchronized void listen(InetSocketAddress address) throws IOException {
        HttpServer s;
        try {
            s = HttpServer.create(address, 16);
        } catch (IOException e) {
            throw new IOException("cannot serve metrics on " + address.getHostString() + ":" + address.getPort() + ": " + e.getMessage(), e);
        }
        executor = Executors.newSingleThreadExecutor(r -> {
            Thread t = new Thread(r, "metrics");
            t.setDaemon(true);
            return t;
        });
        s.setExecutor(executor);
        s.createContext("/", this::handle);
        s.start();
        http = s;
        Log.info("metrics: http://%s:%d/metrics", hostForUrl(address()), address().getPort());
    }

    synchronized InetSocketAddress address() {
        return http == null ? null : http.getAddress();
    }

    private static String hostForUrl(InetSocketAddress a) {
        String h = a.getAddress().getHostAddress();
        return h.contains(":") ? "[" + h + "]" : h;
    }

    private void handle(HttpExchange ex) throws IOException {
        try (ex) {
            String path = ex.getRequestURI().getPath();
            String method = ex.getRequestMethod();
            if (!method.equals("GET") && !method.equals("HEAD")) {
                ex.getResponseHeaders().set("Allow", "GET, HEAD");
                send(ex, 405, "text/plain; charset=utf-8", "method not allowed\n");
                return;
            }
            if (path.equals("/")) {
                send(ex, 200, "text/html; charset=utf-8", "<html><body><a href=\"/metrics\">snapbd metrics</a></body></html>\n");
                return;
            }
            if (!path.equals("/metrics")) {
                send(ex, 404, "text/plain; charset=utf-8", "not found: try /metrics\n");
                return;
            }
            String body;
            try {
                body = render();
            } catch (IOException | RuntimeException e) {
                Log.warn("metrics scrape failed: %s", e.toString());
                send(ex, 500, "text/plain; charset=utf-8", "metrics failed: " + e + "\n");
                return;
            }
            send(ex, 200, "text/plain; version=0.0.4; charset=utf-8", body);
        }
    }

    private static void send(HttpExchange ex, int code, String type, String body) throws IOException {
        byte[] b = body.getBytes(StandardCharsets.UTF_8);
        ex.getResponseHeaders().set("Content-Type", type);
        boolean head = ex.getRequestMethod().equals("HEAD");
        ex.sendResponseHeaders(code, head ? -1 : b.length);
        if (!head) {
            try (OutputStream out = ex.getResponseBody()) {
                out.write(b);
            }
        }
    }

    /** The whole exposition, one family after the other. */
    String render() throws IOException {
        Text t = new Text();
        String version = Metrics.class.getPackage().getImplementationVersion();
        t.family("snapbd_build_info", "gauge", "Always 1; the labels tell the version and the Java runtime.");
        t.sample("snapbd_build_info", labels("version", version == null ? "development" : version,
                "java", System.getProperty("java.version")), 1);
        t.family("snapbd_start_time_seconds", "gauge", "When the server started, in seconds since the epoch.");
        t.sample("snapbd_start_time_seconds", "", startMillis / 1000.0);

        // ---- connections -------------------------------------------------------------------------------------
        t.family("snapbd_connections", "gauge", "Open NBD connections (network clients and kernel attachments).");
        t.sample("snapbd_connections", "", nbd.activeConnections());
        t.family("snapbd_connections_accepted_total", "counter", "NBD connections accepted since the start.");
        t.sample("snapbd_connections_accepted_total", "", nbd.acceptedConnections());
        t.family("snapbd_connections_refused_total", "counter", "NBD connections refused at accept (max-connections).");
        t.sample("snapbd_connections_refused_total", "", nbd.rejectedConnections());
        t.family("snapbd_max_connections", "gauge", "The max-connections limit in force.");
        t.sample("snapbd_max_connections", "", nbd.maxConnections());

        // ---- exports -----------------------------------------------------------------------------------------
        List<Export> list = exports.list();
        t.family("snapbd_export_available", "gauge", "1 when clients may connect to the export, 0 when not (see status).");
        for (Export e : list) {
            t.sample("snapbd_export_available", labels("export", e.name()), e.unavailableReason() == null ? 1 : 0);
        }
        t.family("snapbd_export_read_only", "gauge", "1 for read-only exports (snapshots).");
        for (Export e : list) {
            t.sample("snapbd_export_read_only", labels("export", e.name()), e.readOnly() ? 1 : 0);
        }
        t.family("snapbd_export_connections", "gauge", "Open connections per export.");
        for (Export e : list) {
            t.sample("snapbd_export_connections", labels("export", e.name()), e.connections());
        }
        t.family("snapbd_export_requests_total", "counter", "NBD requests received per export.");
        for (Export e : list) {
            t.sample("snapbd_export_requests_total", labels("export", e.name()), e.requests().get());
        }
        t.family("snapbd_export_errors_total", "counter", "NBD requests answered with an error per export.");
        for (Export e : list) {
            t.sample("snapbd_export_errors_total", labels("export", e.name()), e.errors().get());
        }
        t.family("snapbd_export_read_bytes_total", "counter", "Bytes read by successful READ requests per export.");
        for (Export e : list) {
            t.sample("snapbd_export_read_bytes_total", labels("export", e.name()), e.stats().bytesRead());
        }
        t.family("snapbd_export_written_bytes_total", "counter", "Bytes written by successful WRITE requests per export.");
        for (Export e : list) {
            t.sample("snapbd_export_written_bytes_total", labels("export", e.name()), e.stats().bytesWritten());
        }
        t.family("snapbd_export_op_requests_total", "counter", "NBD requests answered per export and request type.");
        t.family("snapbd_export_op_errors_total", "counter", "NBD requests answered with an error per export and request type.");
        t.family("snapbd_export_request_duration_seconds", "histogram",
                "Time from reading a request to sending its reply, per export and request type (latency-histograms = on).");
        for (Export e : list) {
            for (ExportStats.Op op : ExportStats.Op.values()) {
                long[] c = e.stats().counters(op);
                if (c[0] == 0) {
                    continue;               // a type never seen on this export: no series
                }
                t.sample("snapbd_export_op_requests_total", labels("export", e.name(), "op", op.label), c[0]);
                t.sample("snapbd_export_op_errors_total", labels("export", e.name(), "op", op.label), c[1]);
                long[] cum = e.stats().histograms() ? e.stats().withCumulative(op, Metrics::buckets) : null;
                if (cum == null) {
                    continue;
                }
                for (int i = 0; i < cum.length; i++) {
                    String le = i < BUCKET_SECONDS.length ? number(BUCKET_SECONDS[i]) : "+Inf";
                    t.sample("snapbd_export_request_duration_seconds_bucket", labels("export", e.name(), "op", op.label, "le", le), cum[i]);
                }
                t.sample("snapbd_export_request_duration_seconds_sum", labels("export", e.name(), "op", op.label), c[3] / 1e9);
                t.sample("snapbd_export_request_duration_seconds_count", labels("export", e.name(), "op", op.label), cum[cum.length - 1]);
            }
        }

        // ---- volumes, save volumes, snapshots, LUN state ----------------------------------------------------
        Map<String, Volume> volumes = new TreeMap<>(catalog.openVolumes());
        Map<String, String> setAside = catalog.setAside();
        t.family("snapbd_volume_state", "gauge",
                "1 for the state each volume is in, 0 for the others: open (served), or set_aside (its open failed; see status).");
        for (String n : catalog.names()) {
            boolean aside = setAside.containsKey(n);
            boolean open = volumes.containsKey(n);
            t.sample("snapbd_volume_state", labels("volume", n, "state", "open"), open ? 1 : 0);
            t.sample("snapbd_volume_state", labels("volume", n, "state", "set_aside"), aside ? 1 : 0);
        }
        t.family("snapbd_volumes_set_aside", "gauge", "Volumes set aside at start: not served because a file of theirs is damaged or unreadable.");
        t.sample("snapbd_volumes_set_aside", "", setAside.size());
        t.family("snapbd_volume_set_aside_info", "gauge", "Always 1 per volume set aside; the reason label names the file and what is wrong.");
        setAside.forEach((n, why) -> t.sample("snapbd_volume_set_aside_info", labels("volume", n, "reason", why), 1));
        t.family("snapbd_volume_size_bytes", "gauge", "Size of each volume.");
        volumes.forEach((n, v) -> t.sample("snapbd_volume_size_bytes", labels("volume", n), v.size()));
        t.family("snapbd_volume_used_bytes", "gauge", "Bytes of each volume in use (meta bit map: written and not trimmed).");
        volumes.forEach((n, v) -> t.sample("snapbd_volume_used_bytes", labels("volume", n), v.blocksInUse() * (double) v.blockSize()));
        t.family("snapbd_volume_recovered", "gauge", "1 when the volume was not stopped cleanly before this start and was recovered.");
        volumes.forEach((n, v) -> t.sample("snapbd_volume_recovered", labels("volume", n), v.recovery().wasClean() ? 0 : 1));
        t.family("snapbd_volume_copy_on_write_copies_total", "counter", "Blocks copied to the save volume before being overwritten.");
        volumes.forEach((n, v) -> t.sample("snapbd_volume_copy_on_write_copies_total", labels("volume", n), v.cowCopies()));
        t.family("snapbd_save_volume_used_bytes", "gauge", "Bytes of the save volume holding before-images.");
        volumes.forEach((n, v) -> t.sample("snapbd_save_volume_used_bytes", labels("volume", n),
                v.snapshots().saveChunksUsed() * (double) v.blockSize()));
        t.family("snapbd_save_volume_capacity_bytes", "gauge", "Size of the save volume.");
        volumes.forEach((n, v) -> t.sample("snapbd_save_volume_capacity_bytes", labels("volume", n),
                v.snapshots().saveChunks() * (double) v.blockSize()));

        t.family("snapbd_snapshots", "gauge", "Snapshots per volume and state (active, or invalid: terminated by save volume overflow).");
        t.family("snapbd_snapshot_save_used_bytes", "gauge", "Save volume bytes holding each snapshot's before-images.");
        t.family("snapbd_snapshot_created_seconds", "gauge", "When each snapshot was taken, in seconds since the epoch.");
        for (Map.Entry<String, Volume> me : volumes.entrySet()) {
            long active = 0;
            long invalid = 0;
            for (SnapshotSet.Info i : me.getValue().snapshots().list()) {
                String state = i.active() ? "active" : "invalid";
                if (i.active()) {
                    active++;
                } else {
                    invalid++;
                }
                String l = labels("volume", me.getKey(), "snapshot", i.record().name(), "state", state);
                t.sample("snapbd_snapshot_save_used_bytes", l, i.chunksUsed() * (double) me.getValue().blockSize());
                t.sample("snapbd_snapshot_created_seconds", l, i.record().createdNanos() / 1e9);
            }
            t.sample("snapbd_snapshots", labels("volume", me.getKey(), "state", "active"), active);
            t.sample("snapbd_snapshots", labels("volume", me.getKey(), "state", "invalid"), invalid);
        }

        t.family("snapbd_mirror_leg_failed", "gauge", "1 while a mirror leg is failed (changes to the volume are refused), else 0.");
        t.family("snapbd_mirror_leg_degraded", "gauge", "1 while a mirror leg is degraded (left behind, its missed writes recorded; resynced when back), else 0.");
        t.family("snapbd_mirror_leg_resync_bytes_total", "counter", "Bytes reconciliations and resyncs copied into a mirror leg since the volume opened.");
        t.family("snapbd_mirror_leg_missed_region_bytes", "gauge", "Bytes a degraded mirror leg's region map records as missed (besides its live tag table entries).");
        t.family("snapbd_mirror_leg_table_entries", "gauge", "Live entries in a mirror leg's tag table (changes in flight or not yet retired).");
        t.family("snapbd_mirror_leg_writes_total", "counter", "Changes (writes, TRIM, WRITE_ZEROES, restore runs) completed on a mirror leg.");
        t.family("snapbd_mirror_leg_write_seconds_total", "counter", "Time spent per mirror leg on its part of those changes (entry, data, force, DONE).");
        t.family("snapbd_mirror_leg_write_seconds_max", "gauge", "Longest time one change took on a mirror leg since the start.");
        t.family("snapbd_mirror_reconciliations_total", "counter", "Reconciliations of a mirrored volume's legs (at open after an unclean stop, at a clean close, on demand).");
        t.family("snapbd_mirror_reconcile_copied_bytes_total", "counter", "Bytes reconciliation copied between a mirrored volume's legs.");
        t.family("snapbd_mirror_reconcile_compared_bytes_total", "counter", "Bytes of unmatched ranges reconciliation compared between a mirrored volume's legs before copying only the blocks that differ.");
        t.family("snapbd_mirror_hot_regions", "gauge", "Regions of a mirrored volume whose region entry is live now (changes there force no ENTRY); what a crash leaves to compare, at most the cap.");
        t.family("snapbd_mirror_hot_regions_cap", "gauge", "The cap on hot regions (0: every change forces its own ENTRY).");
        t.family("snapbd_mirror_region_bytes", "gauge", "Bytes per hot region.");
        t.family("snapbd_mirror_region_entries_total", "counter", "Region entries made durable (regions made hot) since the volume opened.");
        for (Map.Entry<String, Volume> me : volumes.entrySet()) {
            io.snapbd.engine.mirror.MirrorSet m = me.getValue().mirror();
            if (m == null) {
                continue;
            }
            t.sample("snapbd_mirror_hot_regions", labels("volume", me.getKey()), m.hotRegions());
            t.sample("snapbd_mirror_hot_regions_cap", labels("volume", me.getKey()), m.hotRegionCap());
            t.sample("snapbd_mirror_region_bytes", labels("volume", me.getKey()), m.regionBytes());
            t.sample("snapbd_mirror_region_entries_total", labels("volume", me.getKey()), m.regionEntries());
            for (io.snapbd.engine.mirror.MirrorSet.LegStatus l : m.status()) {
                String lb = labels("volume", me.getKey(), "leg", Integer.toString(l.leg()), "uri", l.uri());
                t.sample("snapbd_mirror_leg_failed", lb, "failed".equals(l.state()) ? 1 : 0);
                t.sample("snapbd_mirror_leg_degraded", lb, l.degraded() ? 1 : 0);
                t.sample("snapbd_mirror_leg_resync_bytes_total", lb, l.bytesCopiedInTotal());
                t.sample("snapbd_mirror_leg_missed_region_bytes", lb, l.missedRegionBytes());
                t.sample("snapbd_mirror_leg_table_entries", lb, l.tableEntries());
                t.sample("snapbd_mirror_leg_writes_total", lb, l.writes());
                t.sample("snapbd_mirror_leg_write_seconds_total", lb, l.writeNanos() / 1e9);
                t.sample("snapbd_mirror_leg_write_seconds_max", lb, l.maxWriteNanos() / 1e9);
            }
            t.sample("snapbd_mirror_reconciliations_total", labels("volume", me.getKey()), m.reconciliations());
            t.sample("snapbd_mirror_reconcile_copied_bytes_total", labels("volume", me.getKey()), m.bytesCopiedTotal());
            t.sample("snapbd_mirror_reconcile_compared_bytes_total", labels("volume", me.getKey()), m.bytesComparedTotal());
        }

        t.family("snapbd_lun_state_enabled", "gauge", "1 while the export's LUN state counter is enabled (HP).");
        t.family("snapbd_lun_state_counter", "gauge", "The export's LUN state counter: altering requests counted while enabled.");
        t.family("snapbd_lun_state_timestamp_seconds", "gauge", "Time of the last altering request counted, in seconds since the epoch.");
        for (Map.Entry<String, Volume> me : volumes.entrySet()) {
            LunState.Value v = me.getValue().lunState().get();
            String l = labels("export", me.getKey());
            t.sample("snapbd_lun_state_enabled", l, v.enabled() ? 1 : 0);
            t.sample("snapbd_lun_state_counter", l, v.counter());
            t.sample("snapbd_lun_state_timestamp_seconds", l, v.timestamp() / 1e9);
        }

        // ---- kernel attachments and clone jobs ------------------------------------------------------------
        t.family("snapbd_attachment_info", "gauge", "Always 1 per nbd device attached by this server; labels: device, export, state.");
        for (KernelAttachments.Attachment a : attachments.list()) {
            t.sample("snapbd_attachment_info", labels("device", a.device(), "export", a.exportName(), "state", a.state().label()), 1);
        }
        t.family("snapbd_clone_jobs", "gauge", "Snapshot clone jobs known to the server, per state.");
        Map<String, Integer> jobs = new TreeMap<>();
        clones.all().values().forEach(j -> jobs.merge(j.state().label(), 1, Integer::sum));
        jobs.forEach((state, n) -> t.sample("snapbd_clone_jobs", labels("state", state), n));

        Runtime rt = Runtime.getRuntime();
        t.family("snapbd_jvm_heap_used_bytes", "gauge", "Java heap in use.");
        t.sample("snapbd_jvm_heap_used_bytes", "", rt.totalMemory() - rt.freeMemory());
        t.family("snapbd_jvm_heap_max_bytes", "gauge", "Java heap limit (-Xmx).");
        t.sample("snapbd_jvm_heap_max_bytes", "", rt.maxMemory());
        return t.toString();
    }

    /** Upper bounds of the latency buckets, in seconds (Prometheus {@code le}); the last bucket is +Inf. */
    static final double[] BUCKET_SECONDS = {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
            0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

    /**
     * Cumulative counts at or below each bound of {@link #BUCKET_SECONDS}, then +Inf (the total count), from an
     * HdrHistogram in nanoseconds. A value within the histogram's resolution (0.1 %) above a bound counts as
     * below it.
     */
    static long[] buckets(Histogram h) {
        long[] c = new long[BUCKET_SECONDS.length + 1];
        for (int i = 0; i < BUCKET_SECONDS.length; i++) {
            c[i] = h.getCountBetweenValues(0, Math.round(BUCKET_SECONDS[i] * 1e9));
        }
        c[BUCKET_SECONDS.length] = h.getTotalCount();
        return c;
    }

    /** {@code {k1="v1",k2="v2"}} with the exposition format's escaping. */
    static String labels(String... kv) {
        StringBuilder b = new StringBuilder("{");
        for (int i = 0; i < kv.length; i += 2) {
            if (i > 0) {
                b.append(',');
            }
            b.append(kv[i]).append("=\"");
            String v = kv[i + 1] == null ? "" : kv[i + 1];
            for (int j = 0; j < v.length(); j++) {
                char c = v.charAt(j);
                switch (c) {
                    case '\\' -> b.append("\\\\");
                    case '"' -> b.append("\\\"");
                    case '\n' -> b.append("\\n");
                    default -> b.append(c);
                }
            }
            b.append('"');
        }
        return b.append('}').toString();
    }

    static String number(double d) {
        if (d == Math.rint(d) && Math.abs(d) < 1e15) {
            return Long.toString((long) d);
        }
        if (Double.isNaN(d) || Double.isInfinite(d)) {
            return Double.isNaN(d) ? "NaN" : d > 0 ? "+Inf" : "-Inf";
        }
        return BigDecimal.valueOf(d).stripTrailingZeros().toPlainString();
    }

    /**
     * The exposition being written: families in the order they were declared, each one's samples together after
     * its HELP and TYPE lines, as the format requires, whatever order the samples were added in.
     */
    private static final class Text {
        private final Map<String, StringBuilder> families = new LinkedHashMap<>();

        void family(String name, String type, String help) {
            StringBuilder b = new StringBuilder();
            b.append("# HELP ").append(name).append(' ').append(help.replace("\\", "\\\\").replace("\n", "\\n")).append('\n');
            b.append("# TYPE ").append(name).append(' ').append(type).append('\n');
            families.put(name, b);
        }

        void sample(String name, String labels, double value) {
            StringBuilder b = families.get(name);
            if (b == null) {
                for (String suffix : new String[] {"_bucket", "_sum", "_count"}) {
                    if (name.endsWith(suffix)) {
                        b = families.get(name.substring(0, name.length() - suffix.length()));
                    }
                }
            }
            if (b == null) {
                throw new IllegalStateException("metric " + name + " has no family");
            }
            b.append(name).append(labels).append(' ').append(number(value)).append('\n');
        }

        @Override
        public String toString() {
            StringBuilder all = new StringBuilder(16384);
            families.values().forEach(all::append);
            return all.toString();
        }
    }

    @Override
    public synchronized void close() {
        if (http != null) {
            http.stop(0);
            http = null;
        }
        if (executor != null) {
            executor.shutdownNow();
            executor = null;
        }
    }
}
