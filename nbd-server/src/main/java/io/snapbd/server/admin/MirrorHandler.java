package io.snapbd.server.admin;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.snapbd.engine.mirror.MirrorSet;
import io.snapbd.engine.mirror.Reconciler;
import io.snapbd.engine.volume.Volume;
import io.snapbd.server.api.Json;
import io.snapbd.server.api.OperationException;

import java.io.IOException;
import java.time.Instant;

/**
 * {@code mirror.status} and {@code mirror.reconcile} (docs/mirrors.md, docs/admin-protocol.md): the legs of a
 * mirrored volume, their state and figures, and the last reconciliation, per leg and in all.
 */
final class MirrorHandler {

    private MirrorHandler() {
    }

    static MirrorSet mirror(Volume v) throws OperationException {
        MirrorSet m = v.mirror();
        if (m == null) {
            throw new OperationException("volume " + v.name() + " is not mirrored (create it with --mirror)");
        }
        return m;
    }

    static JsonNode status(Volume v) throws OperationException {
        MirrorSet m = mirror(v);
        ObjectNode o = Json.MAPPER.createObjectNode();
        o.put("volume", v.name());
        legs(o, m);
        return o;
    }

    static JsonNode reconcile(Volume v) throws OperationException, IOException {
        MirrorSet m = mirror(v);
        m.reconcile();
        ObjectNode o = Json.MAPPER.createObjectNode();
        o.put("volume", v.name());
        legs(o, m);
        return o;
    }

    /**
     * {@code mirror.add} while the volume is served: {@code leg} (a file path or an NBD URI), optional
     * {@code sparse}, {@code force}. Answers once the leg is copied, forced and listed (in sync); meanwhile
     * {@code mirror.status} shows it {@code resyncing} with the copy's progress.
     */
    static JsonNode add(Volume v, JsonNode req, io.snapbd.engine.io.FileSpace space) throws OperationException, IOException {
        MirrorSet m = mirror(v);
        String leg = leg(req);
        int n;
        try {
            n = m.addLeg(leg, req.path("sparse").asBoolean(false), req.path("force").asBoolean(false), space, v,
                    Reconciler.Progress.NONE);
        } catch (IllegalArgumentException e) {
            throw new OperationException("volume " + v.name() + ": " + e.getMessage());
        }
        ObjectNode o = Json.MAPPER.createObjectNode();
        o.put("volume", v.name());
        o.put("added", n);
        legs(o, m);
        return o;
    }

    /** {@code mirror.remove} while the volume is served: {@code leg}; not the last extra leg. */
    static JsonNode remove(Volume v, JsonNode req) throws OperationException, IOException {
        MirrorSet m = mirror(v);
        try {
            m.removeLeg(leg(req));
        } catch (IllegalArgumentException e) {
            throw new OperationException("volume " + v.name() + ": " + e.getMessage());
        }
        ObjectNode o = Json.MAPPER.createObjectNode();
        o.put("volume", v.name());
        legs(o, m);
        return o;
    }

    private static String leg(JsonNode req) throws OperationException {
        String leg = req.path("leg").asText("");
        if (leg.isEmpty()) {
            throw new OperationException("mirror add/remove needs a leg (a file path or an NBD URI)");
        }
        if (!leg.contains("://") && !leg.startsWith("/")) {
            throw new OperationException("mirror leg " + leg + ": a file leg must be an absolute path");
        }
        return leg;
    }

    /** {@code legs} (one object per leg) and {@code lastReconciliation}, also used by {@code stats}. */
    static void legs(ObjectNode o, MirrorSet m) {
        MirrorSet.Reconciliation r = m.lastReconciliation();
        ArrayNode legs = o.putArray("legs");
        for (MirrorSet.LegStatus l : m.status()) {
            ObjectNode j = legs.addObject();
            j.put("leg", l.leg());
            j.put("uri", l.uri());
            j.put("state", l.state());
            j.put("tableEntries", l.tableEntries());
            j.put("writes", l.writes());
            j.put("writeLatencyMicrosMean", l.writes() == 0 ? 0 : l.writeNanos() / 1000.0 / l.writes());
            j.put("writeLatencyMicrosMax", l.maxWriteNanos() / 1000.0);
            j.put("tableForces", l.tableForces());
            j.put("entriesMatched", r == null ? 0 : r.report().entriesMatched());
            j.put("rangesCopied", l.rangesCopiedIn());
            j.put("bytesCompared", l.bytesCompared());
            j.put("bytesCopied", l.bytesCopiedIn());
            j.put("bytesCopiedFrom", l.bytesCopiedOut());
            j.put("direction", l.direction());
            j.put("bytesCopiedTotal", l.bytesCopiedInTotal());
            j.put("missedRegionBytes", l.missedRegionBytes());
            if (l.error() != null) {
                j.put("error", l.error());
            }
        }
        if (r == null) {
            o.putNull("lastReconciliation");
        } else {
            Reconciler.Report rep = r.report();
            ObjectNode j = o.putObject("lastReconciliation");
            j.put("at", Instant.ofEpochMilli(r.atMillis()).toString());
            j.put("atOpen", r.atOpen());
            j.put("entriesMatched", rep.entriesMatched());
            j.put("entriesUnmatched", rep.entriesUnmatched());
            j.put("rangesCopied", rep.rangesCopied());
            j.put("bytesCompared", rep.bytesCompared());
            j.put("bytesCopied", rep.bytesCopied());
        }
        long[] p = m.copyProgress();
        o.put("degradedLegs", m.degradedLegs());
        ObjectNode c = o.putObject("copy");
        c.put("bytesDone", p[0]);
        c.put("bytesTotal", p[1]);
        ObjectNode h = o.putObject("hotRegions");
        h.put("now", m.hotRegions());
        h.put("cap", m.hotRegionCap());
        h.put("regionBytes", m.regionBytes());
        h.put("regionEntries", m.regionEntries());
        h.put("cooled", m.regionsCooled());
        h.put("unforcedChanges", m.unforcedEntryChanges());
        h.put("capFallbacks", m.capFallbacks());
        o.put("reconciliations", m.reconciliations());
        o.put("bytesComparedTotal", m.bytesComparedTotal());
        o.put("bytesCopiedTotal", m.bytesCopiedTotal());
    }
}
