package io.snapbd.engine.format;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;

/** Positional whole-buffer reads and writes of the metadata files, which a short read means truncated. */
public final class ChannelIo {

    private ChannelIo() {
    }

    /** Writes all of {@code b} from its start at {@code pos}. */
    public static void writeFully(FileChannel ch, ByteBuffer b, long pos) throws IOException {
        b.position(0);
        while (b.hasRemaining()) {
            pos += ch.write(b, pos);
        }
    }

    /** Fills {@code b} from {@code pos}; the end of the file first is corrupt metadata naming {@code path}. */
    public static void readFully(FileChannel ch, ByteBuffer b, long pos, Path path) throws IOException {
        while (b.hasRemaining()) {
            int n = ch.read(b, pos);
            if (n < 0) {
                throw new CorruptMetadataException(path, "file is truncated at byte " + pos);
            }
            pos += n;
        }
    }
}
