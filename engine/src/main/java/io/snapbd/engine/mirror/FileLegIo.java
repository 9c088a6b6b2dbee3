package io.snapbd.engine.mirror;

import java.io.EOFException;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;

/** A leg that is a file of the volume's size. */
public final class FileLegIo implements LegIo {
    private final Path file;
    private final FileChannel ch;

    public FileLegIo(Path file) throws IOException {
        this.file = file;
        this.ch = FileChannel.open(file, StandardOpenOption.READ, StandardOpenOption.WRITE);
    }

    @Override
    public long size() throws IOException {
        return ch.size();
    }

    @Override
    public void read(ByteBuffer dst, long pos) throws IOException {
        long p = pos;
        while (dst.hasRemaining()) {
            int n = ch.read(dst, p);
            if (n < 0) {
                throw new EOFException(file + ": read past the end at " + p);
            }
            p += n;
        }
    }

    @Override
    public void write(ByteBuffer src, long pos) throws IOException {
        long p = pos;
        while (src.hasRemaining()) {
            p += ch.write(src, p);
        }
    }

    @Override
    public void force() throws IOException {
        ch.force(false);
    }

    @Override
    public String describe() {
        return file.toString();
    }

    @Override
    public void close() throws IOException {
        ch.close();
    }
}
