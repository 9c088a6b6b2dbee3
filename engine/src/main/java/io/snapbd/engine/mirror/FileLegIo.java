package io.snapbd.engine.mirror;

import java.io.EOFException;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;

/** A leg that is a file of the volume's size; a read past its end is an error. */
public final class FileLegIo extends PositionalFile implements LegIo {

    public FileLegIo(Path file) throws IOException {
        super(file, FileChannel.open(file, StandardOpenOption.READ, StandardOpenOption.WRITE));
    }

    /** A write lands in the page cache: no peer to wait for. */
    @Override
    public boolean quickWrites() {
        return true;
    }

    @Override
    void pastTheEnd(ByteBuffer dst, long pos) throws IOException {
        throw new EOFException(describe() + ": read past the end at " + pos);
    }
}
