package io.snapbd.server.transmission;

import io.snapbd.engine.BlockDevice;
import io.snapbd.engine.BlockDeviceException;
import io.snapbd.engine.io.ByteSource;
import io.snapbd.server.Log;
import io.snapbd.server.export.Export;
import io.snapbd.server.protocol.Nbd;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Executor;

/**
 * The WRITE, TRIM and WRITE_ZEROES requests of one connection to a device whose changes wait for slow work
 * ({@link BlockDevice#slowChanges()}: a mirrored volume, whose every change waits for its ENTRY group commit on
 * every leg), run on the shared sync pool and answered out of order, so that the connection goes on reading and
 * starting requests meanwhile and its requests in flight join one group commit (docs/mirrors.md, "Group commit").
 * The same shape as {@link SyncTasks}: tasks pooled per connection, at most {@link #MAX_IN_FLIGHT} at once (the
 * reader waits at the bound, holding the client back by TCP). Each task owns a device session (the engine's
 * per-session state, so tasks run in parallel) and a payload buffer that grows to the largest write it carried:
 * no allocation per request in steady state. A WRITE's payload is received in full by the reader before its task
 * starts. Overlapping changes in flight wait for each other in the engine (the mirror's range locks), on the pool's
 * threads; a WRITE that waits only for NBD legs' replies ({@link BlockDevice#asyncChange}) is started on the reader
 * instead ({@link #startHere}) and answered once the last leg replied, so an overlapping one may wait on the reader
 * until that reply; its reply is sent from the pool ({@link #completedElsewhere}), never by the leg's reply reader,
 * which serves every connection of the volume and must not wait for one client's full socket.
 */
final class ChangeTasks {

    static final int WRITE = 0;
    static final int TRIM = 1;
    static final int WRITE_ZEROES = 2;

    /** Most changes of one connection in flight at once (a client's queue depth beyond it waits in TCP). */
    static final int MAX_IN_FLIGHT = 32;
    /** Largest WRITE run as a task (its payload copied into the task's buffer); larger ones run inline. */
    static final int MAX_PAYLOAD = 256 << 10;

    private final Executor pool;
    private final Export export;
    private final BlockDevice device;
    private final Replies replies;
    private final String peer;
    private final ArrayDeque<Task> free = new ArrayDeque<>();
    private final List<Task> all = new ArrayList<>();
    /** Written under {@code free}; volatile so the reader can look without the lock ({@link #busy()}). */
    private volatile int inFlight;
    /**
     * Changes completed on a thread that must not write to this client's socket (an NBD leg's reply reader, which
     * completes the changes of every connection of the volume): their replies wait here for {@link #answerer}, a pool
     * task, so a client that stops reading its replies blocks only its own answers, never the leg.
     */
    private final ArrayDeque<Task> completed = new ArrayDeque<>(MAX_IN_FLIGHT);
    private boolean answererScheduled;  // guarded by completed
    private final Task[] answering = new Task[MAX_IN_FLIGHT];
    private final Runnable answerer = this::answerCompleted;

    ChangeTasks(Executor pool, Export export, Replies replies, String peer) {
        this.pool = pool;
        this.export = export;
        this.device = export.device();
        this.replies = replies;
        this.peer = peer;
    }

    /** A free task (waits while {@link #MAX_IN_FLIGHT} run); the caller fills it and {@link #start}s or {@link #cancel}s it. */
    Task acquire() throws IOException {
        Task t;
        synchronized (free) {
            while (inFlight >= MAX_IN_FLIGHT) {
                try {
                    free.wait();
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    throw new IOException("interrupted while waiting for a change in flight");
                }
            }
            t = free.poll();
            inFlight++;
            if (t == null) {
                t = new Task();
                all.add(t);
            }
        }
        return t;
    }

    /** Runs a filled task on the pool; it answers its request. */
    void start(Task t, int kind, long handle, int flags, long offset, long length, long start, int cmd) {
        t.kind = kind;
        t.handle = handle;
        t.flags = flags;
        t.offset = offset;
        t.length = length;
        t.start = start;
        t.cmd = cmd;
        pool.execute(t);
    }

    /**
     * Starts a filled WRITE task (no FUA) on the calling thread, the connection's reader, for a change the device can
     * complete later ({@link BlockDevice#asyncChange}: a mirror's hot regions with an NBD leg): leg 0 and the file
     * legs are written here, the NBD legs' writes sent, and the task answers its request from
     * {@link Task#changeDone} on the thread that sees the last leg's reply. No pool thread waits for the leg; the
     * task (with its device session and its op) is the change's completion slot, so at most {@link #MAX_IN_FLIGHT}
     * are in flight per connection.
     */
    void startHere(Task t, long handle, int flags, long offset, int length, long start) {
        t.kind = WRITE;
        t.handle = handle;
        t.flags = flags;
        t.offset = offset;
        t.length = length;
        t.start = start;
        t.cmd = Nbd.CMD_WRITE;
        t.startedBy = Thread.currentThread();
        int errno;
        try {
            if (t.session == null) {
                t.session = device.openSession();
            }
            t.payload.flip();
            device.writeThen(t.session, offset, length, t, t);
            return;
        } catch (IOException | RuntimeException | InternalError e) {
            errno = t.errno(e);
        }
        t.answer(errno);
    }

    /**
     * A change that ended on a thread other than the reader that started it ({@link Task#changeDone}): its reply goes
     * out from the pool ({@link #answerCompleted}), with every other one completed meanwhile, in one system call.
     */
    private void completedElsewhere(Task t) {
        boolean schedule;
        synchronized (completed) {
            completed.add(t);
            schedule = !answererScheduled;
            answererScheduled = true;
        }
        if (schedule) {
            pool.execute(answerer);
        }
    }

