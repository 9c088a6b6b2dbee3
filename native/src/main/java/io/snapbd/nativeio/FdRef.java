package io.snapbd.nativeio;

import java.io.IOException;
import java.nio.channels.ClosedChannelException;

/**
 * A file descriptor shared by threads: it is closed only once no thread is inside a call on it, so its number
 * can never be reused under a thread that is still reading, writing or polling it.
 */
final class FdRef {

    private final int fd;
    private int users;          // guarded by this
    private boolean closed;     // guarded by this
    private boolean released;   // guarded by this

    FdRef(int fd) {
        this.fd = fd;
    }

    /** The descriptor number, for messages only: use {@link #acquire} to call on it. */
    int number() {
        return fd;
    }

    synchronized int acquire() throws ClosedChannelException {
        if (closed) {
            throw new ClosedChannelException();
        }
        users++;
        return fd;
    }

    void release() {
        boolean closeNow;
        synchronized (this) {
            users--;
            closeNow = closed && users == 0 && !released;
            if (closeNow) {
                released = true;
            }
        }
        if (closeNow) {
            closeQuietly();
        }
    }

    synchronized boolean isOpen() {
        return !closed;
    }

    /**
     * Marks the descriptor closed; {@code beforeClose} runs first (e.g. shutdown(2), which wakes threads blocked
     * on it). The descriptor itself is closed now or by the last thread still using it.
     */
    void close(IoAction beforeClose) throws IOException {
        boolean closeNow;
        synchronized (this) {
            if (closed) {
                return;
            }
            closed = true;
            try {
                if (beforeClose != null) {
                    beforeClose.run(fd);
                }
            } finally {
                closeNow = users == 0 && !released;
                if (closeNow) {
                    released = true;
                }
            }
        }
        if (closeNow) {
            closeQuietly();
        }
    }

    private void closeQuietly() {
        try {
            Native.libc().close(fd);
        } catch (IOException e) {
            // libc is loaded, or the descriptor could never have been used
        }
    }

    interface IoAction {
        void run(int fd) throws IOException;
    }
}
