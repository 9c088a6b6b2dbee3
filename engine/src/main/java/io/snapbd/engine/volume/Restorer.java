package io.snapbd.engine.volume;

import io.snapbd.engine.bitmap.PagedBitMap;
import io.snapbd.engine.format.CorruptMetadataException;
import io.snapbd.engine.mirror.MirrorSet;
import io.snapbd.engine.snapshot.RestoreMarker;
import io.snapbd.engine.snapshot.SnapshotRecord;
import io.snapbd.engine.snapshot.SnapshotSet;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;

/**
 * Restore of production from a snapshot, and resuming one a crash interrupted. Runs through the copy-on-write
 * path with writers paused, so younger snapshots keep their content; a durable marker ({@code restore.marker})
 * is written before the first block changes and removed once production is durable. Restores run one at a
 * time; {@link Volume#close()} takes the same lock, so a close lets a running restore finish.
 */
final class Restorer {

    private final Volume volume;
    private final SnapshotSet snapshots;
    private final PagedBitMap meta;
    private final WriteIntents intents;
    private final Zeroing zeroing;
    private final int blockShift;
    /** Restores run one at a time (the progress below describes one restore). */
    final Object lock = new Object();
    /** The restore running now, or the last one if it failed (its marker is still on disk); null otherwise. */
    private volatile RestoreProgress progress;
    /** The interrupted restore this open finished, or null. */
    private RestoreProgress resumed;

    Restorer(Volume volume, SnapshotSet snapshots, PagedBitMap meta, WriteIntents intents, Zeroing zeroing) {
        this.volume = volume;
        this.snapshots = snapshots;
        this.meta = meta;
        this.intents = intents;
        this.zeroing = zeroing;
        this.blockShift = Integer.numberOfTrailingZeros(volume.blockSize());
    }

    RestoreProgress progress() {
        return progress;
    }

    RestoreProgress resumed() {
        return resumed;
    }

    /** Finishes a restore a crash interrupted: its marker names the snapshot; restoring again is idempotent. */
    void resume() throws IOException {
        RestoreMarker.Contents m = RestoreMarker.read(volume.directory(), volume.header().uuid());
        if (m == null) {
            return;
        }
        List<SnapshotRecord> records = new ArrayList<>();
        for (SnapshotSet.Info i : snapshots.list()) {
            records.add(i.record());
        }
        String why = RestoreMarker.unresumable(m, records);
        if (why != null) {
            throw new CorruptMetadataException(RestoreMarker.file(volume.directory()), why
                    + ": the interrupted restore cannot be finished "
                    + "and production is partly restored; delete the file to open the volume as it is");
        }
        volume.lunState().onAlteringRequest();       // a restore alters the volume, this part of it too
        RestoreProgress p = new RestoreProgress(m.name(), true);
        restore(m.seq(), p);
        resumed = p;
    }

    /** See {@link Volume#restore(String)}. */
    long restore(String name) throws IOException {
        long seq = snapshots.seqOf(name);
        if (seq < 0) {
            throw new IllegalArgumentException(snapshots.record(name) == null ? "no snapshot named " + name
                    : "snapshot " + name + " is not active and cannot be restored");
        }
        return restore(seq, new RestoreProgress(name, false));
    }

    private long restore(long seq, RestoreProgress p) throws IOException {
        synchronized (lock) {
            volume.checkOpen();            // a close may have run while this restore waited for the lock
            RestoreProgress previous = progress;
            progress = p;
            // A mirrored volume's changes hold their range until every leg has them: pause those first (a writer
            // waiting at the volume's gate below may hold one), then the volume's writers.
            MirrorSet mirror = volume.mirror;
            if (mirror != null && !mirror.pause()) {
                progress = previous;
                throw new IOException("in-flight writes did not finish in time; nothing restored");
            }
            if (!volume.gate.pause()) {
                progress = previous;
                if (mirror != null) {
                    mirror.resume();
                }
                throw new IOException("in-flight writes did not finish in time; nothing restored");
            }
            VolumeSession s = (VolumeSession) volume.openSession();
            if (s.mirrorOp != null) {
                s.mirrorOp.bypassPause(true);
            }
            boolean marked = false;
            try {
                volume.awaitStagedApplied();
                volume.steps.reached("restore.paused");
                long protectedBefore = snapshots.beginRestore(seq);
                try {
                    RestoreMarker.write(volume.directory(), volume.header().uuid(), seq, p.snapshot());
                } catch (IOException | RuntimeException e) {
                    snapshots.endRestore(protectedBefore);
                    throw e;
                }
                marked = true;
                volume.steps.reached("restore.marker");
                long changed = restoreBlocks(s, seq, p);
                p.phase = "flushing";
                volume.flush();
                volume.steps.reached("restore.flushed");
                RestoreMarker.delete(volume.directory());
                snapshots.endRestore(-1);
                progress = null;
                volume.steps.reached("restore.done");
                return changed;
            } catch (IOException e) {
                String what = marked ? "; production is partly restored: restore again (the next open of the volume also finishes it)"
                        : "; nothing restored";
                if (marked) {
                    p.error = e.getMessage();
                } else {
                    progress = previous;
                }
                throw new IOException("restore of " + volume.name() + " from snapshot " + p.snapshot() + " failed: "
                        + e.getMessage() + what, e);
            } catch (RuntimeException | Error e) {
                if (marked) {
                    p.error = String.valueOf(e);
                } else {
                    progress = previous;
                }
                throw e;
            } finally {
                s.close();
                volume.gate.resume();
                if (mirror != null) {
                    mirror.resume();
                }
            }
        }
    }

