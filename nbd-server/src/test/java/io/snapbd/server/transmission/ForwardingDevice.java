package io.snapbd.server.transmission;

import io.snapbd.engine.BlockDevice;
import io.snapbd.engine.io.ByteSink;
import io.snapbd.engine.io.ByteSource;

import java.io.IOException;

/**
 * A device that passes every call to another one: tests override the calls they hold back or break (a READ that
 * waits for the test, a WRITE or FLUSH held in flight) and keep the real volume for the rest.
 */
class ForwardingDevice implements BlockDevice {
    final BlockDevice target;

    ForwardingDevice(BlockDevice target) {
        this.target = target;
    }

    @Override
    public String name() {
        return target.name();
    }

    @Override
    public long size() {
        return target.size();
    }

    @Override
    public int blockSize() {
        return target.blockSize();
    }

    @Override
    public boolean isReadOnly() {
        return target.isReadOnly();
    }

    @Override
    public boolean canZeroFast() {
        return target.canZeroFast();
    }

    @Override
    public Session openSession() {
        return target.openSession();
    }

    @Override
    public void read(Session s, long offset, int length, ByteSink sink) throws IOException {
        target.read(s, offset, length, sink);
    }

    @Override
    public void write(Session s, long offset, int length, ByteSource source, boolean fua) throws IOException {
        target.write(s, offset, length, source, fua);
    }

    @Override
    public void trim(Session s, long offset, long length, boolean fua) throws IOException {
        target.trim(s, offset, length, fua);
    }

    @Override
    public void writeZeroes(Session s, long offset, long length, boolean noHole, boolean fastOnly, boolean fua)
            throws IOException {
        target.writeZeroes(s, offset, length, noHole, fastOnly, fua);
    }

    @Override
    public void flush() throws IOException {
        target.flush();
    }

    @Override
    public void forceRange(long offset, long length) throws IOException {
        target.forceRange(offset, length);
    }

    @Override
    public void extents(long offset, long length, ExtentConsumer consumer) throws IOException {
        target.extents(offset, length, consumer);
    }
}
