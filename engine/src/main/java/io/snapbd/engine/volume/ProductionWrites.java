package io.snapbd.engine.volume;

import io.snapbd.engine.BlockDevice;
import io.snapbd.engine.BlockDevice.Session;
import io.snapbd.engine.BlockDeviceException;
import io.snapbd.engine.io.ByteSource;
import io.snapbd.engine.io.MappedData;
import io.snapbd.engine.snapshot.SnapshotSet;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Writes into production (the local data file, leg 0 of a mirrored volume): the write gate, the before-images
 * snapshots need, staging in the {@link Overlay} and writing through the mapping, for WRITE (in its two phases),
 * TRIM and WRITE_ZEROES. {@link Volume} owns it and calls it, wrapping each call in the mirror legs' begin and end
 * (docs/mirrors.md).
 */
final class ProductionWrites {

    private final Volume volume;
    private final int blockShift;
    private final int blockSize;
    private final Overlay overlay;
    private final SnapshotSet snapshots;
    private final WriteIntents intents;
    private final Committer committer;
    private final Zeroing zeroing;
    private final AtomicLong cowCopies = new AtomicLong();

    ProductionWrites(Volume volume, int blockSize, Overlay overlay, SnapshotSet snapshots, WriteIntents intents,
                     Committer committer, Zeroing zeroing) {
        this.volume = volume;
        this.blockShift = Integer.numberOfTrailingZeros(blockSize);
        this.blockSize = blockSize;
        this.overlay = overlay;
        this.snapshots = snapshots;
        this.intents = intents;
        this.committer = committer;
        this.zeroing = zeroing;
    }

    /** Blocks copied into the save volume by copy-on-write since open. */
    long cowCopies() {
        return cowCopies.get();
    }

    /** Saves before-images that snapshots need for blocks [first, last] (no-op without snapshots). */
    void copyOnWrite(VolumeSession s, long first, long last) throws IOException {
        if (!snapshots.isEmpty()) {
            cowCopies.addAndGet(snapshots.beforeOverwrite(s.cow, first, last));
        }
    }

    /** {@link Volume#prepareWrite} of production: enters the gate (left by finish or abort unless this throws). */
    boolean prepare(Session s, long offset, int length) throws IOException {
        volume.checkOpen();
        BlockDevice.checkRange(volume, offset, length);
        if (length == 0) {
            throw new BlockDeviceException(BlockDeviceException.Reason.OUT_OF_RANGE, "write of zero bytes");
        }
        VolumeSession vs = (VolumeSession) s;
        long first = offset >>> blockShift;
        long last = (offset + length - 1) >>> blockShift;
        vs.gate.enter(vs.slot);
        try {
            vs.stagedSlots = 0;
            boolean restage = false;
            if (overlay.staged() > 0 && overlay.anyStaged(first, last)) {
                // A whole-block rewrite replaces the staged copy (no before-image to take: the first write
                // claimed it); anything else waits for the staged blocks to be applied, to keep order.
                restage = !snapshots.isEmpty() && ((offset | length) & (blockSize - 1)) == 0;
                if (!restage) {
                    overlay.awaitApplied(first, last);
                }
            }
            if (snapshots.isEmpty()) {
                intents.markInUse(first, last);
                return false;
            }
            int copied = snapshots.copyBeforeOverwrite(vs.cow, first, last);
            if (copied > 0) {
                cowCopies.addAndGet(copied);
            }
            intents.markInUse(first, last);
            boolean mustWait = restage || copied > 0 || SnapshotSet.sawPending(vs.cow);
            if (mustWait && stage(vs, first, last, offset, offset + length)) {
                return false;       // the data goes to the overlay; the committer forces and applies it
            }
            if (restage) {
                overlay.awaitApplied(first, last);      // no room: the staged copy must land before ours does
            }
            return mustWait;
        } catch (IOException | RuntimeException e) {
            vs.gate.exit(vs.slot);
            throw e;
        }
    }

    /** Reserves overlay slots for [first, last]; false when the overlay is full (the caller waits instead). */
    private boolean stage(VolumeSession vs, long first, long last, long offset, long end) throws IOException {
        int n = (int) (last - first + 1);
        if (n > vs.slotBuffer().length
                || !overlay.reserve(first, last, offset, end, vs.cursor, vs.overlayView, vs.slotBuffer())) {
            return false;
        }
        vs.stagedSlots = n;
        vs.stagedFirst = first;
        committer.start();
        return true;
    }

