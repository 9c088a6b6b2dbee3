package io.snapbd.engine.io;

import java.io.IOException;
import java.nio.file.Path;

/**
 * Space management for the engine's preallocated files. The engine is pure Java; the server plugs in
 * a native implementation (fallocate through {@code native/}) and falls back to {@link JavaFileSpace}.
 */
public interface FileSpace {

    /** Allocates {@code size} bytes of real disk space for {@code file} (not a sparse file); contents read as zero. */
    void preallocate(Path file, long size) throws IOException;

    /**
     * Opens a handle that can zero ranges of {@code file} without writing the bytes (FALLOC_FL_ZERO_RANGE),
     * keeping the allocation. Returns a handle whose {@link Zeroer#zeroRange} answers false when unsupported.
     */
    Zeroer openZeroer(Path file) throws IOException;

    /**
     * Lowers the scheduling priority of the calling thread, one of the engine's background threads (the
     * committer that fills, forces and applies copy-on-write batches), to {@code nice}, so that on a busy machine
     * the connection threads answering requests run first; the background thread still gets the CPU they leave,
     * and writers that run out of room wait for it. Best effort: the pure-Java implementation cannot and
     * does nothing.
     */
    default void lowerCurrentThreadPriority(int nice) {
    }

    /** Short human-readable name, shown by {@code status}. */
    String describe();

    interface Zeroer extends AutoCloseable {
        /**
         * Zeroes [offset, offset+length) keeping the space allocated; false if the file system cannot.
         * {@code zeroRange(0, 0)} touches nothing and answers whether the file system supports it.
         */
        boolean zeroRange(long offset, long length) throws IOException;

        @Override
        void close() throws IOException;
    }
}
