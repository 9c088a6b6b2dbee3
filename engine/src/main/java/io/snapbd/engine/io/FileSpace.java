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
     * Sets the nice value of the calling thread, one of the engine's background threads (the committer that
     * fills, forces and applies copy-on-write batches): it runs below the connection threads while nobody waits
     * for it and at their priority when writers do. Best effort: false when it cannot (the pure-Java
     * implementation; or a lower nice value than the thread has, without CAP_SYS_NICE or RLIMIT_NICE).
     */
    default boolean setCurrentThreadNice(int nice) {
        return false;
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
