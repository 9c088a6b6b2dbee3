package io.snapbd.engine;

import io.snapbd.engine.io.ByteSink;
import io.snapbd.engine.io.ByteSource;
import io.snapbd.engine.lun.LunState;

import java.io.IOException;

/**
 * The narrow interface between a protocol and the storage: what one export can do. Volumes and snapshot views
 * implement it. Methods taking a {@link Session} are called by one thread per session at a time.
 */
public interface BlockDevice {

    String name();

    long size();

    int blockSize();

    boolean isReadOnly();

    /** True when zeroing never writes data (FAST_ZERO can be honoured). */
    boolean canZeroFast();

    /** Null while clients may use the device, else why not (e.g. a terminated snapshot). */
    default String unavailableReason() {
        return null;
    }

    /** HP LUN state of this export, or null when it never changes (read-only snapshot exports). */
    default LunState lunState() {
        return null;
    }

    /**
     * True when a change waits for slow work before it completes (a mirrored volume: its ENTRY group commit on every
     * leg), so a protocol gains by running several changes of one connection at once, each on a session of its own,
     * and answering them out of order. False (the default): changes are quick and run one at a time.
     */
    default boolean slowChanges() {
        return false;
    }

    /**
     * Whether the change of [offset, offset+length) would now wait for slow work (a hint, for a device with
     * {@link #slowChanges()}): false lets the protocol run it inline, as on a device without slow changes. A mirrored
     * volume answers false for a change whose regions are all hot with file legs only.
     */
    default boolean slowChange(long offset, long length) {
        return slowChanges();
    }

    /**
     * Whether a WRITE of [offset, offset+length) (no FUA) can now be started by the caller and completed later with
     * {@link #writeThen}: it waits for no force, only for a peer's reply (a mirrored volume's hot regions with an NBD
     * leg). A hint, like {@link #slowChange}: a change that turns out slower is still correct, only slower.
     */
    default boolean asyncChange(long offset, long length) {
        return false;
    }

    /**
     * {@link #write} without FUA whose end may come later, from another thread: {@code done} hears of it exactly once
     * (possibly before this returns). Throws only when the write failed before anything of it was left in flight
     * (then {@code done} is not called). Each session has at most one such write in flight. The default writes now.
     */
    default void writeThen(Session s, long offset, int length, ByteSource source, ChangeDone done) throws IOException {
        write(s, offset, length, source, false);
        done.changeDone(null);
    }

    /** The end of a {@link #writeThen}: null when the change is done on every leg, else why it failed. */
    interface ChangeDone {
        void changeDone(IOException failure);
    }

    /** Per-connection state (cached mapping views). */
    Session openSession();

    void read(Session s, long offset, int length, ByteSink sink) throws IOException;

    /**
     * Writes {@code length} bytes, read in order from {@code source}, at {@code offset}; with {@code fua} the
     * range is durable when it returns. The one write call: a device that must make before-images durable
     * first (snapshots) does so inside, batched with other sessions' writes. On failure {@code source} may have
     * been read in part or not at all; the caller owns the stream and learns from its source how much was taken.
     */
    void write(Session s, long offset, int length, ByteSource source, boolean fua) throws IOException;

    /** Discards whole blocks inside the range: they become not-in-use and read as zeros. */
    void trim(Session s, long offset, long length, boolean fua) throws IOException;

    /** Zeroes the range; with {@code noHole} the blocks stay in use, else whole blocks become holes. */
    void writeZeroes(Session s, long offset, long length, boolean noHole, boolean fastOnly, boolean fua) throws IOException;

    /** Every write completed before this call is durable when it returns. */
    void flush() throws IOException;

    /** The written range [offset, offset+length) is durable when it returns (FUA). */
    void forceRange(long offset, long length) throws IOException;

    /**
     * Reports the in-use state of [offset, offset+length) as consecutive extents, in order, until the consumer
     * returns false or the range is covered. Not-in-use extents read as zeros.
     */
    void extents(long offset, long length, ExtentConsumer consumer) throws IOException;

    interface Session extends AutoCloseable {
        @Override
        void close();
    }

    @FunctionalInterface
    interface ExtentConsumer {
        boolean accept(long offset, long length, boolean inUse) throws IOException;
    }

    /** Common bounds check: a clear error that says what was asked and what exists. */
    static void checkRange(BlockDevice d, long offset, long length) throws BlockDeviceException {
        if (offset < 0 || length < 0 || offset > d.size() || length > d.size() - offset) {
            throw new BlockDeviceException(BlockDeviceException.Reason.OUT_OF_RANGE,
                    "request [" + offset + ", +" + length + ") is outside " + d.name() + " (" + d.size() + " bytes)");
        }
    }
}
