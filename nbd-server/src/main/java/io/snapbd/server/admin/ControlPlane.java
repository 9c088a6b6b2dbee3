package io.snapbd.server.admin;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.snapbd.engine.volume.Volume;
import io.snapbd.engine.volume.VolumeCatalog;
import io.snapbd.engine.volume.VolumeHeader;
import io.snapbd.server.export.Export;
import io.snapbd.server.export.ExportRegistry;
import io.snapbd.server.transport.NbdServer;

import java.io.IOException;
import java.nio.file.NoSuchFileException;
import java.time.Instant;
import java.util.List;

/**
 * Every management operation, as JSON request → JSON result. The admin socket calls it inside the server;
 * the CLI calls it directly when no server runs, so online and offline behave the same.
 * Requests: {@code {"command": "volume.create", ...}}; see docs/admin-protocol.md.
 */
public final class ControlPlane {

    public static final ObjectMapper JSON = new ObjectMapper();

    private final VolumeCatalog catalog;
    private final ExportRegistry exports;      // null offline
    private final NbdServer nbd;               // null offline
    private final long startedMillis = System.currentTimeMillis();

    public ControlPlane(VolumeCatalog catalog, ExportRegistry exports, NbdServer nbd) {
        this.catalog = catalog;
        this.exports = exports;
        this.nbd = nbd;
    }

    /** A failure whose message is meant for the user as is. */
    public static final class OperationException extends Exception {
        public OperationException(String message) {
            super(message);
        }
    }

    public JsonNode handle(JsonNode request) throws OperationException {
        String command = text(request, "command", true);
        try {
            switch (command) {
                case "status":
                    return status();
                case "volume.list":
                    return volumeList();
                case "volume.create":
                    return volumeCreate(request);
                case "volume.delete":
                    return volumeDelete(request);
                default:
                    throw new OperationException("unknown command '" + command + "'");
            }
        } catch (IllegalArgumentException e) {
            throw new OperationException(e.getMessage());
        } catch (NoSuchFileException e) {
            throw new OperationException(e.getMessage() != null && e.getMessage().startsWith("no ") ? e.getMessage() : "not found: " + e.getMessage());
        } catch (IOException e) {
            throw new OperationException(e.getMessage());
        }
    }

    private JsonNode volumeCreate(JsonNode req) throws IOException, OperationException {
        String name = text(req, "name", true);
        long size = number(req, "size", -1);
        if (size <= 0) {
            throw new OperationException("volume create needs a positive size");
        }
        long save = number(req, "saveSize", Math.min(size, 256L << 20));
        int blockSize = (int) number(req, "blockSize", 4096);
        boolean sparse = req.path("sparse").asBoolean(false);
        if (catalog.exists(name)) {
            throw new OperationException("volume " + name + " already exists");
        }
        Volume.checkGeometry(size, blockSize, save);
        Volume v = catalog.create(name, size, blockSize, save, sparse);
        if (exports != null) {
            exports.add(new Export(v.name(), "snapbd volume " + v.name(), v));
        }
        return volumeJson(name);
    }

    private JsonNode volumeDelete(JsonNode req) throws IOException, OperationException {
        String name = text(req, "name", true);
        boolean force = req.path("force").asBoolean(false);
        if (!catalog.exists(name)) {
            throw new OperationException("no volume named " + name);
        }
        if (exports != null) {
            Export e = exports.lookup(name);
            if (e != null && e.connections() > 0 && !force) {
                throw new OperationException("volume " + name + " has " + e.connections()
                        + " client connection(s); disconnect them or use --force");
            }
            if (e != null) {
                e.setUnavailable("being deleted");
                exports.remove(name);
            }
        }
        catalog.delete(name);
        ObjectNode r = JSON.createObjectNode();
        r.put("deleted", name);
        return r;
    }

    private JsonNode volumeList() throws IOException {
        ArrayNode list = JSON.createArrayNode();
        for (String name : catalog.names()) {
            list.add(volumeJson(name));
        }
        ObjectNode r = JSON.createObjectNode();
        r.set("volumes", list);
        return r;
    }

    private ObjectNode volumeJson(String name) throws IOException {
        VolumeHeader h = catalog.header(name);
        ObjectNode o = JSON.createObjectNode();
        o.put("name", name);
        o.put("uuid", h.uuid().toString());
        o.put("size", h.size());
        o.put("blockSize", h.blockSize());
        o.put("saveSize", h.saveSize());
        o.put("sparse", h.sparse());
        o.put("created", Instant.ofEpochMilli(h.createdNanos() / 1_000_000L).toString());
        Volume v = catalog.openVolumes().get(name);
        if (v != null) {
            o.put("open", true);
            o.put("blocksInUse", v.blocksInUse());
            o.put("bytesInUse", v.blocksInUse() * h.blockSize());
            o.put("recoveredFromUncleanStop", !v.recovery().wasClean());
        } else {
            o.put("open", false);
            o.put("cleanlyClosed", h.clean());
        }
        if (exports != null) {
            Export e = exports.lookup(name);
            o.put("export", name);
            o.put("connections", e == null ? 0 : e.connections());
            o.put("requests", e == null ? 0 : e.requests().get());
            o.put("errors", e == null ? 0 : e.errors().get());
        }
        return o;
    }

    private JsonNode status() throws IOException {
        ObjectNode r = JSON.createObjectNode();
        r.put("dataDir", catalog.root().toAbsolutePath().toString());
        r.put("server", nbd != null ? "running" : "not running");
        r.put("fileSpace", catalog.space().describe());
        if (nbd != null) {
            r.put("pid", ProcessHandle.current().pid());
            r.put("uptimeSeconds", (System.currentTimeMillis() - startedMillis) / 1000);
            ArrayNode ls = r.putArray("listeners");
            nbd.listenerNames().forEach(ls::add);
            r.put("connections", nbd.activeConnections());
            r.put("connectionsAccepted", nbd.acceptedConnections());
            r.put("connectionsRejected", nbd.rejectedConnections());
            r.put("defaultExport", exports.defaultName());
        }
        List<String> names = catalog.names();
        ArrayNode vols = r.putArray("volumes");
        for (String n : names) {
            vols.add(volumeJson(n));
        }
        return r;
    }

    private static String text(JsonNode req, String field, boolean required) throws OperationException {
        JsonNode n = req.get(field);
        if (n == null || !n.isTextual()) {
            if (required) {
                throw new OperationException("request needs a text field '" + field + "'");
            }
            return null;
        }
        return n.asText();
    }

    private static long number(JsonNode req, String field, long dflt) throws OperationException {
        JsonNode n = req.get(field);
        if (n == null || n.isNull()) {
            return dflt;
        }
        if (!n.canConvertToLong()) {
            throw new OperationException("field '" + field + "' must be a whole number");
        }
        return n.asLong();
    }
}
