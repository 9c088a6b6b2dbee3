package io.snapbd.server.admin;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.snapbd.engine.snapshot.SnapshotSet;
import io.snapbd.engine.volume.Volume;
import io.snapbd.engine.volume.VolumeCatalog;
import io.snapbd.server.api.Json;
import io.snapbd.server.api.OperationException;
import io.snapbd.server.export.Export;
import io.snapbd.server.export.ExportName;
import io.snapbd.server.export.ExportRegistry;
import io.snapbd.server.export.ExportStats;
import org.HdrHistogram.Histogram;

import java.nio.ByteBuffer;
import java.time.Instant;
import java.util.Arrays;
import java.util.Base64;

/** The {@code stats} command: request counts, bytes and latency percentiles per export, from the server's memory. */
final class StatsHandler {

    private final VolumeCatalog catalog;
    private final Serving serving;

    StatsHandler(VolumeCatalog catalog, Serving serving) {
        this.catalog = catalog;
        this.serving = serving;
    }

    /** Percentiles shown per request type: JSON name, percentile. */
    private static final String[] PERCENTILE_NAMES = {"p50", "p90", "p99", "p99.9", "p99.99"};
    private static final double[] PERCENTILES = {50, 90, 99, 99.9, 99.99};

    /**
     * Request statistics of one export ({@code export}: VOLUME or VOLUME@SNAPSHOT) or, without it, of every export
     * ({@code {"exports": [...]}}). {@code reset}: start a new period after answering; {@code histograms}: add each
     * type's latency histogram, HdrHistogram's compressed encoding in base64 (nanoseconds).
     */
    JsonNode handle(JsonNode req) throws OperationException {
        ExportRegistry exports = serving.exports(
                "stats needs the running server: request statistics live in its memory (start it with 'snapbd serve')");
        String name = ControlPlane.text(req, "export", false);
        boolean reset = req.path("reset").asBoolean(false);
        boolean encoded = req.path("histograms").asBoolean(false);
        if (name != null) {
            Export e = exports.lookup(name);
            if (e == null) {
                throw new OperationException("no export named " + name);
            }
            return statsJson(e, reset, encoded);
        }
        ObjectNode r = Json.MAPPER.createObjectNode();
        r.put("latencyHistograms", exports.latencyHistograms());
        ArrayNode list = r.putArray("exports");
        for (Export e : exports.list()) {
            list.add(statsJson(e, reset, encoded));
        }
        return r;
    }

    private ObjectNode statsJson(Export e, boolean reset, boolean encoded) {
        ExportStats.Snapshot s = e.stats().snapshot(true, reset);
        ObjectNode o = Json.MAPPER.createObjectNode();
        ExportName name = ExportName.parse(e.name());
        o.put("export", e.name());
        o.put("volume", name.volume());
        if (name.isSnapshot()) {
            o.put("snapshot", name.snapshot());
        }
        o.put("readOnly", e.readOnly());
        o.put("connections", e.connections());
        o.put("since", Instant.ofEpochMilli(s.sinceMillis()).toString());
        o.put("seconds", (System.currentTimeMillis() - s.sinceMillis()) / 1000.0);
        o.put("latencyHistograms", s.histograms());
        long requests = 0;
        long errors = 0;
        for (ExportStats.OpStats op : s.ops()) {
            requests += op.requests();
            errors += op.errors();
        }
        o.put("requests", requests);
        o.put("errors", errors);
        o.put("bytesRead", s.op(ExportStats.Op.READ).bytes());
        o.put("bytesWritten", s.op(ExportStats.Op.WRITE).bytes());
        ObjectNode ops = o.putObject("ops");
        for (ExportStats.OpStats op : s.ops()) {
            ObjectNode j = ops.putObject(op.op().label);
            j.put("requests", op.requests());
            j.put("errors", op.errors());
            j.put("bytes", op.bytes());
            Histogram h = op.latency();
            if (h == null) {
                j.putNull("latencyMicros");
                continue;
            }
            ObjectNode l = j.putObject("latencyMicros");
            l.put("count", h.getTotalCount());
            l.put("min", h.getMinValue() / 1000.0);
            for (int i = 0; i < PERCENTILES.length; i++) {
                l.put(PERCENTILE_NAMES[i], h.getValueAtPercentile(PERCENTILES[i]) / 1000.0);
            }
            l.put("max", h.getMaxValue() / 1000.0);
            l.put("mean", Math.round(h.getMean()) / 1000.0);
            if (encoded) {
                ByteBuffer b = ByteBuffer.allocate(h.getNeededByteBufferCapacity());
                int n = h.encodeIntoCompressedByteBuffer(b);
                j.put("hdrHistogram", Base64.getEncoder().encodeToString(Arrays.copyOf(b.array(), n)));
            }
        }
        if (reset) {
            o.put("reset", true);
        }
        Volume v = catalog.openVolumes().get(name.volume());
        if (v != null) {
            o.put("copyOnWriteCopies", v.cowCopies());
            if (v.mirror() != null && !name.isSnapshot()) {
                MirrorHandler.legs(o.putObject("mirror"), v.mirror());
            }
            ControlPlane.saveJson(o, v);
            if (name.isSnapshot()) {
                for (SnapshotSet.Info i : v.snapshots().list()) {
                    if (i.record().name().equals(name.snapshot())) {
                        o.put("snapshotSaveBytesUsed", i.chunksUsed() * v.blockSize());
                    }
                }
            }
        }
        return o;
    }
}
