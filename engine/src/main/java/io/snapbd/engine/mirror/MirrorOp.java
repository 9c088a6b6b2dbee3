package io.snapbd.engine.mirror;

import io.snapbd.engine.BlockDevice;
import io.snapbd.engine.io.ByteSink;
import io.snapbd.engine.io.WriteGate;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.Arrays;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * One session's tagged-change state for {@link MirrorSet#begin} / {@link MirrorSet#end}: its tag, range, range-lock
 * stripes and blocks, per-leg tickets and timings, the in-use runs to copy and the copy buffer.
 * Reused for every change of that session, so a change allocates nothing.
 */
public final class MirrorOp implements ByteSink, BlockDevice.ExtentConsumer, LegIo.WriteDone {
    private final MirrorWritePath set;
    private final WriteGate gate;
    final WriteGate.Slot slot;
    final long[] tickets;
    final long[] legNanos;
    final long[] one = new long[1];
    long[] runs = new long[16];
    int nruns;
    ByteBuffer buf;
    long tag;
    long offset;
    long length;
    /** Its range lock ({@link RangeLocks}): the stripes of the book it is listed in and the blocks it holds. */
    int stripeLo;
    int stripeHi;
    long lockFrom;
    long lockTo;
    boolean locked;
    boolean inGate;
    boolean bypass;
    /** Hot regions ({@link HotRegions}): whether this change entered regions r0 … r1, and the ones it makes hot. */
    boolean inRegions;
    boolean published;
    int r0;
    int r1;
    final int[] heat = new int[HotRegions.MAX_REGIONS_PER_CHANGE];
    final long[] heatTags = new long[HotRegions.MAX_REGIONS_PER_CHANGE];
    int nheat;
    /** The change's data-force sequence number once handed to the {@link DataForcer} (when its regions may cool). */
    long seq;
    /** Its regions were all hot (ENTRY unforced): it does not count against the unforced bound (DataForcer). */
    boolean hotPath;
    /** A hot-path change that appended no ENTRY ({@link HotRegions#HOT_ENTRIES_NONE}): nothing of it to retire. */
    boolean noEntry;

    /**
     * A change in flight on asynchronous legs ({@link MirrorWritePath#endThen}): completions still to come (plus the
     * starter's own until it has sent them all), per-leg completion slots (made once per leg), start times and
     * failures, the failure of the start itself, and whom to tell at the end.
     */
    final AtomicInteger pending = new AtomicInteger();
    final LegIo.WriteSlot[] slots;
    final LegIo[] slotOf;
    final long[] legStart;
    final IOException[] legFailure;
    IOException failure;
    BlockDevice.ChangeDone done;

    MirrorOp(MirrorWritePath set, WriteGate gate, int legs) {
        this.set = set;
        this.gate = gate;
        this.slot = gate.register();
        this.tickets = new long[legs];
        this.legNanos = new long[legs];
        this.slots = new LegIo.WriteSlot[legs];
        this.slotOf = new LegIo[legs];
        this.legStart = new long[legs];
        this.legFailure = new IOException[legs];
    }

    @Override
    public void legWritten(int leg, IOException failure) {
        set.legWritten(this, leg, failure);
    }

    /** For the thread that paused the mirror itself (a restore): its changes skip the pause. */
    public void bypassPause(boolean b) {
        bypass = b;
    }

    @Override
    public void write(ByteBuffer src) {
        buf.put(src);
    }

    @Override
    public boolean accept(long off, long len, boolean inUse) {
        if (inUse) {
            addRun(off, len);
        }
        return true;
    }

    void addRun(long off, long len) {
        if (nruns > 0 && runs[2 * nruns - 2] + runs[2 * nruns - 1] == off) {
            runs[2 * nruns - 1] += len;
            return;
        }
        if (2 * nruns + 2 > runs.length) {
            runs = Arrays.copyOf(runs, runs.length * 2);
        }
        runs[2 * nruns] = off;
        runs[2 * nruns + 1] = len;
        nruns++;
    }

    /** Leaves the gate's books (the session closes); its answered changes are retired by the mirror's {@link DataForcer}. */
    public void close() {
        gate.unregister(slot);
    }
}
