package io.snapbd.server.snapshot;

import io.snapbd.engine.format.AtomicFile;
import io.snapbd.engine.snapshot.CloneCopier;
import io.snapbd.engine.snapshot.SnapshotView;
import io.snapbd.engine.volume.Volume;
import io.snapbd.engine.volume.VolumeCatalog;
import io.snapbd.server.Log;
import io.snapbd.server.api.CloneState;
import io.snapbd.server.api.CloneStatus;
import io.snapbd.server.api.LunStatus;
import io.snapbd.server.export.Export;
import io.snapbd.server.export.ExportName;
import io.snapbd.server.export.ExportRegistry;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.Objects;
import java.util.concurrent.ConcurrentHashMap;

/**
 * Background copies of snapshots into new volumes. The target's export refuses connections until its copy
 * completes. A marker {@code DIR/clones/TARGET} (holding VOLUME@SNAPSHOT) survives restarts, so an
 * interrupted copy starts over when the server starts again.
 *
 * <p>When the copy is complete, the target's LUN state is read <em>before</em> its export accepts connections:
 * with tracking enabled (clone --track) that value is exactly the state of the finished copy, the token to
 * save, reported by {@link Job#status()} as {@code lunState}.
 */
public final class CloneJobs {

    /** One copy. */
    public static final class Job {
        final ExportName source;
        final String target;
        volatile CloneCopier copier;
        volatile CloneState state = CloneState.COPYING;
        volatile String error;
        volatile boolean cancel;
        /** The target's LUN state at the end of the copy, before anyone could connect; null until done. */
        volatile LunStatus lunState;
        final long started = System.currentTimeMillis();

        Job(ExportName source, String target) {
            this.source = source;
            this.target = target;
        }

        /** The snapshot copied from. */
        public ExportName source() {
            return source;
        }

        public String target() {
            return target;
        }

        public CloneState state() {
            return state;
        }

        public synchronized CloneStatus status() {
            CloneCopier c = copier;
            long total = c == null ? -1 : c.total();
            long done = c == null ? 0 : c.done();
            double percent = total <= 0 ? (state == CloneState.DONE ? 100.0 : 0.0) : Math.floor(1000.0 * done / total) / 10;
            return new CloneStatus(source.toString(), target, state, done, total, percent,
                    (System.currentTimeMillis() - started) / 1000.0, error, lunState);
        }
    }

    /**
     * Where the copies run and whose exports they open. {@link Online}: in the running server, copies run in the
     * background and each target's export refuses connections until its copy is done. {@link Offline}: for the CLI
     * alone, nothing is exported and a copy runs before the command returns.
     */
    private sealed interface Mode {
        /** The gate of {@code target}'s export: what its clients are told while it is closed. */
        TargetGate gate(String target);

        boolean background();
    }

    /** A clone target's export: {@code setUnavailable(reason)} closes it, {@code setUnavailable(null)} opens it. */
    @FunctionalInterface
    private interface TargetGate {
        TargetGate NONE = reason -> { };

        void setUnavailable(String reason);
    }

    private record Online(ExportRegistry exports) implements Mode {
        Online {
            Objects.requireNonNull(exports, "exports");
        }

        @Override
        public TargetGate gate(String target) {
            Export e = exports.lookup(target);
            return e == null ? TargetGate.NONE : e::setUnavailable;
        }

        @Override
        public boolean background() {
            return true;
        }
    }

    private enum Offline implements Mode {
        INSTANCE;

        @Override
        public TargetGate gate(String target) {
            return TargetGate.NONE;
        }

        @Override
        public boolean background() {
            return false;
        }
    }

    private final VolumeCatalog catalog;
    private final Mode mode;
    private final Map<String, Job> jobs = new ConcurrentHashMap<>();

    private CloneJobs(VolumeCatalog catalog, Mode mode) {
        this.catalog = catalog;
        this.mode = mode;
    }

    /** Inside the running server: copies run in the background and open their target's export when done. */
    public static CloneJobs online(VolumeCatalog catalog, ExportRegistry exports) {
        return new CloneJobs(catalog, new Online(exports));
    }

