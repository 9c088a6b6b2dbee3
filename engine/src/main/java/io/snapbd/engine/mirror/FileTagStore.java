package io.snapbd.engine.mirror;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;

/** A {@link TagStore} in a file: positional reads and writes, {@code fdatasync} for force; past the end reads zeros. */
public final class FileTagStore extends PositionalFile implements TagStore {

    private FileTagStore(Path file, FileChannel ch) {
        super(file, ch);
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
    void pastTheEnd(ByteBuffer dst, long pos) {
        while (dst.hasRemaining()) {
            dst.put((byte) 0);
        }
    }
}
