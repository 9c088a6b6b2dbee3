package io.snapbd.engine.snapshot;

import io.snapbd.engine.BlockDeviceException;
import io.snapbd.engine.io.MappedData;

import java.io.IOException;
import java.lang.System.Logger.Level;
import java.lang.invoke.VarHandle;
import java.nio.ByteBuffer;
import java.time.Duration;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.StampedLock;

/**
 * Reads of snapshot content (docs/snapshots.md, read path) and the pins that keep a snapshot in the queue while
 * a read request is in flight. Each block is resolved along the read chain and copied under its stripe's
 * optimistic read, so a copy-on-write or a queue change that races with it makes the read retry under the
 * stripe's read lock; a delete or terminate waits (up to the grace) for the pinned reads of its snapshot.
 */
final class SnapshotReads {

    private static final System.Logger LOG = System.getLogger(SnapshotReads.class.getName());

    /** How long delete and terminate wait for in-flight reads of the snapshot (see {@link #setReaderGrace}). */
    private static volatile long readerGraceNanos = TimeUnit.SECONDS.toNanos(10);

    private final String volume;
    private final SnapshotChain chain;
    private final PendingCopies copies;
    private final StampedLock[] stripes;
    private final SnapshotSet.Production production;
    private final SaveVolume save;
    private final int blockSize;
    private final int blockShift;

    SnapshotReads(String volume, SnapshotChain chain, PendingCopies copies, StampedLock[] stripes,
                  SnapshotSet.Production production, SaveVolume save, int blockSize) {
        this.volume = volume;
        this.chain = chain;
        this.copies = copies;
        this.stripes = stripes;
        this.production = production;
        this.save = save;
        this.blockSize = blockSize;
        this.blockShift = Integer.numberOfTrailingZeros(blockSize);
    }

    /** See {@link SnapshotSet#setReaderGrace}. */
    static void setReaderGrace(Duration grace) {
        if (grace.isNegative()) {
            throw new IllegalArgumentException("snapshot read grace must not be negative: " + grace);
        }
        readerGraceNanos = grace.toNanos();
    }

    /** See {@link SnapshotSet#read}. */
    void read(long seq, SnapshotSet.ReadCursor rc, long offset, int length, ByteBuffer dst) throws IOException {
        long pos = offset;
        long end = offset + length;
        while (pos < end) {
            long b = pos >>> blockShift;
            long blockEnd = Math.min(end, (b + 1) << blockShift);
            int n = (int) (blockEnd - pos);
            int at = dst.position();
            StampedLock lock = stripes[(int) (b & (SnapshotSet.STRIPES - 1))];
            long stamp = lock.tryOptimisticRead();
            boolean ok = stamp != 0 && copyFrom(seq, rc, b, pos, n, dst, at);
            if (!ok || !lock.validate(stamp)) {
                stamp = lock.readLock();
                try {
                    if (!copyFrom(seq, rc, b, pos, n, dst, at)) {
                        throw new BlockDeviceException(BlockDeviceException.Reason.UNAVAILABLE, "snapshot is gone");
                    }
                } finally {
                    lock.unlockRead(stamp);
                }
            }
            dst.position(at + n);
            pos = blockEnd;
        }
    }

    private boolean copyFrom(long seq, SnapshotSet.ReadCursor rc, long b, long pos, int n, ByteBuffer dst, int at)
            throws IOException {
        Snapshot[] c = chain.active();
        int index = SnapshotChain.indexOf(c, seq);
        if (index < 0) {
            return false;
        }
        int src = SnapshotChain.source(c, index, b);
        dst.position(at);
        if (src == SnapshotChain.ZERO) {
            for (int i = 0; i < n; i++) {
                dst.put(at + i, (byte) 0);
            }
            return true;
        }
        if (src >= 0 && copies.isPending(b, src)) {
            // The chunk is claimed but its copy is not durable (maybe not even made): production still holds the
            // before-image until the force completes and clears the marker, so read production and re-check.
            copyOut(rc.production(production.data()), pos, n, dst, at);
            VarHandle.acquireFence();
            if (copies.isPending(b, src)) {
                return true;
            }
            dst.position(at);
        }
        if (src == SnapshotChain.FROM_PRODUCTION) {
            copyOut(rc.production(production.data()), pos, n, dst, at);
        } else {
            copyOut(rc.save(save.data()), save.offset(src) + (pos & (blockSize - 1)), n, dst, at);
        }
        return true;
    }

    private static void copyOut(MappedData.Cursor cur, long off, int n, ByteBuffer dst, int at) throws IOException {
        int done = 0;
        while (done < n) {
            ByteBuffer v = cur.view(off + done, n - done);
            int k = v.remaining();
            dst.limit(at + done + k).position(at + done);
            dst.put(v);
            done += k;
        }
        dst.limit(dst.capacity());
    }

    // ---- pins: reads in flight hold their snapshot in the queue ------------------------------------------------

    /**
     * Pins active snapshot {@code seq} for one read request: until {@link #unpin}, its before-images stay where
     * they are and production keeps saving them, because delete and terminate wait (up to the grace) for every
     * pin to go. So a read that starts returns the content the snapshot had. Lock-free (one atomic increment);
     * null when the snapshot is not active or is already leaving the queue.
     */
    Snapshot pin(long seq) {
        Snapshot s = chain.find(seq);
        if (s == null) {
            return null;
        }
        s.readers.incrementAndGet();
        if (s.leaving != null) {        // the remover set it before looking at readers: do not hold it up
            unpin(s);
            return null;
        }
        return s;
    }

    void unpin(Snapshot s) {
        if (s.readers.decrementAndGet() == 0 && s.leaving != null) {
            synchronized (s) {
                s.notifyAll();
            }
        }
    }

    /** Why snapshot {@code seq} refuses new reads while its delete or terminate waits for reads in flight, or null. */
    String leavingReason(long seq) {
        Snapshot s = chain.find(seq);
        return s == null ? null : s.leaving;
    }

    /**
     * Marks {@code s} as leaving (new pins are refused) and waits until no read holds it, at most the grace.
     * The caller holds no stripe lock (a pinned read may need one).
     */
    void drain(Snapshot s, String invalidReason) {
        s.leaving = invalidReason != null ? "snapshot terminated: " + invalidReason : "snapshot deleted";
        if (s.readers.get() == 0) {
            return;
        }
        long grace = readerGraceNanos;
        String what = volume + "@" + s.name();
        String doing = invalidReason != null ? "terminating it (" + invalidReason + ")" : "deleting it";
        LOG.log(Level.WARNING, "snapbd: snapshot " + what + ": waiting up to " + (grace / 1_000_000) + " ms for "
                + s.readers.get() + " read(s) in flight to finish before " + doing);
        long deadline = System.nanoTime() + grace;
        synchronized (s) {
            while (s.readers.get() > 0) {
                long left = deadline - System.nanoTime();
                if (left <= 0) {
                    LOG.log(Level.WARNING, "snapbd: snapshot " + what + ": " + s.readers.get() + " read(s) still in flight after "
                            + (grace / 1_000_000) + " ms: going ahead; they end with an error and their connections are closed");
                    return;
                }
                try {
                    s.wait(Math.max(1, left / 1_000_000));
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    return;
                }
            }
        }
    }
}
