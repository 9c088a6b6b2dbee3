package io.snapbd.engine.io;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;

/**
 * Portable fallback: allocates by writing zeros (slow but real, {@code du} equals the size) and cannot zero
 * ranges in place, so the engine zeroes through its mapping instead.
 */
public final class JavaFileSpace implements FileSpace {

    private static final int CHUNK = 1 << 20;

    @Override
    public void preallocate(Path file, long size) throws IOException {
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.WRITE, StandardOpenOption.CREATE)) {
            ByteBuffer zeros = ByteBuffer.allocateDirect(CHUNK);
            long pos = 0;
            while (pos < size) {
                zeros.clear().limit((int) Math.min(CHUNK, size - pos));
                while (zeros.hasRemaining()) {
                    pos += ch.write(zeros, pos);
                }
            }
            ch.force(true);
        }
    }

    @Override
    public Zeroer openZeroer(Path file) {
        return new Zeroer() {
            @Override
            public boolean zeroRange(long offset, long length) {
                return false;
            }

            @Override
            public void close() {
            }
        };
    }

    @Override
    public String describe() {
        return "java (zero-fill preallocation)";
    }
}
