package io.snapbd.engine.mirror;

import java.io.Closeable;
import java.io.IOException;
import java.nio.ByteBuffer;

/**
 * The bytes a leg's tag table lives in: a fixed-size area that can be read, written and forced at offsets.
 * A file on the leg's own file system today ({@link FileTagStore}); later an area after the volume's blocks in
 * an NBD export, so the table survives exactly what the leg survives.
 */
public interface TagStore extends Closeable {

    /** Size of the area in bytes (fixed for the life of the table). */
    long size() throws IOException;

    /** Reads {@code dst.remaining()} bytes at {@code pos}; bytes past the end read as zeros. */
    void read(ByteBuffer dst, long pos) throws IOException;

    /** Writes all of {@code src} at {@code pos}; not durable until {@link #force}. */
    void write(ByteBuffer src, long pos) throws IOException;

    /** Makes every completed write durable. */
    void force() throws IOException;

    /** A name for error messages (the file, or the export and area). */
    String describe();
}
