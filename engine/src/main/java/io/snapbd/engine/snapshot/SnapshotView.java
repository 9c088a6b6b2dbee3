package io.snapbd.engine.snapshot;

import io.snapbd.engine.BlockDevice;
import io.snapbd.engine.BlockDeviceException;
import io.snapbd.engine.ReadOnlyDevice;
import io.snapbd.engine.bitmap.PagedBitMap;
import io.snapbd.engine.io.ByteSink;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.List;

/**
 * A snapshot as a read-only block device (VOLUME@SNAPSHOT). Reads resolve each block along the read chain
 * (docs/snapshots.md, read path); block status comes from the snapshot's frozen meta bit map. When the snapshot is terminated
 * (save volume full) each session gets ENOSPC once, then every request fails as unavailable. A read in flight
 * pins the snapshot, so delete and terminate wait for it (see {@link #read}).
 */
public final class SnapshotView implements ReadOnlyDevice {

    private static final int BUFFER = 1 << 20;

    private final SnapshotSet set;
    private final String name;
    private final long seq;
    private final long size;
    private final int blockSize;

    public SnapshotView(SnapshotSet set, String name, long seq, long size, int blockSize) {
        this.set = set;
        this.name = name;
        this.seq = seq;
        this.size = size;
        this.blockSize = blockSize;
    }

    public long seq() {
        return seq;
    }

    /** The snapshot's own name (without the volume). */
    public String snapshotName() {
        return name.substring(name.indexOf('@') + 1);
    }

    /** Active snapshots older than this one: the bases a differential to this one can start from. */
    public List<String> olderSnapshots() {
        return set.olderThan(snapshotName());
    }

    /**
     * Reports [offset, offset+length) as consecutive byte extents flagged changed or not since snapshot
     * {@code older} (changed = in use here and possibly different; unused and unchanged are not changed).
     */
    public void changedExtents(String older, long offset, long length, ExtentConsumer consumer) throws IOException {
        BlockDevice.checkRange(this, offset, length);
        Differential d = differentialFrom(older);
        int shift = Integer.numberOfTrailingZeros(blockSize);
        long end = offset + length;
        // Coalesce: unchanged and unused runs are both "not changed".
        long[] run = {offset, 0};          // start, flag (1 changed)
        boolean[] stopped = {false};
        d.scan(offset >>> shift, (end + blockSize - 1) >>> shift, (first, count, state) -> {
            long from = Math.max(offset, first << shift);
            long flag = state == Differential.State.CHANGED ? 1 : 0;
            if (from > run[0] && flag != run[1]) {
                if (!consumer.accept(run[0], from - run[0], run[1] == 1)) {
                    stopped[0] = true;
                    return false;
                }
                run[0] = from;
            }
            run[1] = flag;
            return true;
        });
        if (!stopped[0] && run[0] < end) {
            consumer.accept(run[0], end - run[0], run[1] == 1);
        }
    }

    /**
     * Reports [offset, offset+length) as consecutive byte extents flagged dirty or not since snapshot
     * {@code older}, with qemu's meaning (content may differ, blocks that left use included): the answers of
     * {@code qemu:dirty-bitmap:OLDER}.
     */
    public void dirtyExtents(String older, long offset, long length, ExtentConsumer consumer) throws IOException {
        BlockDevice.checkRange(this, offset, length);
        Differential d = differentialFrom(older);
        int shift = Integer.numberOfTrailingZeros(blockSize);
        long end = offset + length;
        d.scanDirty(offset >>> shift, (end + blockSize - 1) >>> shift, (first, count, dirty) -> {
            long from = Math.max(offset, first << shift);
            long to = Math.min(end, (first + count) << shift);
            return consumer.accept(from, to - from, dirty);
        });
    }

    private Differential differentialFrom(String older) throws BlockDeviceException {
        try {
            return set.differential(older, snapshotName());
        } catch (IllegalArgumentException e) {
            // e.g. the older snapshot was deleted after this client selected the context
            throw new BlockDeviceException(BlockDeviceException.Reason.OUT_OF_RANGE, "differential from " + older + ": " + e.getMessage());
        }
    }

