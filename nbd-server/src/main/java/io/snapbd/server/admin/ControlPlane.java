package io.snapbd.server.admin;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.snapbd.engine.lun.LunState;
import io.snapbd.engine.snapshot.Differential;
import io.snapbd.engine.snapshot.NoSaveVolumeException;
import io.snapbd.engine.snapshot.SnapshotRecord;
import io.snapbd.engine.snapshot.SnapshotSet;
import io.snapbd.engine.volume.RestoreProgress;
import io.snapbd.engine.volume.Volume;
import io.snapbd.engine.volume.VolumeCatalog;
import io.snapbd.engine.volume.VolumeHeader;
import io.snapbd.engine.volume.VolumeSetAsideException;
import io.snapbd.server.api.CloneState;
import io.snapbd.server.api.Deleted;
import io.snapbd.server.api.Json;
import io.snapbd.server.api.LunStatus;
import io.snapbd.server.api.OperationException;
import io.snapbd.server.api.RestoreResult;
import io.snapbd.server.api.RestoreStatus;
import io.snapbd.server.api.SaveSpace;
import io.snapbd.server.api.SnapshotDiff;
import io.snapbd.server.api.SnapshotList;
import io.snapbd.server.api.SnapshotStatus;
import io.snapbd.server.api.VolumeList;
import io.snapbd.server.api.VolumeState;
import io.snapbd.server.api.VolumeStatus;
import io.snapbd.server.config.AttachSpec;
import io.snapbd.server.export.Export;
import io.snapbd.server.export.ExportName;
import io.snapbd.server.export.ExportRegistry;
import io.snapbd.server.kernel.KernelAttachments;
import io.snapbd.server.snapshot.CloneJobs;
import io.snapbd.server.transport.NbdServer;

import java.io.IOException;
import java.nio.file.NoSuchFileException;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;

/**
 * Every management operation, as JSON request → JSON result. The admin socket calls it inside the server;
 * the CLI calls it directly when no server runs, so online and offline behave the same.
 * Requests: {@code {"command": "volume.create", ...}}; see docs/admin-protocol.md.
 */
public final class ControlPlane {

    private final VolumeCatalog catalog;
    private final Serving serving;
    private final CloneJobs clones;
    private final StatsHandler stats;
    private volatile Restarter restarter;
    private volatile Preparer preparer;

    /** The running server's in-place restart ({@code "restart"}); absent offline. */
    @FunctionalInterface
    public interface Restarter {
        JsonNode restart() throws OperationException;
    }

    /** Lets {@code {"command":"restart"}} start the server's in-place restart. */
    public void onRestart(Restarter r) {
        restarter = r;
    }

    /**
     * Lets {@code {"command":"restart.prepare"}} prepare a service manager's restart: a successor ready to take over
     * at this server's stop. A distinct command, so that a server too old for it refuses it rather than restarting.
     */
    public void onPrepareRestart(Preparer r) {
        preparer = r;
    }

    /** The running server's restart preparation ({@code "restart.prepare"}, optional {@code "readyTimeoutSeconds"}). */
    @FunctionalInterface
    public interface Preparer {
        JsonNode prepare(java.time.Duration readyTimeout) throws OperationException;
    }

    /** Inside the running server; {@code attachments} may be null (then attach and detach are refused). */
    public ControlPlane(VolumeCatalog catalog, ExportRegistry exports, NbdServer nbd, CloneJobs clones,
                        KernelAttachments attachments) {
        this(catalog, new Serving.Online(exports, nbd, attachments, System.currentTimeMillis()), clones);
    }

    private ControlPlane(VolumeCatalog catalog, Serving serving, CloneJobs clones) {
        this.catalog = catalog;
        this.serving = serving;
        this.clones = clones;
        this.stats = new StatsHandler(catalog, serving);
    }

    /** For the CLI while no server runs: nothing is exported, clones copy before the command returns. */
    public static ControlPlane offline(VolumeCatalog catalog) {
        return new ControlPlane(catalog, Serving.Offline.INSTANCE, CloneJobs.offline(catalog));
    }

    /** Exports a volume and each of its snapshots (VOLUME@SNAPSHOT), terminated ones included. */
    public static void exportVolume(ExportRegistry exports, Volume v) {
        exports.add(new Export(v.name(), "snapbd volume " + v.name(), v));
        for (SnapshotSet.Info i : v.snapshots().list()) {
            exportSnapshot(exports, v, i.record());
        }
    }

