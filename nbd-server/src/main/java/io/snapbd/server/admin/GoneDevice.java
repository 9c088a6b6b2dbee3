package io.snapbd.server.admin;

import io.snapbd.engine.BlockDeviceException;
import io.snapbd.engine.ReadOnlyDevice;
import io.snapbd.engine.io.ByteSink;
import io.snapbd.engine.snapshot.SnapshotRecord;
import io.snapbd.engine.volume.Volume;

/** The export of a snapshot that was terminated before this server started: listed, never served. */
final class GoneDevice implements ReadOnlyDevice {
    private final String name;
    private final Volume volume;
    private final SnapshotRecord record;

    GoneDevice(String name, Volume volume, SnapshotRecord record) {
        this.name = name;
        this.volume = volume;
        this.record = record;
    }

    @Override
    public String unavailableReason() {
        return "snapshot terminated: " + record.reason();
    }

    @Override
    public BlockDeviceException refusal() {
        return new BlockDeviceException(BlockDeviceException.Reason.UNAVAILABLE, name + " is not available: " + unavailableReason());
    }

    @Override
    public String name() {
        return name;
    }

    @Override
    public long size() {
        return volume.size();
    }

    @Override
    public int blockSize() {
        return volume.blockSize();
    }

    @Override
    public Session openSession() {
        return () -> { };
    }

    @Override
    public void read(Session s, long offset, int length, ByteSink sink) throws BlockDeviceException {
        throw refusal();
    }

    @Override
    public void extents(long offset, long length, ExtentConsumer consumer) throws BlockDeviceException {
        throw refusal();
    }
}