    @Override
    public String name() {
        return name;
    }

    @Override
    public long size() {
        return size;
    }

    @Override
    public int blockSize() {
        return blockSize;
    }

    /** Null while the snapshot can be read, else why not (also while its delete or terminate waits for reads in flight). */
    @Override
    public String unavailableReason() {
        if (set.isActive(seq)) {
            return set.leavingReason(seq);
        }
        for (SnapshotSet.Info i : set.list()) {
            if (i.record().seq() == seq) {
                String reason = i.record().reason();
                return reason != null && reason.startsWith("damaged") ? "snapshot refused: " + reason
                        : "snapshot terminated: " + reason;
            }
        }
        return "snapshot deleted";
    }

    private static final class ViewSession implements Session {
        final SnapshotSet.ReadCursor cursor = new SnapshotSet.ReadCursor();
        ByteBuffer buffer;
        boolean toldNoSpace;

        @Override
        public void close() {
        }
    }

    @Override
    public Session openSession() {
        return new ViewSession();
    }

    /** The error for a read the snapshot refuses: ENOSPC once per session after a terminate, then unavailable. */
    private BlockDeviceException unavailable(ViewSession s) {
        String why = unavailableReason();
        if (why == null) {
            why = "snapshot deleted";       // raced: it left the queue between the pin and this look
        }
        if (why.startsWith("snapshot terminated") && !s.toldNoSpace) {
            s.toldNoSpace = true;
            return new BlockDeviceException(BlockDeviceException.Reason.NO_SPACE, name + ": " + why);
        }
        return new BlockDeviceException(BlockDeviceException.Reason.UNAVAILABLE, name + " is not available: " + why);
    }

    /**
     * Reads with the snapshot pinned for the whole request: delete and terminate wait for it (up to the grace,
     * {@link SnapshotSet#setReaderGrace}), so every byte handed to the sink is the snapshot's content, and a
     * request that starts finishes even if the client drains it slowly. Each block is also copied under its
     * stripe's validation, so if the grace runs out and the snapshot leaves mid-request, the rest fails with
     * UNAVAILABLE instead of returning moved or reused data; the caller must then abandon the reply.
     */
    @Override
    public void read(Session session, long offset, int length, ByteSink sink) throws IOException {
        ViewSession s = (ViewSession) session;
        Snapshot pinned = set.pin(seq);
        if (pinned == null) {
            throw unavailable(s);
        }
        try {
            BlockDevice.checkRange(this, offset, length);
            if (s.buffer == null) {
                s.buffer = ByteBuffer.allocateDirect(BUFFER);
            }
            long pos = offset;
            long end = offset + length;
            while (pos < end) {
                int n = (int) Math.min(BUFFER, end - pos);
                s.buffer.clear();
                set.read(seq, s.cursor, pos, n, s.buffer);
                s.buffer.flip();
                sink.write(s.buffer);
                pos += n;
            }
        } finally {
            set.unpin(pinned);
        }
    }

    @Override
    public BlockDeviceException refusal() {
        return new BlockDeviceException(BlockDeviceException.Reason.READ_ONLY, name + " is a read-only snapshot");
    }

    @Override
    public void extents(long offset, long length, ExtentConsumer consumer) throws IOException {
        PagedBitMap meta = set.metaOf(seq);
        if (meta == null) {
            throw new BlockDeviceException(BlockDeviceException.Reason.UNAVAILABLE, name + " is not available: " + unavailableReason());
        }
        BlockDevice.checkRange(this, offset, length);
        int shift = Integer.numberOfTrailingZeros(blockSize);
        long end = offset + length;
        long pos = offset;
        long lastBlock = Math.min(size >>> shift, (end - 1 >>> shift) + 1);     // no search past the request
        while (pos < end) {
            long block = pos >>> shift;
            boolean used = meta.get(block);
            long runEnd = Math.min(end, meta.next(block + 1, lastBlock, !used) << shift);
            if (!consumer.accept(pos, runEnd - pos, used)) {
                return;
            }
            pos = runEnd;
        }
    }
}