    static void exportSnapshot(ExportRegistry exports, Volume v, SnapshotRecord r) {
        String name = ExportName.format(v.name(), r.name());
        if (exports.lookup(name) == null) {
            exports.add(new Export(name, "snapshot " + r.name() + " of " + v.name() + " (read-only)",
                    r.state() == SnapshotRecord.State.ACTIVE ? v.snapshotView(r.name()) : new GoneDevice(name, v, r)));
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
                case "snapshot.create":
                    return snapshotCreate(request);
                case "snapshot.list":
                    return snapshotList(request);
                case "snapshot.delete":
                    return snapshotDelete(request);
                case "snapshot.restore":
                    return snapshotRestore(request);
                case "snapshot.clone":
                    return snapshotClone(request);
                case "clone.status":
                    return cloneStatus(request);
                case "snapshot.diff":
                    return snapshotDiff(request);
                case "lun.get":
                case "lun.enable":
                case "lun.disable":
                    return lunState(command, request);
                case "attach":
                    return attach(request);
                case "detach":
                    return detach(request);
                case "stats":
                    return stats.handle(request);
                case "mirror.status":
                    return MirrorHandler.status(volume(request));
                case "mirror.reconcile":
                    return MirrorHandler.reconcile(volume(request));
                case "mirror.add":
                    return MirrorHandler.add(volume(request), request, catalog.space());
                case "restart": {
                    Restarter r = restarter;
                    if (r == null) {
                        throw new OperationException("restart needs the running server: start it with 'snapbd serve' "
                                + "(or systemctl start snapbd)");
                    }
                    return r.restart();
                }
                case "restart.prepare": {
                    Preparer r = preparer;
                    if (r == null) {
                        throw new OperationException("restart.prepare needs the running server: start it with 'snapbd serve' "
                                + "(or systemctl start snapbd)");
                    }
                    long t = request.path("readyTimeoutSeconds").asLong(60);
                    if (t <= 0) {
                        throw new OperationException("readyTimeoutSeconds must be positive");
                    }
                    return r.prepare(java.time.Duration.ofSeconds(t));
                }
                case "mirror.remove":
                    return MirrorHandler.remove(volume(request), request);
                default:
                    throw new OperationException("unknown command '" + command + "'");
            }
        } catch (NoSaveVolumeException e) {
            throw new OperationException(e.getMessage(), OperationException.NO_SAVE_VOLUME);
        } catch (IllegalArgumentException e) {
            throw new OperationException(e.getMessage());
        } catch (NoSuchFileException e) {
            throw new OperationException(e.getMessage() != null && e.getMessage().startsWith("no ") ? e.getMessage() : "not found: " + e.getMessage());
        } catch (IOException e) {
            throw new OperationException(e.getMessage());
        }
    }

    /** Kernel attachments live in the running server; offline there is nothing to attach with. */
    private KernelAttachments kernel(String what) throws OperationException {
        return serving.attachments(what + " needs the running server: start it with 'snapbd serve' (as root, with the nbd module loaded)");
    }

    /** {@code {"command":"attach","export":"vol0","device":"/dev/nbd0","readOnly":false,"timeout":30}}. */
    private JsonNode attach(JsonNode req) throws OperationException {
        KernelAttachments kernel = kernel("attach");
        JsonNode t = req.get("timeout");
        Integer timeout = t == null || t.isNull() ? null : t.asInt();
        AttachSpec spec = new AttachSpec(req.path("export").asText(""), req.path("device").asText(""),
                req.path("readOnly").asBoolean(false), timeout, "admin request");
        try {
            return json(kernel.attach(spec).status());
        } catch (KernelAttachments.AttachException e) {
            throw new OperationException(e.getMessage());
        }
    }

    /** {@code {"command":"detach","device":"/dev/nbd0","force":false}}. */
    private JsonNode detach(JsonNode req) throws OperationException {
        KernelAttachments kernel = kernel("detach");
        String device = AttachSpec.normalizeDevice(req.path("device").asText(""));
        try {
            return json(kernel.detach(device, req.path("force").asBoolean(false)));
        } catch (KernelAttachments.AttachException e) {
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
        List<String> mirrors = new ArrayList<>();
        for (JsonNode m : req.path("mirrors")) {
            mirrors.add(m.asText());
        }
        // force: make a leg that holds another volume's tag table (overwriting that volume's leg)
        Volume v = catalog.create(name, size, blockSize, save, sparse, mirrors, req.path("force").asBoolean(false));
        serving.exportVolume(v);
        return json(volumeStatus(name));
    }

    // ---- snapshots -----------------------------------------------------------------------------------------

    private Volume volume(JsonNode req) throws IOException, OperationException {
        String name = text(req, "volume", true);
        if (!catalog.exists(name)) {
            throw new OperationException("no volume named " + name);
        }
        return catalog.open(name);
    }

    private JsonNode snapshotCreate(JsonNode req) throws IOException, OperationException {
        Volume v = volume(req);
        String name = text(req, "name", true);
        long t0 = System.nanoTime();
        SnapshotRecord r = v.createSnapshot(name);
        long micros = (System.nanoTime() - t0) / 1000;
        serving.exportSnapshot(v, r);
        return json(SnapshotStatus.of(v, r, true, 0).created(ExportName.format(v.name(), r.name()), micros));
    }

    private JsonNode snapshotList(JsonNode req) throws IOException, OperationException {
        Volume v = volume(req);
        List<SnapshotStatus> list = new ArrayList<>();
        RestoreProgress restoring = v.restoreProgress();
        for (SnapshotSet.Info i : v.snapshots().list()) {
            SnapshotStatus s = SnapshotStatus.of(v, i.record(), i.active(), i.chunksUsed());
            list.add(restoring != null && restoring.snapshot().equals(i.record().name()) ? s.asRestoreSource() : s);
        }
        return json(new SnapshotList(v.name(), list, RestoreStatus.of(v), SaveSpace.of(v)));
    }

    /** Adds the volume's {@code saveVolume} to a stats answer. */
    static void saveJson(ObjectNode o, Volume v) {
        o.set("saveVolume", Json.MAPPER.valueToTree(SaveSpace.of(v)));
    }

    private JsonNode snapshotDelete(JsonNode req) throws IOException, OperationException {
        Volume v = volume(req);
        String name = text(req, "name", true);
        boolean force = req.path("force").asBoolean(false);
        if (v.snapshots().record(name) == null) {
            throw new OperationException("volume " + v.name() + " has no snapshot named " + name);
        }
        String cloneTarget = clones.cloneReading(v.name(), name);
        if (cloneTarget != null) {
            throw new OperationException("snapshot " + name + " is being cloned into " + cloneTarget + "; wait for the copy to finish");
        }
        String exportName = ExportName.format(v.name(), name);
        Export e = serving.lookup(exportName);
        if (e != null && e.connections() > 0 && !force) {
            throw new OperationException("snapshot export " + exportName + " has " + e.connections()
                    + " client connection(s); disconnect them or use --force");
        }
        v.deleteSnapshot(name);
        if (e != null) {
            serving.remove(exportName);
        }
        return json(new Deleted(exportName, SaveSpace.of(v)));
    }

    private JsonNode snapshotRestore(JsonNode req) throws IOException, OperationException {
        Volume v = volume(req);
        String name = text(req, "name", true);
        boolean force = req.path("force").asBoolean(false);
        Export e = serving.lookup(v.name());
        if (e != null && e.connections() > 0 && !force) {
            throw new OperationException("volume " + v.name() + " is attached read-write by " + e.connections()
                    + " client(s); restoring under them would change their data: disconnect them or use --force");
        }
        long t0 = System.nanoTime();
        v.lunState().onAlteringRequest();      // a restore alters the export
        // New clients would see production half restored: they are refused until it is done.
        String unavailableBefore = e == null ? null : e.unavailableReason();
        if (e != null && unavailableBefore == null) {
            e.setUnavailable("restore from snapshot " + name + " in progress");
        }
        long changed;
        try {
            changed = v.restore(name);
        } finally {
            if (e != null && unavailableBefore == null) {
                e.setUnavailable(null);
            }
        }
        return json(new RestoreResult(v.name(), name, changed, (System.nanoTime() - t0) / 1_000_000));
    }

    private JsonNode snapshotClone(JsonNode req) throws IOException, OperationException {
        Volume v = volume(req);
        String name = text(req, "name", true);
        String target = text(req, "target", true);
        SnapshotRecord r = v.snapshots().record(name);
        if (r == null) {
            throw new OperationException("volume " + v.name() + " has no snapshot named " + name);
        }
        if (r.state() != SnapshotRecord.State.ACTIVE) {
            throw new OperationException("snapshot " + name + " is invalid (" + r.reason() + ") and cannot be cloned");
        }
        if (catalog.exists(target)) {
            throw new OperationException("volume " + target + " already exists");
        }
        long save = number(req, "saveSize", v.header().saveSize());
        boolean track = req.path("track").asBoolean(false);
        List<String> mirrors = new ArrayList<>();
        for (JsonNode m : req.path("mirrors")) {
            mirrors.add(m.asText());
        }
        // The marker first (forced): a power loss after the target's creation then restarts the copy at the next
        // start, instead of leaving a target that reads as complete with part of the copy missing.
        clones.mark(v.name(), name, target);
        // A mirrored target: the copier writes through the volume's write path, so every leg gets the copy.
        Volume t;
        try {
            t = catalog.create(target, v.size(), v.blockSize(), save, false, mirrors);
        } catch (IOException | RuntimeException e) {
            clones.unmark(target);
            throw e;
        }
        if (track) {
            // Before the volume is exported to anyone: every write from here on, the copy's included, counts.
            t.lunState().enable();
        }
        serving.exportCloneTarget(t, ExportName.ofSnapshot(v.name(), name));
        CloneJobs.Job job = clones.start(v.name(), name, target);
        return Json.MAPPER.valueToTree(job.status());
    }

    /** Extents changed (or unused) from snapshot OLDER to snapshot YOUNGER (docs/snapshots.md, differential), ascending. */
    private JsonNode snapshotDiff(JsonNode req) throws IOException, OperationException {
        Volume v = volume(req);
        String older = text(req, "older", true);
        String younger = text(req, "younger", true);
        Differential d;
        try {
            d = v.snapshots().differential(older, younger);
        } catch (IllegalArgumentException e) {
            throw new OperationException(e.getMessage());
        }
        List<SnapshotDiff.Extent> extents = new ArrayList<>();
        long[] totals = new long[2];
        int shift = Integer.numberOfTrailingZeros(v.blockSize());
        long t0 = System.nanoTime();
        d.scan(0, v.size() >>> shift, (first, count, state) -> {
            if (state != Differential.State.UNCHANGED) {
                boolean changed = state == Differential.State.CHANGED;
                extents.add(new SnapshotDiff.Extent(first << shift, count << shift,
                        changed ? SnapshotDiff.State.CHANGED : SnapshotDiff.State.UNUSED));
                totals[changed ? 0 : 1] += count << shift;
            }
            return true;
        });
        return json(new SnapshotDiff(v.name(), older, younger, v.blockSize(), extents, totals[0], totals[1],
                (System.nanoTime() - t0) / 1000));
    }

    /**
     * ENABLE / DISABLE / GET of an export's LUN state, with the token a backup tool saves (docs/lun-state.md).
     * A snapshot export answers its state at creation and the token {@code UUID@SEQUENCE} while it is active.
     */
    private JsonNode lunState(String command, JsonNode req) throws IOException, OperationException {
        String export = text(req, "export", true);
        ExportName en = ExportName.parse(export);
        if (!catalog.exists(en.volume())) {
            throw new OperationException("no export named " + export);
        }
        Volume v = catalog.open(en.volume());
        if (en.isSnapshot()) {
            SnapshotRecord r = v.snapshots().record(en.snapshot());
            if (r == null) {
                throw new OperationException("no export named " + export);
            }
            if (!command.equals("lun.get")) {
                throw new OperationException(export + " is a read-only snapshot: its LUN state is fixed at creation");
            }
            boolean active = r.state() == SnapshotRecord.State.ACTIVE;
            return json(new LunStatus(export, r.lunEnabled(), r.lunCounter(), r.lunTimestamp(), true,
                    v.header().uuid().toString(), active ? LunState.snapshotToken(v.header().uuid(), r.seq()) : null));
        }
        LunState.Value val = switch (command) {
            case "lun.enable" -> v.lunState().enable();
            case "lun.disable" -> v.lunState().disable();
            default -> v.lunState().get();
        };
        return json(LunStatus.of(v.lunState(), val).forExport(export));
    }

    private JsonNode cloneStatus(JsonNode req) throws OperationException {
        String target = text(req, "target", true);
        CloneJobs.Job j = clones.get(target);
        if (j == null) {
            throw new OperationException("no clone into " + target + " is known to this server");
        }
        return Json.MAPPER.valueToTree(j.status());
    }

    private JsonNode volumeDelete(JsonNode req) throws IOException, OperationException {
        String name = text(req, "name", true);
        boolean force = req.path("force").asBoolean(false);
        if (!catalog.exists(name)) {
            throw new OperationException("no volume named " + name);
        }
        String aside = catalog.setAsideReason(name);
        if (aside != null && !force) {
            throw new OperationException("volume " + name + " is set aside (" + aside + "); deleting it discards its data "
                    + "for good: repeat with --force to delete it, or stop the server and restore its directory from a backup");
        }
        Export e = serving.lookup(name);
        if (e != null && e.connections() > 0 && !force) {
            throw new OperationException("volume " + name + " has " + e.connections()
                    + " client connection(s); disconnect them or use --force");
        }
        serving.removeAll(name);
        for (CloneJobs.Job j : clones.all().values()) {
            if (j.source().belongsTo(name) && j.state() == CloneState.COPYING) {
                throw new OperationException("volume " + name + " is the source of a running clone into " + j.target());
            }
        }
        clones.forget(name);
        catalog.delete(name);
        serving.forgetWithheld(name);
        return json(new Deleted(name, null));
    }

    private JsonNode volumeList() throws IOException {
        List<VolumeStatus> list = new ArrayList<>();
        for (String name : catalog.names()) {
            list.add(volumeStatus(name));
        }
        return json(new VolumeList(list));
    }

    /**
     * One volume for listings (its fields in {@link VolumeStatus}): open (served, or opened by this command), closed
     * (offline, not opened), set aside (its open failed: not served; {@code reason} says why, naming the file) or
     * damaged (offline: its volume.meta cannot be read; {@code reason}).
     */
    private VolumeStatus volumeStatus(String name) throws IOException {
        String aside = catalog.setAsideReason(name);
        VolumeHeader h;
        try {
            h = catalog.header(name);
        } catch (IOException e) {
            return aside != null ? VolumeStatus.unreadable(name, VolumeState.SET_ASIDE, aside)
                    : VolumeStatus.unreadable(name, VolumeState.DAMAGED, VolumeSetAsideException.reasonOf(e));
        }
        Volume v = catalog.openVolumes().get(name);
        VolumeState state = v != null ? VolumeState.OPEN : aside != null ? VolumeState.SET_ASIDE : VolumeState.CLOSED;
        String created = Instant.ofEpochMilli(h.createdNanos() / 1_000_000L).toString();
        VolumeStatus s;
        if (v != null) {
            s = new VolumeStatus(name, state, null, h.uuid().toString(), h.size(), h.blockSize(), h.saveSize(), h.sparse(),
                    created, true, v.blocksInUse(), v.blocksInUse() * h.blockSize(), !v.recovery().wasClean(),
                    v.snapshots().list().size(), v.cowCopies(), SaveSpace.of(v), RestoreStatus.of(v), null,
                    null, null, null, null);
        } else {
            s = new VolumeStatus(name, state, aside, h.uuid().toString(), h.size(), h.blockSize(), h.saveSize(), h.sparse(),
                    created, false, null, null, null, null, null, null, null, h.clean(),
                    null, null, null, null);
        }
        if (serving.running() && v != null) {
            Export e = serving.lookup(name);
            s = e == null ? s.served(0, 0, 0) : s.served(e.connections(), e.requests().get(), e.errors().get());
        }
        return s;
    }

    private static JsonNode json(Object o) {
        return Json.MAPPER.valueToTree(o);
    }

    private JsonNode status() throws IOException {
        ObjectNode r = Json.MAPPER.createObjectNode();
        r.put("dataDir", catalog.root().toAbsolutePath().toString());
        r.put("server", serving.running() ? "running" : "not running");
        r.put("fileSpace", catalog.space().describe());
        serving.status(r, clones);
        List<String> names = catalog.names();
        r.put("volumesSetAside", catalog.setAside().size());
        ArrayNode vols = r.putArray("volumes");
        for (String n : names) {
            vols.add(json(volumeStatus(n)));
        }
        return r;
    }

    static String text(JsonNode req, String field, boolean required) throws OperationException {
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
