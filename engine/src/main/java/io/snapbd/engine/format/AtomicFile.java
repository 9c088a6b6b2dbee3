package io.snapbd.engine.format;

import io.snapbd.engine.io.Forces;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;

/** Replace-by-rename with fsync of the file and its directory: a reader sees the old or the new content, never a mix. */
public final class AtomicFile {
    private AtomicFile() {
    }

    /**
     * Replaces {@code target} by {@code content}. On failure the target is unchanged, the temporary copy is
     * removed, and the error names the file (the JDK's say only "No space left on device").
     */
    public static void write(Path target, ByteBuffer content) throws IOException {
        Path tmp = target.resolveSibling(target.getFileName() + ".tmp");
        try {
            try (FileChannel ch = FileChannel.open(tmp, StandardOpenOption.CREATE, StandardOpenOption.WRITE,
                    StandardOpenOption.TRUNCATE_EXISTING)) {
                ByteBuffer b = content.duplicate();
                long pos = 0;
                while (b.hasRemaining()) {
                    pos += ch.write(b, pos);
                }
                Forces.forcing(tmp);
                ch.force(true);
            }
            Files.move(tmp, target, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        } catch (IOException e) {
            try {
                Files.deleteIfExists(tmp);
            } catch (IOException suppressed) {
                e.addSuppressed(suppressed);
            }
            String m = e.getMessage();
            throw m != null && m.contains(target.toString()) ? e
                    : new IOException(target + ": cannot write its new copy (" + tmp.getFileName() + "): " + m, e);
        }
        fsyncDirectory(target.getParent());
    }

    public static void fsyncDirectory(Path dir) throws IOException {
        try (FileChannel ch = FileChannel.open(dir, StandardOpenOption.READ)) {
            Forces.forcing(dir);
            ch.force(true);
        } catch (IOException e) {
            // Some file systems refuse fsync on a directory; the rename itself is still atomic there.
        }
    }

    public static ByteBuffer readAll(Path file, int maxBytes) throws IOException {
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            long size = ch.size();
            if (size > maxBytes) {
                throw new CorruptMetadataException(file, "file is " + size + " bytes, more than the " + maxBytes + " expected");
            }
            ByteBuffer b = ByteBuffer.allocate((int) size);
            while (b.hasRemaining() && ch.read(b) >= 0) {
                // keep reading
            }
            return b.flip();
        }
    }
}