    /** Ends a prepared write whose data will never come: releases its overlay slots and leaves the gate. */
    void abort(Session s) {
        VolumeSession vs = (VolumeSession) s;
        if (vs.stagedSlots > 0) {
            overlay.release(vs.stagedSlots, vs.slotBuffer());
            vs.stagedSlots = 0;
        }
        vs.gate.exit(vs.slot);
    }

    /** Streams the payload into the reserved overlay slots and publishes them; the write is then complete. */
    private void finishStaged(VolumeSession vs, long offset, int length, ByteSource source) throws IOException {
        int[] slots = vs.slotBuffer();
        int n = vs.stagedSlots;
        long first = vs.stagedFirst;
        boolean published = false;
        try {
            long pos = offset;
            long end = offset + length;
            while (pos < end) {
                long b = pos >>> blockShift;
                int from = (int) (pos & (blockSize - 1));
                int to = (int) Math.min(blockSize, end - (b << blockShift));
                source.readFully(vs.overlayView.slot(slots[(int) (b - first)], from, to));
                pos = (b << blockShift) + to;
            }
            overlay.publish(first, first + n - 1, slots);
            published = true;
        } finally {
            if (!published) {
                overlay.release(n, slots);
            }
            vs.stagedSlots = 0;
            vs.gate.exit(vs.slot);
        }
    }

    /** {@link Volume#finishWrite} of production: writes the data (staged or through the mapping), leaves the gate. */
    void finish(Session s, long offset, int length, ByteSource source) throws IOException {
        VolumeSession vs = (VolumeSession) s;
        if (vs.stagedSlots > 0) {
            finishStaged(vs, offset, length, source);
            return;
        }
        try {
            MappedData.Cursor c = vs.cursor;
            long pos = offset;
            long end = offset + length;
            while (pos < end) {
                ByteBuffer v = c.view(pos, end - pos);
                int n = v.remaining();
                source.readFully(v);
                pos += n;
            }
            // A TRIM racing with this write may have cleared a bit after we set it; set it again so that
            // "clear bit => zero data" holds whatever the interleaving.
            intents.markInUse(offset >>> blockShift, (offset + length - 1) >>> blockShift);
        } finally {
            vs.gate.exit(vs.slot);
        }
    }

    /** {@link Volume#trim} of production. */
    void trim(Session s, long offset, long length, boolean fua) throws IOException {
        volume.checkOpen();
        BlockDevice.checkRange(volume, offset, length);
        long firstWhole = (offset + blockSize - 1) >>> blockShift;
        long endWhole = (offset + length) >>> blockShift;
        if (firstWhole < endWhole) {
            VolumeSession vs = (VolumeSession) s;
            vs.gate.enter(vs.slot);
            try {
                overlay.awaitApplied(firstWhole, endWhole - 1);
                copyOnWrite(vs, firstWhole, endWhole - 1);
                zeroing.discard(vs.cursor, firstWhole, endWhole);
            } finally {
                vs.gate.exit(vs.slot);
            }
        }
        if (fua) {
            volume.flush();
        }
    }

    /** {@link Volume#writeZeroes} of production. */
    void writeZeroes(Session s, long offset, long length, boolean noHole, boolean fastOnly, boolean fua)
            throws IOException {
        volume.checkOpen();
        BlockDevice.checkRange(volume, offset, length);
        if (fastOnly && !zeroing.fast()) {
            throw new BlockDeviceException(BlockDeviceException.Reason.NOT_SUPPORTED,
                    "fast zeroing is not supported by the file system under " + volume.name());
        }
        if (length == 0) {
            return;
        }
        VolumeSession vs = (VolumeSession) s;
        vs.gate.enter(vs.slot);
        try {
            overlay.awaitApplied(offset >>> blockShift, (offset + length - 1) >>> blockShift);
            copyOnWrite(vs, offset >>> blockShift, (offset + length - 1) >>> blockShift);
            zeroing.zeroRange(vs.cursor, offset, length, noHole);
        } finally {
            vs.gate.exit(vs.slot);
        }
        if (fua) {
            volume.flush();
        }
    }
}
