package io.snapbd.engine.io;

import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * Lets snapshot creation and restore stop production writers at a consistent point without a shared lock
 * on the write path: each session counts its writes in flight in its own slot and then checks the pause flag
 * (an atomic write then a volatile read, so either the writer sees the pause or the pauser sees the
 * writer). The pauser raises the flag and waits until no other session has a write inside.
 */
public final class WriteGate {

    /** One session's slot: how many of its writes are inside (a connection may have several in flight). */
    public static final class Slot {
        final AtomicInteger inside = new AtomicInteger();
        volatile Thread thread;
    }

    private final Set<Slot> slots = ConcurrentHashMap.newKeySet();
    private final Object pauseLock = new Object();
    private final Object resumed = new Object();
    private volatile boolean paused;
    private final long timeoutNanos;

    public WriteGate(long timeoutMillis) {
        this.timeoutNanos = TimeUnit.MILLISECONDS.toNanos(timeoutMillis);
    }

    public Slot register() {
        Slot s = new Slot();
        slots.add(s);
        return s;
    }

    public void unregister(Slot s) {
        slots.remove(s);
    }

    public void enter(Slot s) {
        while (true) {
            s.thread = Thread.currentThread();
            s.inside.incrementAndGet();
            if (!paused) {
                return;
            }
            s.inside.decrementAndGet();
            synchronized (resumed) {
                while (paused) {
                    try {
                        resumed.wait();
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                        return;
                    }
                }
            }
        }
    }

    public void exit(Slot s) {
        s.inside.decrementAndGet();
    }

    /**
     * Stops new writers and waits for the ones inside (other than the calling thread) to leave. Returns false,
     * with writers released again, if they do not leave within the timeout.
     */
    /** Whether changes are held back now (between {@link #pause} and {@link #resume}). */
    public boolean isPaused() {
        return paused;
    }

    public boolean pause() {
        synchronized (pauseLock) {
            while (paused) {
                try {
                    pauseLock.wait();
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    return false;
                }
            }
            paused = true;
        }
        long deadline = System.nanoTime() + timeoutNanos;
        Thread me = Thread.currentThread();
        for (Slot s : slots) {
            while (s.inside.get() > 0 && s.thread != me) {
                if (System.nanoTime() > deadline) {
                    resume();
                    return false;
                }
                try {
                    Thread.sleep(0, 200_000);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    resume();
                    return false;
                }
            }
        }
        return true;
    }

    public void resume() {
        synchronized (resumed) {
            paused = false;
            resumed.notifyAll();
        }
        synchronized (pauseLock) {
            pauseLock.notifyAll();
        }
    }
}