    /** The pool task of {@link #completedElsewhere}: answers every completed change, until none is left. */
    private void answerCompleted() {
        while (true) {
            int n = 0;
            synchronized (completed) {
                Task t;
                while ((t = completed.poll()) != null) {
                    answering[n++] = t;
                }
                if (n == 0) {
                    answererScheduled = false;
                    return;
                }
            }
            try {
                for (int i = 0; i < n; i++) {
                    replies.leave(answering[i].handle, answering[i].completedErrno);
                }
                replies.sendLeft();             // all of them in one writev (or by the send lock's holder)
            } catch (IOException e) {
                Log.debug("%s: could not send replies: %s", peer, e.getMessage());
            }
            for (int i = 0; i < n; i++) {
                Task t = answering[i];
                answering[i] = null;
                t.answered(t.completedErrno);
            }
        }
    }

    /** Gives back a task that will not run (its payload could not be read). */
    void cancel(Task t) {
        release(t);
    }

    private void release(Task t) {
        synchronized (free) {
            free.push(t);
            inFlight--;
            free.notifyAll();
        }
    }

    /** Waits until every started task has sent its reply (or an interrupt). */
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

    /** Closes the tasks' device sessions (after {@link #awaitAll}, when the connection ends). */
    void close() {
        synchronized (free) {
            for (Task t : all) {
                if (t.session != null) {
                    t.session.close();
                    t.session = null;
                }
            }
        }
    }

    /** One change in flight: its request, its own device session and payload buffer. */
    final class Task implements Runnable, ByteSource, BlockDevice.ChangeDone {
        int kind;
        long handle;
        int flags;
        long offset;
        long length;
        long start;         // for ExportStats: when the request was read, its type
        int cmd;
        BlockDevice.Session session;
        private ByteBuffer payload;

        /** The buffer the reader fills with a WRITE's {@code length} payload bytes (grown if needed, then reused). */
        ByteBuffer payload(int length) {
            if (payload == null || payload.capacity() < length) {
                payload = ByteBuffer.allocateDirect(Math.max(64 << 10, Integer.highestOneBit(Math.max(1, length - 1)) << 1));
            }
            payload.clear().limit(length);
            return payload;
        }

        @Override
        public void readFully(ByteBuffer dst) throws IOException {
            int n = dst.remaining();
            if (n > payload.remaining()) {
                throw new IOException("the engine asked for " + n + " more payload bytes, the write has " + payload.remaining());
            }
            int limit = payload.limit();
            payload.limit(payload.position() + n);
            dst.put(payload);
            payload.limit(limit);
        }

        @Override
        public void run() {
            int errno = 0;
            try {
                if (session == null) {
                    session = device.openSession();
                }
                boolean fua = (flags & Nbd.CMD_FLAG_FUA) != 0;
                switch (kind) {
                    case WRITE -> {
                        payload.flip();
                        device.write(session, offset, (int) length, this, false);
                        if (fua) {
                            device.forceRange(offset, length);
                        }
                    }
                    case TRIM -> device.trim(session, offset, length, false);
                    default -> device.writeZeroes(session, offset, length, (flags & Nbd.CMD_FLAG_NO_HOLE) != 0,
                            (flags & Nbd.CMD_FLAG_FAST_ZERO) != 0, false);
                }
                if (fua && kind != WRITE) {
                    device.flush();
                }
            } catch (IOException | RuntimeException | InternalError e) {
                errno = errno(e);
            }
            answer(errno);
        }

        /**
         * The end of a change started by {@link #startHere}: on the reader itself (a change that ended at once) it is
         * answered here; on the thread that saw its last leg complete (an NBD leg's reply reader) it is handed to the
         * pool, as that thread must never wait for this client's socket.
         */
        @Override
        public void changeDone(IOException failure) {
            int errno = failure == null ? 0 : errno(failure);
            if (Thread.currentThread() == startedBy) {
                answer(errno);
                return;
            }
            completedErrno = errno;
            completedElsewhere(this);
        }

        /** The reader that ran {@link #startHere}, and the errno a change completed elsewhere answers. */
        Thread startedBy;
        int completedErrno;

        /** The errno a failed change answers, logged as the pool's tasks always did. */
        int errno(Throwable e) {
            if (e instanceof BlockDeviceException b) {
                int errno = Connection.errno(cmd, b);
                Log.debug("%s: %s -> errno %d: %s", peer, Nbd.commandName(cmd), errno, e.getMessage());
                return errno;
            }
            if (e instanceof IOException io) {
                Log.warn("%s: %s on %s failed: %s", peer, Nbd.commandName(cmd), export.name(), e.toString());
                return Connection.noSpace(io) ? Nbd.ENOSPC : Nbd.EIO;
            }
            // a bug, or SIGBUS through the mapping: this request fails, the connection (its payload read) goes on
            Log.error("%s: internal error in %s on %s: %s", peer, Nbd.commandName(cmd), export.name(), e.toString());
            return Nbd.EIO;
        }

        /** Sends the reply, records the request and frees the task (the last thing: the reader may reuse it at once). */
        void answer(int errno) {
            try {
                replies.sendSimpleReplyOrLeave(handle, errno);     // many tasks end together: one writev
            } catch (IOException e) {
                Log.debug("%s: could not send reply: %s", peer, e.getMessage());
            }
            answered(errno);
        }

        /** Records the answered request and frees the task (the last thing: the reader may reuse it at once). */
        void answered(int errno) {
            try {
                if (errno != 0) {
                    export.errors().incrementAndGet();
                }
                export.stats().record(cmd, length, System.nanoTime() - start, errno == 0);
            } finally {
                release(this);
            }
        }
    }

    /** Some of this connection's changes are being served or answered (a look without the lock). */
    boolean busy() {
        return inFlight > 0;
    }
}
