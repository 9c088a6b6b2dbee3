package io.snapbd.engine.mirror;

import java.io.Closeable;
import java.io.IOException;
import java.nio.ByteBuffer;

/**
 * The volume's blocks on one leg, at the same offsets on every leg: what reconciliation reads from and writes
 * to. A file today ({@link FileLegIo}); an NBD export later.
 */
public interface LegIo extends Closeable {

    long size() throws IOException;

    void read(ByteBuffer dst, long pos) throws IOException;

    void write(ByteBuffer src, long pos) throws IOException;

    /**
     * True when a {@link #write} completes without waiting for a peer (a file: the page cache takes it), so a change
     * in hot regions costs no more than a few system calls and may run on the connection's reader; false (the
     * default: an NBD leg's round trip) keeps every change off the reader.
     */
    default boolean quickWrites() {
        return false;
    }

    /** Makes every completed write durable on this leg. */
    void force() throws IOException;

    String describe();
}
