package io.snapbd.server.transmission;

import io.snapbd.engine.BlockDevice;
import io.snapbd.engine.BlockDeviceException;
import io.snapbd.server.Log;
import io.snapbd.server.export.Export;
import io.snapbd.server.protocol.Nbd;

import java.io.IOException;
import java.util.ArrayDeque;
import java.util.concurrent.Executor;

/**
 * The durability work of one connection (FLUSH, and the force of a FUA request), run on the shared sync pool
 * and answered out of order, so slow fsyncs never stall the connection's request stream. Tasks are pooled per
 * connection: no allocation per request in steady state. The connection waits for its tasks before it closes
 * its session.
 */
final class SyncTasks {

    static final int FLUSH = 1;
    static final int FORCE_RANGE = 2;

    private final Executor pool;
    private final Export export;
    private final BlockDevice device;
    private final Replies replies;
    private final String peer;
    private final ArrayDeque<Task> free = new ArrayDeque<>();
    /** Written under {@code free}; volatile so the reader can look without the lock ({@link #busy()}). */
    private volatile int inFlight;

    /**
     * Most FLUSH and FUA requests one connection may have in the sync pool at once. A pool thread answering a client
     * that does not read its replies blocks on that client's socket; without this bound such a client sending
     * FLUSHes would make the (unbounded) pool start a thread per request. At the bound the reader waits for one
     * to finish before it reads the next request, so the client is held back by TCP instead.
     */
    static final int MAX_IN_FLIGHT = 64;

    SyncTasks(Executor pool, Export export, Replies replies, String peer) {
        this.pool = pool;
        this.export = export;
        this.device = export.device();
        this.replies = replies;
        this.peer = peer;
    }

    /**
     * Runs {@code kind} for the request {@code handle} on the pool; {@code start}, {@code cmd} and
     * {@code cmdLength} are the request's read time, type and length for its ExportStats record.
     */
    void submit(int kind, long handle, long offset, long length, long start, int cmd, long cmdLength) {
        Task t;
        synchronized (free) {
            while (inFlight >= MAX_IN_FLIGHT) {
                try {
                    free.wait();
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    break;
                }
            }
            t = free.poll();
            inFlight++;
        }
        if (t == null) {
            t = new Task();
        }
        t.kind = kind;
        t.handle = handle;
        t.offset = offset;
        t.length = length;
        t.start = start;
        t.cmd = cmd;
        t.cmdLength = cmdLength;
        pool.execute(t);
    }

    /** Waits until every submitted task has sent its reply (or an interrupt). */
    void awaitAll() {
        synchronized (free) {
            while (inFlight > 0) {
                try {
                    free.wait();
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    return;
                }
            }
        }
    }

    /** The answer of a task; a send failure is only logged (the connection's reader sees it too). */
    private void reply(long handle, int errno) {
        if (errno != 0) {
            export.errors().incrementAndGet();
        }
        try {
            replies.sendSimpleReply(handle, errno);
        } catch (IOException e) {
            Log.debug("%s: could not send reply: %s", peer, e.getMessage());
        }
    }

    private final class Task implements Runnable {
        int kind;
        long handle;
        long offset;
        long length;
        long start;         // for ExportStats: when the request was read, its type and length
        int cmd;
        long cmdLength;

        @Override
        public void run() {
            int errno = 0;
            try {
                if (kind == FLUSH) {
                    device.flush();
                } else {
                    device.forceRange(offset, length);
                }
            } catch (BlockDeviceException e) {
                errno = Connection.errno(Nbd.CMD_FLUSH, e);
            } catch (IOException e) {
                Log.warn("%s: flush of %s failed: %s", peer, export.name(), e.toString());
                errno = Connection.noSpace(e) ? Nbd.ENOSPC : Nbd.EIO;
            }
            long h = handle;
            long t0 = start;
            int c = cmd;
            long len = cmdLength;
            synchronized (free) {
                free.push(this);
            }
            try {
                reply(h, errno);
                export.stats().record(c, len, System.nanoTime() - t0, errno == 0);
            } finally {
                synchronized (free) {
                    inFlight--;
                    free.notifyAll();
                }
            }
        }
    }

    /** Some of this connection's FLUSH and FUA requests are being served or answered (a look without the lock). */
    boolean busy() {
        return inFlight > 0;
    }
}
