package io.snapbd.nativeio;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.WritableByteChannel;
import jnr.ffi.Pointer;
import jnr.ffi.Runtime;

/**
 * The gathering write shared by {@link NativeSocket} and {@link SocketPairs.End}: one {@code writev(2)} of up to
 * {@link #IOV_ENTRIES} direct buffers, or one {@code write(2)} per buffer when there is a single buffer or one on
 * the heap (it has no stable address). Allocates nothing per call beyond what {@code Pointer.wrap} does.
 */
final class Gather {

    /** Buffers per {@code writev}; the rest are left for the next call (a short write, as the contract allows). */
    static final int IOV_ENTRIES = 16;

    /** What {@link #writeUnlessGathered} returns when the caller is to {@code writev}. */
    static final long GATHER = -1;

    private Gather() {
    }

    /** A {@code struct iovec[IOV_ENTRIES]} to reuse (guarded by the caller). */
    static ByteBuffer newIov() {
        return ByteBuffer.allocateDirect(16 * IOV_ENTRIES).order(ByteOrder.nativeOrder());
    }

    /**
     * Writes what needs no {@code writev} through {@code ch} and returns the bytes written: nothing (0), or one
     * {@code write} per buffer, stopping at the first short one, when a single buffer has bytes or one of them is
     * on the heap. Otherwise writes nothing and returns {@link #GATHER}: fill the iovec and {@code writev}.
     */
    static long writeUnlessGathered(WritableByteChannel ch, ByteBuffer[] srcs, int offset, int length) throws IOException {
        int count = 0;
        boolean allDirect = true;
        for (int i = offset; i < offset + length; i++) {
            if (srcs[i].hasRemaining()) {
                count++;
                allDirect &= srcs[i].isDirect();
            }
        }
        if (count == 0) {
            return 0;
        }
        if (count > 1 && allDirect) {
            return GATHER;
        }
        long total = 0;
        for (int i = offset; i < offset + length; i++) {
            ByteBuffer b = srcs[i];
            if (!b.hasRemaining()) {
                continue;
            }
            total += ch.write(b);
            if (b.hasRemaining()) {
                break;
            }
        }
        return total;
    }

    /** Fills {@code iov} with the buffers that have bytes left (at most {@link #IOV_ENTRIES}); returns how many. */
    static int fill(ByteBuffer iov, ByteBuffer[] srcs, int offset, int length) throws IOException {
        Runtime runtime = Native.runtime();
        iov.clear();
        int entries = 0;
        for (int i = offset; i < offset + length && entries < IOV_ENTRIES; i++) {
            ByteBuffer b = srcs[i];
            if (b.hasRemaining()) {
                // A slice starts at the position, whatever wrap() does with positions.
                iov.putLong(Pointer.wrap(runtime, b.slice()).address());
                iov.putLong(b.remaining());
                entries++;
            }
        }
        iov.flip();
        return entries;
    }

    /** Moves the buffers' positions past the {@code n} bytes a {@code writev} wrote. */
    static void advance(ByteBuffer[] srcs, int offset, int length, long n) {
        long left = n;
        for (int i = offset; i < offset + length && left > 0; i++) {
            ByteBuffer b = srcs[i];
            int step = (int) Math.min(left, b.remaining());
            b.position(b.position() + step);
            left -= step;
        }
    }
}
