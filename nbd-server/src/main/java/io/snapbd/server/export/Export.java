package io.snapbd.server.export;

import io.snapbd.engine.BlockDevice;
import io.snapbd.server.protocol.Nbd;

import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;

/** One named NBD export: a block device plus what the protocol advertises for it and who is connected. */
public final class Export {

    private final String name;
    private final String description;
    private final BlockDevice device;
    private final AtomicInteger connections = new AtomicInteger();
    private final AtomicLong requests = new AtomicLong();
    private final AtomicLong errors = new AtomicLong();
    private final ExportStats stats = new ExportStats();
    private volatile String unavailableReason;

    public Export(String name, String description, BlockDevice device) {
        this.name = name;
        this.description = description;
        this.device = device;
    }

    public String name() {
        return name;
    }

    public String description() {
        return description;
    }

    public BlockDevice device() {
        return device;
    }

    public boolean readOnly() {
        return device.isReadOnly();
    }

    /**
     * Transmission flags, advertised truthfully. CAN_MULTI_CONN holds because every connection writes the same
     * shared mapping and FLUSH forces the whole data file, so one connection's FLUSH covers all connections.
     */
    public int transmissionFlags(boolean structuredReplies) {
        int f = Nbd.FLAG_HAS_FLAGS | Nbd.FLAG_SEND_FLUSH | Nbd.FLAG_SEND_CACHE | Nbd.FLAG_CAN_MULTI_CONN;
        if (device.isReadOnly()) {
            f |= Nbd.FLAG_READ_ONLY;
        } else {
            f |= Nbd.FLAG_SEND_FUA | Nbd.FLAG_SEND_TRIM | Nbd.FLAG_SEND_WRITE_ZEROES | Nbd.FLAG_SEND_FAST_ZERO;
        }
        if (structuredReplies) {
            f |= Nbd.FLAG_SEND_DF;
        }
        return f;
    }

    /** Null when clients may connect, else why not (clone in progress, snapshot terminated, being deleted). */
    public String unavailableReason() {
        String r = unavailableReason;
        return r != null ? r : device.unavailableReason();
    }

    public void setUnavailable(String reason) {
        this.unavailableReason = reason;
    }

    public int connections() {
        return connections.get();
    }

    public void connected() {
        connections.incrementAndGet();
    }

    public void disconnected() {
        connections.decrementAndGet();
    }

    public AtomicLong requests() {
        return requests;
    }

    public AtomicLong errors() {
        return errors;
    }

    /** Bytes and latency per request type, for the metrics endpoint. */
    public ExportStats stats() {
        return stats;
    }
}
