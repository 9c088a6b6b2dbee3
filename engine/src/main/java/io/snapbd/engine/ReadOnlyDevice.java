package io.snapbd.engine;

import io.snapbd.engine.io.ByteSource;

/**
 * A device that never changes (a snapshot export, or one that is gone): every write, trim and write-zeroes
 * fails with {@link #refusal}, zeroing is never fast, and there is nothing to make durable.
 */
public interface ReadOnlyDevice extends BlockDevice {

    /** The error of every altering request: why this device cannot change. */
    BlockDeviceException refusal();

    @Override
    default boolean isReadOnly() {
        return true;
    }

    @Override
    default boolean canZeroFast() {
        return false;
    }

    @Override
    default void write(Session s, long offset, int length, ByteSource source, boolean fua) throws BlockDeviceException {
        throw refusal();
    }

    @Override
    default void trim(Session s, long offset, long length, boolean fua) throws BlockDeviceException {
        throw refusal();
    }

    @Override
    default void writeZeroes(Session s, long offset, long length, boolean noHole, boolean fastOnly, boolean fua)
            throws BlockDeviceException {
        throw refusal();
    }

    @Override
    default void flush() {
        // nothing to make durable: the device never changes
    }

    @Override
    default void forceRange(long offset, long length) {
    }
}
