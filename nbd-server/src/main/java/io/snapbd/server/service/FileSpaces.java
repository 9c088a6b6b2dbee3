package io.snapbd.server.service;

import io.snapbd.engine.io.FileSpace;
import io.snapbd.engine.io.JavaFileSpace;
import io.snapbd.nativeio.NativeFiles;
import io.snapbd.nativeio.ThreadPriority;
import io.snapbd.server.Log;

import java.io.IOException;
import java.nio.file.Path;

/** Chooses how the engine allocates space: fallocate through native/ where libc loads, zero-fill otherwise. */
public final class FileSpaces {
    private FileSpaces() {
    }

    public static FileSpace best() {
        return NativeFiles.available() ? new NativeFileSpace() : new JavaFileSpace();
    }

    static final class NativeFileSpace implements FileSpace {
        @Override
        public void preallocate(Path file, long size) throws IOException {
            NativeFiles.preallocate(file, size);
        }

        @Override
        public Zeroer openZeroer(Path file) throws IOException {
            NativeFiles.Zeroer z = NativeFiles.openZeroer(file);
            return new Zeroer() {
                @Override
                public boolean zeroRange(long offset, long length) throws IOException {
                    return z.zeroRange(offset, length);
                }

                @Override
                public void close() throws IOException {
                    z.close();
                }
            };
        }

        @Override
        public boolean setCurrentThreadNice(int nice) {
            try {
                ThreadPriority.setCurrentNice(nice);
                return true;
            } catch (IOException e) {
                Log.debug("cannot set the nice value of thread %s: %s", Thread.currentThread().getName(), e.getMessage());
                return false;
            }
        }

        @Override
        public String describe() {
            return "native (posix_fallocate, FALLOC_FL_ZERO_RANGE)";
        }
    }
}
