package io.snapbd.engine.mirror;

import java.io.IOException;
import java.io.InterruptedIOException;

/**
 * One extra leg's forces, run on the leg's own threads so that a change's forces on every leg run at the same
 * time instead of one leg after the other (docs/mirrors.md, "Cost"). Two kinds, each on a thread of its own so
 * that a batch's data force never delays the ENTRY forces of the changes behind it: {@link #TABLE} (the leg's tag
 * table up to a {@link TagTable#append} ticket) and {@link #DATA} (the leg's blocks). Group commit: a caller
 * {@link #request}s a value and {@link #await}s it; one force covers every value requested before it started.
 * Allocates nothing per request. A force that fails fails every waiter whose value it covered, with its error.
 */
final class LegForcer implements AutoCloseable {

    static final int TABLE = 0;
    static final int DATA = 1;

    /** Makes everything up to {@code upTo} durable (what {@code upTo} means depends on the kind). */
    @FunctionalInterface
    interface Force {
        void force(long upTo) throws IOException;
    }

    private final Force[] forces;
    private final long[] requested = new long[2];
    private final long[] done = new long[2];
    private final long[] failedUpTo = new long[2];
    private final Exception[] error = new Exception[2];
    private final String name;
    private boolean closed;

    LegForcer(String name, Force table, Force data) {
        this.name = name;
        this.forces = new Force[] {table, data};
        for (int k = 0; k < 2; k++) {
            int kind = k;
            Thread t = new Thread(() -> run(kind), name + (k == TABLE ? " table" : " data"));
            t.setDaemon(true);
            t.start();
        }
    }

    synchronized void request(int kind, long upTo) {
        if (upTo > requested[kind]) {
            requested[kind] = upTo;
            notifyAll();
        }
    }

    /** Waits until a force covering {@code upTo} completed; throws that force's error if it failed. */
    synchronized void await(int kind, long upTo) throws IOException {
        while (done[kind] < upTo) {
            if (failedUpTo[kind] >= upTo) {
                Exception e = error[kind];
                throw e instanceof IOException io ? new IOException(io.getMessage(), io)
                        : new IOException(String.valueOf(e), e);
            }
            if (closed) {
                throw new IOException(name + ": closed");
            }
            try {
                wait();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new InterruptedIOException(name + ": interrupted while waiting for a force");
            }
        }
    }

    /** Forgets every value (the leg was opened again: its table's tickets start anew). No change may be in flight. */
    synchronized void reset() {
        for (int k = 0; k < 2; k++) {
            requested[k] = 0;
            done[k] = 0;
            failedUpTo[k] = 0;
            error[k] = null;
        }
    }

    private boolean pending(int k) {
        return requested[k] > Math.max(done[k], failedUpTo[k]);
    }

    private void run(int k) {
        while (true) {
            long target;
            synchronized (this) {
                while (!closed && !pending(k)) {
                    try {
                        wait();
                    } catch (InterruptedException e) {
                        closed = true;
                    }
                }
                if (closed) {
                    notifyAll();
                    return;
                }
                target = requested[k];
            }
            Exception err = null;
            try {
                forces[k].force(target);
            } catch (Exception e) {
                err = e;
            }
            synchronized (this) {
                if (err == null) {
                    done[k] = Math.max(done[k], target);
                } else {
                    failedUpTo[k] = Math.max(failedUpTo[k], target);
                    error[k] = err;
                }
                notifyAll();
            }
        }
    }

    /** Stops the threads (after the forces they run, if any); later waiters fail. */
    @Override
    public void close() {
        synchronized (this) {
            closed = true;
            notifyAll();
        }
    }
}
