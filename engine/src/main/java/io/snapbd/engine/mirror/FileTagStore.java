package io.snapbd.engine.mirror;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;

/** A {@link TagStore} in a file: positional reads and writes, {@code fdatasync} for force. */
public final class FileTagStore implements TagStore {
    private final Path file;
    private final FileChannel ch;

    private FileTagStore(Path file, FileChannel ch) {
        this.file = file;
        this.ch = ch;
    }

    /** Creates (or truncates) {@code file} as a zero-filled area of {@code bytes}. */
    public static FileTagStore create(Path file, long bytes) throws IOException {
        FileChannel ch = FileChannel.open(file, StandardOpenOption.CREATE, StandardOpenOption.READ,
                StandardOpenOption.WRITE, StandardOpenOption.TRUNCATE_EXISTING);
        try {
            ch.write(ByteBuffer.allocate(1), bytes - 1);
        } catch (IOException e) {
            ch.close();
            throw new IOException(file + ": cannot size the tag table to " + bytes + " bytes: " + e.getMessage(), e);
        }
        return new FileTagStore(file, ch);
    }

    public static FileTagStore open(Path file, boolean writable) throws IOException {
        return new FileTagStore(file, writable
                ? FileChannel.open(file, StandardOpenOption.READ, StandardOpenOption.WRITE)
                : FileChannel.open(file, StandardOpenOption.READ));
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
                while (dst.hasRemaining()) {
                    dst.put((byte) 0);
                }
                return;
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
