package io.snapbd.server.snapshot;

import com.fasterxml.jackson.databind.node.ObjectNode;
import io.snapbd.engine.snapshot.CloneCopier;
import io.snapbd.engine.snapshot.SnapshotView;
import io.snapbd.engine.volume.Volume;
import io.snapbd.engine.volume.VolumeCatalog;
import io.snapbd.server.Log;
import io.snapbd.server.admin.ControlPlane;
import io.snapbd.server.export.Export;
import io.snapbd.server.export.ExportRegistry;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

/**
 * Background copies of snapshots into new volumes. The target's export refuses connections until its copy
 * completes. A marker {@code DIR/clones/TARGET} (holding VOLUME@SNAPSHOT) survives restarts, so an
 * interrupted copy starts over when the server starts again.
 *
 * <p>When the copy is complete, the target's LUN state is read <em>before</em> its export accepts connections:
 * with tracking enabled (clone --track) that value is exactly the state of the finished copy, the token to
 * save, reported by {@link Job#json()} as {@code lunState}.
 */
public final class CloneJobs {

    /** One copy. */
    public static final class Job {
        final String source;
        final String target;
        volatile CloneCopier copier;
        volatile String state = "copying";
        volatile String error;
        volatile boolean cancel;
        /** The target's LUN state at the end of the copy, before anyone could connect; null until done. */
        volatile ObjectNode lunState;
        final long started = System.currentTimeMillis();

        Job(String source, String target) {
            this.source = source;
            this.target = target;
        }

        public synchronized ObjectNode json() {
            ObjectNode o = ControlPlane.JSON.createObjectNode();
            o.put("source", source);
            o.put("target", target);
            o.put("state", state);
            CloneCopier c = copier;
            long total = c == null ? -1 : c.total();
            long done = c == null ? 0 : c.done();
            o.put("bytesDone", done);
            o.put("bytesTotal", total);
            o.put("percent", total <= 0 ? ("done".equals(state) ? 100.0 : 0.0) : Math.floor(1000.0 * done / total) / 10);
            o.put("elapsedSeconds", (System.currentTimeMillis() - started) / 1000.0);
            if (error != null) {
                o.put("error", error);
            }
            if (lunState != null) {
                o.set("lunState", lunState);
            }
            return o;
        }
    }

    private final VolumeCatalog catalog;
    private final ExportRegistry exports;      // null offline
    private final Map<String, Job> jobs = new ConcurrentHashMap<>();

    public CloneJobs(VolumeCatalog catalog, ExportRegistry exports) {
        this.catalog = catalog;
        this.exports = exports;
    }

    private Path markerDir() {
        return catalog.root().resolve("clones");
    }

    public Job get(String target) {
        return jobs.get(target);
    }

    public Map<String, Job> all() {
        return Map.copyOf(jobs);
    }

    /** True while some copy reads from VOLUME@SNAPSHOT. */
    public String cloneReading(String volume, String snapshot) {
        String src = volume + "@" + snapshot;
        for (Job j : jobs.values()) {
            if (j.source.equals(src) && "copying".equals(j.state)) {
                return j.target;
            }
        }
        return null;
    }

    /** Starts (or, after a restart, restarts) the copy of {@code source} into the existing volume {@code target}. */
    public Job start(String volume, String snapshot, String target, boolean background) throws IOException {
        Files.createDirectories(markerDir());
        Files.writeString(markerDir().resolve(target), volume + "@" + snapshot + "\n", StandardCharsets.UTF_8);
        Job job = new Job(volume + "@" + snapshot, target);
        jobs.put(target, job);
        Export targetExport = exports == null ? null : exports.lookup(target);
        if (targetExport != null) {
            targetExport.setUnavailable("clone from " + job.source + " in progress");
        }
        Runnable body = () -> run(job, volume, snapshot, targetExport);
        if (background) {
            Thread t = new Thread(body, "clone " + target);
            t.setDaemon(true);
            t.start();
        } else {
            body.run();
        }
        return job;
    }

    private void run(Job job, String volume, String snapshot, Export targetExport) {
        try {
            Volume src = catalog.open(volume);
            SnapshotView view = src.snapshotView(snapshot);
            Volume dst = catalog.open(job.target);
            CloneCopier copier = new CloneCopier(view, dst);
            job.copier = copier;
            Log.info("clone %s -> %s started", job.source, job.target);
            if (!copier.run(() -> job.cancel)) {
                job.state = "cancelled";
                return;
            }
            Files.deleteIfExists(markerDir().resolve(job.target));
            // The value at the end of the copy, taken while the export still refuses connections.
            job.lunState = ControlPlane.lunJson(ControlPlane.JSON.createObjectNode(), dst.lunState(), dst.lunState().get());
            synchronized (job) {    // json() sees "copying" with the export closed or "done" with it open
                if (targetExport != null) {
                    targetExport.setUnavailable(null);
                }
                job.state = "done";
            }
            Log.info("clone %s -> %s done: %d bytes", job.source, job.target, copier.done());
        } catch (IOException | RuntimeException e) {
            job.state = "failed";
            job.error = e.getMessage();
            if (targetExport != null) {
                targetExport.setUnavailable("clone from " + job.source + " failed: " + e.getMessage());
            }
            Log.error("clone %s -> %s failed: %s", job.source, job.target, e.getMessage());
        }
    }

    /** Restarts copies interrupted by a stop (markers left in DIR/clones). */
    public void resumeInterrupted() throws IOException {
        if (!Files.isDirectory(markerDir())) {
            return;
        }
        try (var files = Files.list(markerDir())) {
            for (Path m : (Iterable<Path>) files::iterator) {
                String target = m.getFileName().toString();
                String src = Files.readString(m, StandardCharsets.UTF_8).strip();
                int at = src.indexOf('@');
                if (at <= 0 || !catalog.exists(target)) {
                    Log.warn("ignoring clone marker %s: '%s'", m, src);
                    continue;
                }
                Log.info("restarting interrupted clone %s -> %s", src, target);
                try {
                    start(src.substring(0, at), src.substring(at + 1), target, true);
                } catch (IOException | IllegalArgumentException e) {
                    // e.g. its source or target volume is set aside: the other volumes are served all the same
                    Log.error("cannot restart the interrupted clone %s -> %s: %s", src, target, e.getMessage());
                }
            }
        }
    }

    /** Forgets the job of a deleted target volume and stops its copy. */
    public void forget(String target) throws IOException {
        Job j = jobs.remove(target);
        if (j != null) {
            j.cancel = true;
        }
        Files.deleteIfExists(markerDir().resolve(target));
    }
}
