package io.snapbd.engine.volume;

import io.snapbd.engine.BlockDevice;
import io.snapbd.engine.io.MappedData;
import io.snapbd.engine.io.WriteGate;
import io.snapbd.engine.mirror.MirrorOp;
import io.snapbd.engine.snapshot.SnapshotSet;

import java.nio.ByteBuffer;

/**
 * One client's session on a {@link Volume}: its cursor over the mapping and the overlay, its write-gate slot,
 * its copy-on-write buffer, and the overlay slots of the write in progress. Used by one thread at a time.
 */
final class VolumeSession implements BlockDevice.Session {

    final MappedData.Cursor cursor;
    final Overlay.View overlayView;
    final WriteGate gate;
    final WriteGate.Slot slot;
    final SnapshotSet.CowBuffer cow = new SnapshotSet.CowBuffer();
    private int[] slots;
    private ByteBuffer readBuffer;
    int stagedSlots;
    /** The mirrored volume's per-session change state, or null (not mirrored). */
    MirrorOp mirrorOp;
    long stagedFirst;

    /** Overlay slots reserved for the write in progress (sized for the largest staged write). */
    int[] slotBuffer() {
        if (slots == null) {
            slots = new int[256];
        }
        return slots;
    }

    ByteBuffer readBuffer() {
        if (readBuffer == null) {
            readBuffer = ByteBuffer.allocateDirect(1 << 20);
        }
        return readBuffer;
    }

    VolumeSession(MappedData.Cursor cursor, WriteGate gate, Overlay.View overlayView) {
        this.cursor = cursor;
        this.overlayView = overlayView;
        this.gate = gate;
        this.slot = gate.register();
    }

    @Override
    public void close() {
        if (mirrorOp != null) {
            mirrorOp.close();
        }
        gate.unregister(slot);
    }
}
