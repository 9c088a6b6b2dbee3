package io.snapbd.server.fuzz;

import io.snapbd.engine.BlockDevice;
import io.snapbd.engine.io.ByteSink;
import io.snapbd.engine.io.ByteSource;
import io.snapbd.engine.lun.LunState;

import java.io.IOException;
import java.util.concurrent.atomic.AtomicReference;

/**
 * A real device seen through a window that remembers the first unchecked exception (or Error) any call threw
 * before passing it on: the connection turns those into EIO replies ("internal error"), which a client cannot
 * tell from a real I/O error, but for the fuzz targets each one is a bug.
 */
final class WatchedDevice implements BlockDevice {

    private final BlockDevice d;
    final AtomicReference<Throwable> unchecked = new AtomicReference<>();

    WatchedDevice(BlockDevice d) {
        this.d = d;
    }

    private void seen(Throwable t) {
        unchecked.compareAndSet(null, t);
    }

    @Override
    public String name() {
        return d.name();
    }

    @Override
    public long size() {
        return d.size();
    }

    @Override
    public int blockSize() {
        return d.blockSize();
    }

    @Override
    public boolean isReadOnly() {
        return d.isReadOnly();
    }

    @Override
    public boolean canZeroFast() {
        return d.canZeroFast();
    }

    @Override
    public String unavailableReason() {
        return d.unavailableReason();
    }

    @Override
    public LunState lunState() {
        return d.lunState();
    }

    @Override
    public Session openSession() {
        return d.openSession();
    }

    @Override
    public void read(Session s, long offset, int length, ByteSink sink) throws IOException {
        try {
            d.read(s, offset, length, sink);
        } catch (RuntimeException | Error e) {
            seen(e);
            throw e;
        }
    }

    @Override
    public void write(Session s, long offset, int length, ByteSource source, boolean fua) throws IOException {
        try {
            d.write(s, offset, length, source, fua);
        } catch (RuntimeException | Error e) {
            seen(e);
            throw e;
        }
    }





    @Override
    public void trim(Session s, long offset, long length, boolean fua) throws IOException {
        try {
            d.trim(s, offset, length, fua);
        } catch (RuntimeException | Error e) {
            seen(e);
            throw e;
        }
    }

    @Override
    public void writeZeroes(Session s, long offset, long length, boolean noHole, boolean fastOnly, boolean fua) throws IOException {
        try {
            d.writeZeroes(s, offset, length, noHole, fastOnly, fua);
        } catch (RuntimeException | Error e) {
            seen(e);
            throw e;
        }
    }

    @Override
    public void flush() throws IOException {
        try {
            d.flush();
        } catch (RuntimeException | Error e) {
            seen(e);
            throw e;
        }
    }

    @Override
    public void forceRange(long offset, long length) throws IOException {
        try {
            d.forceRange(offset, length);
        } catch (RuntimeException | Error e) {
            seen(e);
            throw e;
        }
    }

    @Override
    public void extents(long offset, long length, ExtentConsumer consumer) throws IOException {
        try {
            d.extents(offset, length, consumer);
        } catch (RuntimeException | Error e) {
            seen(e);
            throw e;
        }
    }
}
