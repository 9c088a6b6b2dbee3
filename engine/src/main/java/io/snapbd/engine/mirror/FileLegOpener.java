package io.snapbd.engine.mirror;

import io.snapbd.engine.io.FileSpace;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;

/**
 * File legs: the URI is an absolute path; the leg's blocks are the file at that path (the volume's size, at the
 * same offsets as {@code data.img}), its tag table the file {@code PATH.tags} next to it, on the leg's own file
 * system, so the table survives what the leg survives.
 */
public final class FileLegOpener implements LegOpener {

    public static final String TABLE_SUFFIX = ".tags";

    /** The tag table file of the file leg at {@code path}. */
    public static Path tableFile(Path path) {
        return path.resolveSibling(path.getFileName() + TABLE_SUFFIX);
    }

    static Path path(String uri) throws IOException {
        if (uri.contains("://")) {
            throw new IOException("mirror leg " + uri + ": no leg opener for this URI scheme (file legs are absolute paths)");
        }
        Path p = Path.of(uri);
        if (!p.isAbsolute()) {
            throw new IOException("mirror leg " + uri + ": a file leg must be an absolute path");
        }
        return p;
    }

    @Override
    public MirrorLeg create(String uri, long size, long tableBytes, boolean sparse, FileSpace space) throws IOException {
        Path p = path(uri);
        Path t = tableFile(p);
        if (Files.exists(p) || Files.exists(t)) {
            throw new FileAlreadyExistsException(p + (Files.exists(p) ? "" : TABLE_SUFFIX)
                    + ": mirror leg already exists; remove it or name another path");
        }
        if (p.getParent() != null && !Files.isDirectory(p.getParent())) {
            throw new IOException("mirror leg " + p + ": directory " + p.getParent() + " does not exist");
        }
        boolean done = false;
        try {
            if (sparse) {
                try (FileChannel ch = FileChannel.open(p, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE)) {
                    ch.write(ByteBuffer.allocate(1), size - 1);
                }
            } else {
                Files.createFile(p);
                space.preallocate(p, size);
            }
            FileTagStore.create(t, tableBytes).close();
            done = true;
        } finally {
            if (!done) {
                Files.deleteIfExists(p);
                Files.deleteIfExists(t);
            }
        }
        return open(uri);
    }

    @Override
    public MirrorLeg open(String uri) throws IOException {
        Path p = path(uri);
        FileLegIo data = new FileLegIo(p);
        try {
            return MirrorLeg.of(uri, data, FileTagStore.open(tableFile(p), true));
        } catch (IOException | RuntimeException e) {
            data.close();
            throw e;
        }
    }

    /** The table in {@code PATH.tags}, if that file exists and holds one. */
    @Override
    public TagTable.Identity identify(String uri, long volumeSize) throws IOException {
        Path t = tableFile(path(uri));
        if (!Files.isRegularFile(t)) {
            return null;
        }
        try (FileTagStore s = FileTagStore.open(t, false)) {
            return TagTable.identify(s);
        }
    }

    @Override
    public boolean exists(String uri) throws IOException {
        Path p = path(uri);
        return Files.exists(p) || Files.exists(tableFile(p));
    }

    @Override
    public void delete(String uri) throws IOException {
        Path p = path(uri);
        Files.deleteIfExists(p);
        Files.deleteIfExists(tableFile(p));
    }
}
