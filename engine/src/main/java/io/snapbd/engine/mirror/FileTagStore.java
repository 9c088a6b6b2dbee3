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

    /**
     * Creates (or truncates) {@code file} as an area of {@code bytes} zeros, every block written (not a sparse or
     * preallocated file): a record appended later then overwrites an allocated, written block, so the table's
     * group-commit force is a plain {@code fdatasync} of that block. Appending into a hole instead allocates a
     * block, and the next force must commit the file system's journal as well (milliseconds on ext4, once per
     * 64 records; docs/mirrors.md, "Cost").
     */
    public static FileTagStore create(Path file, long bytes) throws IOException {
        FileChannel ch = FileChannel.open(file, StandardOpenOption.CREATE, StandardOpenOption.READ,
                StandardOpenOption.WRITE, StandardOpenOption.TRUNCATE_EXISTING);
        try {
            ByteBuffer zeros = ByteBuffer.allocate((int) Math.min(bytes, 1 << 20));
            for (long pos = 0; pos < bytes; ) {
                zeros.clear().limit((int) Math.min(zeros.capacity(), bytes - pos));
                while (zeros.hasRemaining()) {
                    pos += ch.write(zeros, pos);
                }
            }
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
