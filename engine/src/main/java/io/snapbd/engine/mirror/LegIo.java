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

    /** Makes every completed write durable on this leg. */
    void force() throws IOException;

    String describe();
}