    /** A mirrored volume: blocks [first, end) are about to change as one tagged change (docs/mirrors.md). */
    private void mirrorBegin(VolumeSession s, long first, long end, boolean discard) throws IOException {
        if (s.mirrorOp != null) {
            volume.mirror.begin(s.mirrorOp, first << blockShift, (end - first) << blockShift, volume, discard);
        }
    }

    /** ... and changed on leg 0: copied to the other legs, durable on each, before the restore goes on. */
    private void mirrorEnd(VolumeSession s) throws IOException {
        if (s.mirrorOp != null) {
            volume.mirror.end(s.mirrorOp, s, volume);
        }
    }

    /** Blocks per copy-on-write force and per copy when restoring: runs of up to 1 MiB. */
    private int runBlocks() {
        return Math.max(1, (1 << 20) >>> blockShift);
    }

    /**
     * The restore proper, idempotent so that it can be rerun from any point: discard what is in use in production
     * but not in the snapshot, copy back every block some snapshot from it onwards holds a before-image of (the
     * rest of its in-use blocks never changed since it was taken), and set the meta bits of its in-use blocks.
     * Every overwritten block goes through copy-on-write first, so younger snapshots keep their content.
     */
    private long restoreBlocks(VolumeSession s, long seq, RestoreProgress p) throws IOException {
        long changed = 0;
        PagedBitMap target = snapshots.metaOf(seq);
        long blocks = volume.header().blocks();
        p.phase = "discarding";
        // Blocks in use in production but not in the snapshot: discard.
        for (long b = meta.next(0, blocks, true); b < blocks; b = meta.next(b + 1, blocks, true)) {
            if (!target.get(b)) {
                long end = meta.next(b, blocks, false);
                long runEnd = b;
                while (runEnd < end && !target.get(runEnd)) {
                    runEnd++;
                }
                mirrorBegin(s, b, runEnd, true);
                try {
                    volume.copyOnWrite(s, b, runEnd - 1);
                    zeroing.discard(s.cursor, b, runEnd);
                } finally {
                    mirrorEnd(s);
                }
                changed += runEnd - b;
                p.blocksChanged = changed;
                b = runEnd - 1;
                volume.steps.reached("restore.discard");
            }
        }
        // Blocks in use in the snapshot: copy the saved before-image back, a run of them per force.
        p.phase = "copying";
        int runMax = runBlocks();
        ByteBuffer buf = ByteBuffer.allocateDirect(runMax << blockShift);
        SnapshotSet.ReadCursor rc = new SnapshotSet.ReadCursor();
        for (long b = target.next(0, blocks, true); b < blocks; b = target.next(b, blocks, true)) {
            if (!snapshots.savedAtOrAfter(seq, b)) {
                intents.markInUse(b, b);        // production still holds the snapshot's content: only the bit may differ
                b++;
                continue;
            }
            long end = b + 1;
            while (end < blocks && end - b < runMax && target.get(end) && snapshots.savedAtOrAfter(seq, end)) {
                end++;
            }
            int bytes = (int) ((end - b) << blockShift);
            buf.clear();
            snapshots.read(seq, rc, b << blockShift, bytes, buf);
            mirrorBegin(s, b, end, false);
            try {
                volume.copyOnWrite(s, b, end - 1);
                intents.markInUse(b, end - 1);
                buf.flip();
                long pos = b << blockShift;
                while (buf.hasRemaining()) {
                    ByteBuffer v = s.cursor.view(pos, buf.remaining());
                    int n = v.remaining();
                    ByteBuffer part = buf.duplicate();
                    part.limit(part.position() + n);
                    v.put(part);
                    buf.position(buf.position() + n);
                    pos += n;
                }
            } finally {
                mirrorEnd(s);
            }
            changed += end - b;
            p.blocksChanged = changed;
            volume.steps.reached("restore.copy");
            b = end;
        }
        return changed;
    }
}