    /** For the CLI while no server runs: nothing is exported, a copy runs before {@link #start} returns. */
    public static CloneJobs offline(VolumeCatalog catalog) {
        return new CloneJobs(catalog, Offline.INSTANCE);
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
        ExportName src = ExportName.ofSnapshot(volume, snapshot);
        for (Job j : jobs.values()) {
            if (j.source.equals(src) && j.state == CloneState.COPYING) {
                return j.target;
            }
        }
        return null;
    }

    /**
     * Writes the marker of a copy of {@code volume@snapshot} into {@code target} durably (replaced by rename, forced
     * with its directory). Called <em>before</em> the target volume is created: a power loss then leaves either no
     * target (the marker is stale and {@link #resumeInterrupted} removes it) or a target whose copy restarts, never
     * a target that reads as complete with part of the copy missing.
     */
    public void mark(String volume, String snapshot, String target) throws IOException {
        if (!Files.isDirectory(markerDir())) {
            Files.createDirectories(markerDir());
            AtomicFile.fsyncDirectory(catalog.root());
        }
        Path marker = markerDir().resolve(target);
        byte[] text = (ExportName.ofSnapshot(volume, snapshot) + "\n").getBytes(StandardCharsets.UTF_8);
        if (!Files.isRegularFile(marker) || !java.util.Arrays.equals(Files.readAllBytes(marker), text)) {
            AtomicFile.write(marker, ByteBuffer.wrap(text));
        }
    }

    /** Removes the marker of a copy that never started (its target could not be created). */
    public void unmark(String target) throws IOException {
        Files.deleteIfExists(markerDir().resolve(target));
    }

    /**
     * Starts (or, after a restart, restarts) the copy of {@code source} into the existing volume {@code target}: in the
     * background in the running server, before returning offline.
     */
    public Job start(String volume, String snapshot, String target) throws IOException {
        mark(volume, snapshot, target);
        ExportName source = ExportName.ofSnapshot(volume, snapshot);
        Job job = new Job(source, target);
        jobs.put(target, job);
        TargetGate targetExport = mode.gate(target);
        targetExport.setUnavailable("clone from " + job.source + " in progress");
        Runnable body = () -> run(job, volume, snapshot, targetExport);
        if (mode.background()) {
            Thread t = new Thread(body, "clone " + target);
            t.setDaemon(true);
            t.start();
        } else {
            body.run();
        }
        return job;
    }

    private void run(Job job, String volume, String snapshot, TargetGate targetExport) {
        try {
            Volume src = catalog.open(volume);
            SnapshotView view = src.snapshotView(snapshot);
            Volume dst = catalog.open(job.target);
            CloneCopier copier = new CloneCopier(view, dst);
            job.copier = copier;
            Log.info("clone %s -> %s started", job.source, job.target);
            if (!copier.run(() -> job.cancel)) {
                job.state = CloneState.CANCELLED;
                return;
            }
            Files.deleteIfExists(markerDir().resolve(job.target));
            // The value at the end of the copy, taken while the export still refuses connections.
            job.lunState = LunStatus.of(dst.lunState(), dst.lunState().get());
            synchronized (job) {    // status() sees "copying" with the export closed or "done" with it open
                targetExport.setUnavailable(null);
                job.state = CloneState.DONE;
            }
            Log.info("clone %s -> %s done: %d bytes", job.source, job.target, copier.done());
        } catch (IOException | RuntimeException e) {
            job.state = CloneState.FAILED;
            job.error = e.getMessage();
            targetExport.setUnavailable("clone from " + job.source + " failed: " + e.getMessage());
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
                ExportName source = ExportName.parse(src);
                if (source.isSnapshot() && !source.volume().isEmpty() && !catalog.exists(target)) {
                    // Written before its target was created, which a crash cut short: no copy to restart.
                    Log.info("removing clone marker %s: volume %s was never created", m, target);
                    Files.deleteIfExists(m);
                    continue;
                }
                if (!source.isSnapshot() || source.volume().isEmpty()) {
                    Log.warn("ignoring clone marker %s: '%s'", m, src);
                    continue;
                }
                Log.info("restarting interrupted clone %s -> %s", src, target);
                try {
                    start(source.volume(), source.snapshot(), target);
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
