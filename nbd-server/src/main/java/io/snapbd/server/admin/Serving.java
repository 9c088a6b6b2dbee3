package io.snapbd.server.admin;

import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.snapbd.engine.snapshot.SnapshotRecord;
import io.snapbd.engine.volume.Volume;
import io.snapbd.server.api.Json;
import io.snapbd.server.api.OperationException;
import io.snapbd.server.export.Export;
import io.snapbd.server.export.ExportName;
import io.snapbd.server.export.ExportRegistry;
import io.snapbd.server.kernel.KernelAttachments;
import io.snapbd.server.snapshot.CloneJobs;
import io.snapbd.server.transport.NbdServer;

import java.util.Objects;

/**
 * What the control plane reaches of the running server. {@link Offline}: the CLI works on the data directory while
 * no server runs, so nothing is exported and the commands that need the server say so. {@link Online}: the server's
 * exports, listeners and kernel attachments.
 */
sealed interface Serving {

    /** True inside the running server: exports exist and clone copies run in the background. */
    boolean running();

    /** The export named {@code name}, or null when it is not exported (offline nothing is). */
    Export lookup(String name);

    /** Exports volume {@code v} and each of its snapshots. */
    void exportVolume(Volume v);

    void exportSnapshot(Volume v, SnapshotRecord r);

    /** Exports the target of a clone; it refuses connections until its copy is done. */
    void exportCloneTarget(Volume target, ExportName source);

    void remove(String name);

    /** Refuses, then removes, every export of {@code volume} (the volume and its snapshots): it is being deleted. */
    void removeAll(String volume);

    /** Forgets why {@code volume} was not exported (it has been deleted). */
    void forgetWithheld(String volume);

    /** The server's exports, for commands that only make sense on it; {@code why} is the error offline. */
    ExportRegistry exports(String why) throws OperationException;

    /** The server's kernel attachments; {@code why} is the error offline (or when the server has none). */
    KernelAttachments attachments(String why) throws OperationException;

    /** Adds the running server's part of {@code status}: process, listeners, clones, attachments. Nothing offline. */
    void status(ObjectNode r, CloneJobs clones);

    /** No server runs. */
    final class Offline implements Serving {
        static final Offline INSTANCE = new Offline();

        private Offline() {
        }

        @Override
        public boolean running() {
            return false;
        }

        @Override
        public Export lookup(String name) {
            return null;
        }

        @Override
        public void exportVolume(Volume v) {
        }

        @Override
        public void exportSnapshot(Volume v, SnapshotRecord r) {
        }

        @Override
        public void exportCloneTarget(Volume target, ExportName source) {
        }

        @Override
        public void remove(String name) {
        }

        @Override
        public void removeAll(String volume) {
        }

        @Override
        public void forgetWithheld(String volume) {
        }

        @Override
        public ExportRegistry exports(String why) throws OperationException {
            throw new OperationException(why);
        }

        @Override
        public KernelAttachments attachments(String why) throws OperationException {
            throw new OperationException(why);
        }

        @Override
        public void status(ObjectNode r, CloneJobs clones) {
        }
    }

    /** Inside the running server; {@code attachments} may be null (a server that attaches nothing). */
    record Online(ExportRegistry registry, NbdServer nbd, KernelAttachments kernel, long startedMillis) implements Serving {

        public Online {
            Objects.requireNonNull(registry, "exports");
            Objects.requireNonNull(nbd, "nbd");
        }

        @Override
        public boolean running() {
            return true;
        }

        @Override
        public Export lookup(String name) {
            return registry.lookup(name);
        }

        @Override
        public void exportVolume(Volume v) {
            ControlPlane.exportVolume(registry, v);
        }

        @Override
        public void exportSnapshot(Volume v, SnapshotRecord r) {
            ControlPlane.exportSnapshot(registry, v, r);
        }

        @Override
        public void exportCloneTarget(Volume t, ExportName source) {
            Export te = new Export(t.name(), "snapbd volume " + t.name() + " (clone of " + source + ")", t);
            te.setUnavailable("clone from " + source + " in progress");
            registry.add(te);
        }

        @Override
        public void remove(String name) {
            registry.remove(name);
        }

        @Override
        public void removeAll(String volume) {
            for (Export x : registry.list()) {
                if (ExportName.parse(x.name()).belongsTo(volume)) {
                    x.setUnavailable("volume being deleted");
                    registry.remove(x.name());
                }
            }
        }

        @Override
        public void forgetWithheld(String volume) {
            registry.withhold(volume, null);
        }

        @Override
        public ExportRegistry exports(String why) {
            return registry;
        }

        @Override
        public KernelAttachments attachments(String why) throws OperationException {
            if (kernel == null) {
                throw new OperationException(why);
            }
            return kernel;
        }

        @Override
        public void status(ObjectNode r, CloneJobs clones) {
            r.put("pid", ProcessHandle.current().pid());
            r.put("uptimeSeconds", (System.currentTimeMillis() - startedMillis) / 1000);
            ArrayNode ls = r.putArray("listeners");
            nbd.listenerNames().forEach(ls::add);
            r.put("connections", nbd.activeConnections());
            r.put("connectionsAccepted", nbd.acceptedConnections());
            r.put("connectionsRejected", nbd.rejectedConnections());
            r.put("defaultExport", registry.defaultName());
            ArrayNode cl = r.putArray("clones");
            clones.all().values().forEach(j -> cl.add(Json.MAPPER.valueToTree(j.status())));
            ArrayNode at = r.putArray("attachments");
            if (kernel != null) {
                kernel.list().forEach(a -> at.add(Json.MAPPER.valueToTree(a.status())));
            }
        }
    }
}
