package io.snapbd.server.client;

import io.snapbd.server.protocol.Nbd;

/**
 * One block-status descriptor: {@code length} bytes from {@code offset} share the status {@code flags}, whose
 * meaning belongs to the metadata context that produced them.
 */
public record Extent(long offset, long length, int flags) {

    /** {@code base:allocation}: not allocated in the server's storage ({@code NBD_STATE_HOLE}). */
    public boolean isHole() {
        return (flags & Nbd.STATE_HOLE) != 0;
    }

    /** {@code base:allocation}: reads as zeroes ({@code NBD_STATE_ZERO}). */
    public boolean isZero() {
        return (flags & Nbd.STATE_ZERO) != 0;
    }

    /** First byte past the extent. */
    public long end() {
        return offset + length;
    }
}
