package io.snapbd.engine.mirror;

import io.snapbd.engine.io.Forces;

import java.io.Closeable;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;

/**
 * A file read and written at offsets through one channel, forced with {@code fdatasync}: what {@link FileLegIo}
 * and {@link FileTagStore} share. They differ only in what a read past the end means ({@link #pastTheEnd}).
 */
abstract class PositionalFile implements Closeable {
    private final Path file;
    private final FileChannel ch;

    PositionalFile(Path file, FileChannel ch) {
        this.file = file;
        this.ch = ch;
    }

    /** Called when a read reaches the end of the file at {@code pos} with {@code dst} not yet full. */
    abstract void pastTheEnd(ByteBuffer dst, long pos) throws IOException;

    public long size() throws IOException {
        return ch.size();
    }

    public void read(ByteBuffer dst, long pos) throws IOException {
        long p = pos;
        while (dst.hasRemaining()) {
            int n = ch.read(dst, p);
            if (n < 0) {
                pastTheEnd(dst, p);
                return;
            }
            p += n;
        }
    }

    public void write(ByteBuffer src, long pos) throws IOException {
        long p = pos;
        while (src.hasRemaining()) {
            p += ch.write(src, p);
        }
    }

    public void force() throws IOException {
        Forces.forcing(file);
        ch.force(false);
    }

    public String describe() {
        return file.toString();
    }

    @Override
    public void close() throws IOException {
        ch.close();
    }
}
