package io.snapbd.engine.io;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.MappedByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;

/**
 * A preallocated file mapped in 1 GiB segments (a MappedByteBuffer is int-indexed), so files up to many
 * TiB are addressable on Java 17. Segments are mapped on first use. Access goes through a {@link Cursor},
 * which keeps its own views of each segment so a request allocates nothing.
 */
public final class MappedData implements AutoCloseable {

    public static final int SEGMENT_SHIFT = 30;
    public static final long SEGMENT_BYTES = 1L << SEGMENT_SHIFT;

    private final Path path;
    private final FileChannel channel;
    private final long size;
    private final MappedByteBuffer[] segments;

    public MappedData(Path path, long size) throws IOException {
        this.path = path;
        this.channel = FileChannel.open(path, StandardOpenOption.READ, StandardOpenOption.WRITE);
        long actual = channel.size();
        if (actual < size) {
            channel.close();
            throw new IOException(path + " is " + actual + " bytes, expected at least " + size);
        }
        this.size = size;
        long count = (size + SEGMENT_BYTES - 1) >>> SEGMENT_SHIFT;
        this.segments = new MappedByteBuffer[(int) count];
    }

    public long size() {
        return size;
    }

    /**
     * The error to report for {@code e}, the JVM's {@code InternalError} for a SIGBUS on this file's mapping: a
     * page of a sparse file the file system has no space to allocate (ENOSPC), or a read error of the device.
     */
    public IOException fault(InternalError e) {
        return faultOf(path, e);
    }

    /** As {@link #fault}, for a file whose mapping is not at hand. */
    public static IOException faultOf(Path path, InternalError e) {
        return new IOException(path + ": access through the memory mapping failed (SIGBUS: no space left on the file system"
                + " for a page of a sparse file, or an I/O error): " + e.getMessage(), e);
    }

    public Path path() {
        return path;
    }

    MappedByteBuffer segment(int index) throws IOException {
        MappedByteBuffer s = segments[index];
        if (s != null) {
            return s;
        }
        synchronized (this) {
            s = segments[index];
            if (s == null) {
                long start = (long) index << SEGMENT_SHIFT;
                long len = Math.min(SEGMENT_BYTES, size - start);
                s = channel.map(FileChannel.MapMode.READ_WRITE, start, len);
                segments[index] = s;
            }
            return s;
        }
    }

    /** Forces [offset, offset+length) of the mapping to disk (msync of just that range). */
    public void force(long offset, long length) throws IOException {
        Forces.forcing(path, offset, length);
        long pos = offset;
        long end = offset + length;
        while (pos < end) {
            int seg = (int) (pos >>> SEGMENT_SHIFT);
            int inSeg = (int) (pos & (SEGMENT_BYTES - 1));
            int n = (int) Math.min(end - pos, segmentLength(seg) - inSeg);
            MappedByteBuffer s = segments[seg];
            if (s != null) {
                s.force(inSeg, n);
            }
            pos += n;
        }
    }

    /**
     * Writes {@code src} at {@code offset} through the file (not the mapping): for bulk copies that should not
     * take a page fault per page; the mapping sees the data at once (one page cache).
     */
    public void write(ByteBuffer src, long offset) throws IOException {
        long pos = offset;
        while (src.hasRemaining()) {
            pos += channel.write(src, pos);
        }
    }

    /** Forces every dirty page of the file; pages dirtied through the mapping are included (Linux page cache). */
    public void forceAll() throws IOException {
        Forces.forcing(path, 0, -1);
        channel.force(false);
    }

    private long segmentLength(int seg) {
        return Math.min(SEGMENT_BYTES, size - ((long) seg << SEGMENT_SHIFT));
    }

    public Cursor cursor() {
        return new Cursor();
    }

    @Override
    public void close() throws IOException {
        channel.close();
        // Mappings are released by the GC; the file stays consistent because every write went through the page cache.
    }

    /** Per-thread (per-connection) window onto the mapping. Not thread-safe; cheap to keep. */
    public final class Cursor {
        private final ByteBuffer[] views = new ByteBuffer[segments.length];

        /**
         * A view positioned at {@code offset} whose limit is {@code offset + maxLength} or the end of the segment,
         * whichever comes first. Valid until the next call on this cursor.
         */
        public ByteBuffer view(long offset, long maxLength) throws IOException {
            int seg = (int) (offset >>> SEGMENT_SHIFT);
            ByteBuffer v = views[seg];
            if (v == null) {
                v = segment(seg).duplicate();
                views[seg] = v;
            }
            int inSeg = (int) (offset & (SEGMENT_BYTES - 1));
            int n = (int) Math.min(maxLength, v.capacity() - inSeg);
            v.limit(inSeg + n).position(inSeg);
            return v;
        }

        public MappedData data() {
            return MappedData.this;
        }
    }
}
