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

    /** Per-connection state (cached mapping views). */
    Session openSession();

    void read(Session s, long offset, int length, ByteSink sink) throws IOException;

    void write(Session s, long offset, int length, ByteSource source, boolean fua) throws IOException;

    /**
     * Two-phase write, so a connection can batch the durability work of many writes: {@link #prepareWrite}
     * makes the before-images snapshots need (not yet durable) and answers whether {@link #commitPrepared}
     * must run before the data may be written; {@link #finishWrite} then writes the data. Every successful
     * prepare must be followed by one finish (or {@link #abortPrepared}).
     */
    default boolean prepareWrite(Session s, long offset, int length) throws IOException {
        throw new BlockDeviceException(BlockDeviceException.Reason.READ_ONLY, name() + " is read-only");
    }

    default void commitPrepared() throws IOException {
    }

    default void finishWrite(Session s, long offset, int length, ByteSource source) throws IOException {
        throw new BlockDeviceException(BlockDeviceException.Reason.READ_ONLY, name() + " is read-only");
    }

    /** Ends a prepared write whose data will never come (the client went away). */
    default void abortPrepared(Session s) {
    }

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
