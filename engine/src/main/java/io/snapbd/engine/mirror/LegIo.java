package io.snapbd.engine.mirror;

import java.io.Closeable;
import java.io.IOException;
import java.nio.ByteBuffer;

/**
 * The volume's blocks on one leg, at the same offsets on every leg: what reconciliation reads from and writes
 * to: a file ({@link FileLegIo}) or an NBD export (whose writes may also be {@linkplain #asyncWrites asynchronous}).
 */
public interface LegIo extends Closeable {

    long size() throws IOException;

    void read(ByteBuffer dst, long pos) throws IOException;

    void write(ByteBuffer src, long pos) throws IOException;

    /**
     * True when a {@link #write} completes without waiting for a peer (a file: the page cache takes it), so a change
     * in hot regions costs no more than a few system calls and may run on the connection's reader; false (the
     * default: an NBD leg's round trip) keeps the change off the reader unless the leg's writes are
     * {@linkplain #asyncWrites asynchronous}.
     */
    default boolean quickWrites() {
        return false;
    }

    /**
     * True when {@link #submitWrite} sends a write without waiting for its completion (an NBD leg: the request goes
     * into the connection's pipeline, the reply comes on the connection's reader), so a change in hot regions may be
     * issued on the connection's reader and answered from the leg's completion, with no thread parked per change.
     */
    default boolean asyncWrites() {
        return false;
    }

    /**
     * A reusable completion slot for {@link #submitWrite}s whose end {@code done} hears of as leg {@code leg}: made
     * once per change state and leg (not per write), so a write allocates nothing. At most one write in flight per slot.
     */
    default WriteSlot writeSlot(WriteDone done, int leg) {
        throw new UnsupportedOperationException(describe() + ": no asynchronous writes");
    }

    /**
     * Sends a write of {@code src} at {@code pos} and returns without waiting for it: the data is taken (on the wire
     * or copied) before this returns, so {@code src} may be reused at once. The slot's {@link WriteDone} is told of
     * the end exactly once, on another thread or (a write that had to be done synchronously) before this returns.
     *
     * @throws IOException only when nothing was sent (then the slot hears nothing)
     */
    default void submitWrite(WriteSlot slot, ByteBuffer src, long pos) throws IOException {
        throw new UnsupportedOperationException(describe() + ": no asynchronous writes");
    }

    /** A leg's completion slot (see {@link #writeSlot}); opaque to the caller. */
    interface WriteSlot {
    }

    /** Hears of the end of a {@link #submitWrite}; runs on the leg's reply reader: short, no blocking leg calls. */
    interface WriteDone {
        /** @param failure null when the write completed, else why it did not (the leg's error, a lost connection) */
        void legWritten(int leg, IOException failure);
    }

    /** Makes every completed write durable on this leg. */
    void force() throws IOException;

    String describe();
}
