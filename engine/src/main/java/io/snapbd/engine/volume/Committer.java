package io.snapbd.engine.volume;

import io.snapbd.engine.io.FileSpace;
import io.snapbd.engine.io.MappedData;
import io.snapbd.engine.snapshot.SnapshotSet;

import java.io.IOException;
import java.lang.System.Logger.Level;

/**
 * The copy-on-write committer: one thread per volume, started by the first staged write or snapshot, that
 * forces the before-images of everything staged in the {@link Overlay} and then applies the staged data to
 * production. It lets a batch build up for {@link VolumeTuning#overlayBatchNanos()} unless writers wait, and
 * runs at the priorities {@link CommitterPriority} chooses.
 */
final class Committer {

    private static final System.Logger LOG = System.getLogger(Committer.class.getName());

    private final MappedData data;
    private final Overlay overlay;
    private final SnapshotSet snapshots;
    private final FileSpace space;
    private final VolumeTuning tuning;
    private final String volume;
    private final Overlay.Applied markInUse;
    private Thread thread;
    private volatile boolean stop;
    private long failures;          // the committer thread's: failed attempts in a row, and when it last warned
    private long lastWarning;

    Committer(MappedData data, Overlay overlay, SnapshotSet snapshots, FileSpace space, VolumeTuning tuning,
              String volume, WriteIntents intents) {
        this.data = data;
        this.overlay = overlay;
        this.snapshots = snapshots;
        this.space = space;
        this.tuning = tuning;
        this.volume = volume;
        this.markInUse = b -> intents.markInUse(b, b);     // one lambda for the volume's life: nothing per batch
    }

    /** Starts the thread unless it runs already. */
    synchronized void start() {
        if (thread != null) {
            return;
        }
        thread = new Thread(this::run, "overlay-committer " + volume);
        thread.setDaemon(true);
        thread.start();
    }

    private void run() {
        MappedData.Cursor cursor = data.cursor();
        Overlay.View view = overlay.view();
        CommitterPriority priority = new CommitterPriority(space, tuning.committerNice(), tuning.committerBusyNice(), volume);
        priority.adjust(false);
        long batchNanos = tuning.overlayBatchNanos();
        while (!stop) {
            try {
                int n = overlay.awaitBatch(100, batchNanos);
                if (n > 0) {
                    priority.adjust(overlay.waitedFor());
                    snapshots.forceCopies();
                    overlay.applyStaged(cursor, view, n, markInUse);
                    if (failures > 0) {
                        LOG.log(Level.INFO, "snapbd: volume " + volume + ": staged writes applied again after " + failures
                                + " failed attempt(s)");
                        failures = 0;
                    }
                }
            } catch (InterruptedException e) {
                return;
            } catch (IOException | RuntimeException | InternalError e) {
                // Keep the data staged (readers still see it) and retry: losing it would lose acknowledged writes.
                // (InternalError: a SIGBUS on the mapping of a sparse data file on a full file system.)
                // Retried every 100 ms for as long as the cause lasts (a full file system): warn at the first
                // failure and then once a minute, not ten times a second.
                long now = System.nanoTime();
                if (failures++ == 0 || now - lastWarning >= 60_000_000_000L) {
                    lastWarning = now;
                    LOG.log(Level.WARNING, "snapbd: volume " + volume + ": applying staged writes failed, retrying every 100 ms ("
                            + failures + " failed attempt(s) so far): " + e);
                }
                overlay.commitFailed(e);        // FLUSH, FUA and writers waiting for these blocks get the error
                try {
                    Thread.sleep(100);
                } catch (InterruptedException ie) {
                    return;
                }
            }
        }
    }

    /** Stops the thread, first letting it apply everything staged when {@code drain}. */
    void stop(boolean drain) throws IOException {
        if (drain) {
            overlay.awaitEmpty();
        }
        Thread t;
        synchronized (this) {
            stop = true;
            t = thread;
        }
        if (t != null) {
            t.interrupt();
            try {
                t.join(10_000);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
    }
}
