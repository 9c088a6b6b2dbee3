package io.snapbd.engine.snapshot;

import io.snapbd.engine.BlockDevice;
import io.snapbd.engine.lun.LunState;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.LockSupport;
import java.util.function.BooleanSupplier;

/**
 * Copies the in-use extents of a snapshot into a new volume (Mylex's copy of the snapshot to a backup
 * drive): unused extents are skipped, so the target keeps them as holes. Progress is counted in bytes of
 * in-use data.
 *
 * <p>Every write of the copy into the target is an altering request of the target's LUN state, counted at
 * dispatch like a client's: with tracking enabled before the copy (clone --track), a value taken during the
 * copy never matches the value at its end.
 */
public final class CloneCopier {

    private static final int CHUNK = 4 << 20;
    /**
     * A pause after each piece copied (an extent, at most a chunk), for tests that must see a clone still copying
     * ({@code -Dsnapbd.clone.chunkPauseMillis=N}; 0, no pause, by default).
     */
    private static final long CHUNK_PAUSE_NANOS = Long.getLong("snapbd.clone.chunkPauseMillis", 0L) * 1_000_000L;

    private final BlockDevice source;
    private final BlockDevice target;
    private final AtomicLong done = new AtomicLong();
    private volatile long total = -1;

    public CloneCopier(BlockDevice source, BlockDevice target) {
        if (source.size() > target.size()) {
            throw new IllegalArgumentException("target " + target.name() + " (" + target.size()
                    + " bytes) is smaller than " + source.name() + " (" + source.size() + " bytes)");
        }
        this.source = source;
        this.target = target;
    }

    /** Bytes of in-use data to copy (known after the first scan; -1 before). */
    public long total() {
        return total;
    }

    public long done() {
        return done.get();
    }

    /** Runs the copy; returns false if {@code cancelled} became true. */
    public boolean run(BooleanSupplier cancelled) throws IOException {
        long[] sum = new long[1];
        source.extents(0, source.size(), (off, len, inUse) -> {
            if (inUse) {
                sum[0] += len;
            }
            return true;
        });
        total = sum[0];
        ByteBuffer buf = ByteBuffer.allocateDirect(CHUNK);
        LunState lun = target.lunState();
        try (BlockDevice.Session in = source.openSession(); BlockDevice.Session out = target.openSession()) {
            long pos = 0;
            long size = source.size();
            while (pos < size) {
                long[] ext = new long[2];
                boolean[] used = new boolean[1];
                source.extents(pos, Math.min(size - pos, 1L << 30), (off, len, inUse) -> {
                    ext[0] = off;
                    ext[1] = len;
                    used[0] = inUse;
                    return false;
                });
                if (used[0]) {
                    long off = ext[0];
                    long end = ext[0] + ext[1];
                    while (off < end) {
                        if (cancelled.getAsBoolean()) {
                            return false;
                        }
                        int n = (int) Math.min(CHUNK, end - off);
                        buf.clear();
                        source.read(in, off, n, buf::put);
                        buf.flip();
                        if (lun != null) {
                            lun.onAlteringRequest();
                        }
                        target.write(out, off, n, dst -> {
                            int k = dst.remaining();
                            ByteBuffer part = buf.slice().limit(k);
                            dst.put(part);
                            buf.position(buf.position() + k);
                        }, false);
                        off += n;
                        done.addAndGet(n);
                        if (CHUNK_PAUSE_NANOS > 0) {
                            LockSupport.parkNanos(CHUNK_PAUSE_NANOS);
                        }
                    }
                }
                pos = ext[0] + ext[1];
            }
        }
        target.flush();
        return true;
    }
}
