package io.snapbd.engine.bitmap;

import io.snapbd.engine.format.CorruptMetadataException;
import io.snapbd.engine.format.Crc32c;
import io.snapbd.engine.io.Forces;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.BitSet;
import java.util.UUID;

import static io.snapbd.engine.format.ChannelIo.readFully;
import static io.snapbd.engine.format.ChannelIo.writeFully;

/**
 * On-disk form of a {@link PagedBitMap}: a 4 KiB header, a table of per-page entries {CRC-32C, flags}, then
 * the pages. Pages are rewritten in place; a page whose checksum does not match after a crash is reported as
 * damaged and the caller decides (the meta bit map rebuilds it from the data). A page may also be absent
 * (flag clear): a snapshot's meta file holds only the pages frozen while it was the youngest snapshot.
 * Layout: docs/on-disk-format.md.
 */
public final class BitMapFile implements AutoCloseable {

    public static final long MAGIC = 0x50414d4244424e53L;   // "SNBDBMAP" little-endian
    public static final int VERSION = 1;
    static final int ENTRY_BYTES = 8;
    static final int FLAG_PRESENT = 1;

    public enum PageState { PRESENT, ABSENT, DAMAGED }
    public static final int HEADER_BYTES = 4096;
    static final int HEADER_CRC_OFFSET = 60;

    /** What the map describes; stored so a file cannot be opened as the wrong kind. */
    public enum Kind {
        META(1), INTENT(2), SNAPSHOT_BITS(3), SNAPSHOT_META(4), FREE_CHUNKS(5);
        public final int code;

        Kind(int code) {
            this.code = code;
        }
    }

    private final Path path;
    private final FileChannel channel;
    private final long bits;
    private final int pageCount;
    private final long crcTableOffset;
    private final long pagesOffset;
    private final ByteBuffer pageBuf = ByteBuffer.allocateDirect(PagedBitMap.PAGE_BYTES).order(ByteOrder.LITTLE_ENDIAN);
    private final ByteBuffer crcBuf = ByteBuffer.allocate(ENTRY_BYTES).order(ByteOrder.LITTLE_ENDIAN);
    private final long[] words = new long[PagedBitMap.PAGE_LONGS];

    private BitMapFile(Path path, FileChannel channel, long bits) {
        this.path = path;
        this.channel = channel;
        this.bits = bits;
        this.pageCount = (int) PagedBitMap.pageCount(bits);
        this.crcTableOffset = HEADER_BYTES;
        this.pagesOffset = HEADER_BYTES + align4k((long) ENTRY_BYTES * pageCount);
    }

    static long align4k(long n) {
        return (n + 4095) & ~4095L;
    }

    /** Creates the file with every bit clear and every page present, and forces it. */
    public static BitMapFile create(Path path, Kind kind, UUID owner, long bits) throws IOException {
        return create(path, kind, owner, bits, true);
    }

    /**
     * Creates the file; with {@code present} false every page is absent, which costs one table entry per page
     * (a snapshot's meta file: creation stays O(1) in data written per page of the volume).
     */
    public static BitMapFile create(Path path, Kind kind, UUID owner, long bits, boolean present) throws IOException {
        FileChannel ch = FileChannel.open(path, StandardOpenOption.CREATE_NEW, StandardOpenOption.READ, StandardOpenOption.WRITE);
        BitMapFile f = new BitMapFile(path, ch, bits);
        try {
            ByteBuffer header = ByteBuffer.allocate(HEADER_BYTES).order(ByteOrder.LITTLE_ENDIAN);
            header.putLong(0, MAGIC).putInt(8, VERSION).putInt(12, HEADER_BYTES).putLong(16, bits)
                    .putInt(24, f.pageCount).putInt(28, PagedBitMap.PAGE_BITS)
                    .putLong(32, owner.getMostSignificantBits()).putLong(40, owner.getLeastSignificantBits())
                    .putInt(48, kind.code).putLong(52, f.pagesOffset);
            header.putInt(HEADER_CRC_OFFSET, Crc32c.of(header, 0, HEADER_CRC_OFFSET));
            writeFully(ch, header, 0);
            int zeroCrc = Crc32c.of(new byte[PagedBitMap.PAGE_BYTES], 0, PagedBitMap.PAGE_BYTES);
            ByteBuffer table = ByteBuffer.allocate((int) (f.pagesOffset - HEADER_BYTES)).order(ByteOrder.LITTLE_ENDIAN);
            if (present) {
                for (int i = 0; i < f.pageCount; i++) {
                    table.putInt(i * ENTRY_BYTES, zeroCrc).putInt(i * ENTRY_BYTES + 4, FLAG_PRESENT);
                }
            }
            writeFully(ch, table, HEADER_BYTES);
            long end = f.pagesOffset + (long) f.pageCount * PagedBitMap.PAGE_BYTES;
            if (present) {
                // Zero pages written, not left as a hole: pages are rewritten in place for the volume's life, and
                // a write into a hole needs space the file system may no longer have (ENOSPC at a flush or close).
                ByteBuffer zeros = ByteBuffer.allocate((int) Math.min(end - f.pagesOffset, 1 << 20));
                for (long pos = f.pagesOffset; pos < end; pos += zeros.capacity()) {
                    zeros.clear().limit((int) Math.min(zeros.capacity(), end - pos));
                    writeFully(ch, zeros, pos);
                }
            } else {
                // Absent pages: extend the file; the bytes read back as zero.
                writeFully(ch, ByteBuffer.allocate(1), end - 1);
            }
            Forces.forcing(path);
            ch.force(true);
            return f;
        } catch (IOException | RuntimeException e) {
            ch.close();
            Files.deleteIfExists(path);     // created above (CREATE_NEW): a failed create leaves nothing behind
            if (e instanceof IOException io) {
                throw named(path, io);
            }
            throw e;
        }
    }

    /**
     * Opens an existing file, checks its header against what the caller expects, loads every page into
     * {@code into} and returns the pages whose checksum failed (loaded as all clear).
     */
    public static BitMapFile open(Path path, Kind kind, UUID owner, PagedBitMap into, BitSet damagedPages) throws IOException {
        FileChannel ch = FileChannel.open(path, StandardOpenOption.READ, StandardOpenOption.WRITE);
        try {
            BitMapFile f = new BitMapFile(path, ch, into.size());
            f.checkHeader(kind, owner);
            f.loadInto(into, damagedPages);
            return f;
        } catch (IOException | RuntimeException e) {
            ch.close();
            throw e;
        }
    }

    private void checkHeader(Kind kind, UUID owner) throws IOException {
        {
            FileChannel ch = channel;
            ByteBuffer header = ByteBuffer.allocate(HEADER_BYTES).order(ByteOrder.LITTLE_ENDIAN);
            readFully(ch, header, 0, path);
            if (header.getLong(0) != MAGIC) {
                throw new CorruptMetadataException(path, "bad magic (not a snapbd bit map)");
            }
            if (header.getInt(HEADER_CRC_OFFSET) != Crc32c.of(header, 0, HEADER_CRC_OFFSET)) {
                throw new CorruptMetadataException(path, "header checksum mismatch");
            }
            if (header.getInt(8) != VERSION) {
                throw new CorruptMetadataException(path, "unsupported version " + header.getInt(8));
            }
            if (header.getInt(48) != kind.code) {
                throw new CorruptMetadataException(path, "kind " + header.getInt(48) + ", expected " + kind.code + " (" + kind + ")");
            }
            UUID stored = new UUID(header.getLong(32), header.getLong(40));
            if (!stored.equals(owner)) {
                throw new CorruptMetadataException(path, "belongs to " + stored + ", not " + owner);
            }
            if (header.getLong(16) != bits) {
                throw new CorruptMetadataException(path, "holds " + header.getLong(16) + " bits, expected " + bits);
            }
            if (header.getLong(52) != pagesOffset) {
                throw new CorruptMetadataException(path, "page offset " + header.getLong(52) + ", expected " + pagesOffset);
            }
        }
    }

    private void loadInto(PagedBitMap into, BitSet damaged) throws IOException {
        ByteBuffer table = ByteBuffer.allocate((int) (pagesOffset - crcTableOffset)).order(ByteOrder.LITTLE_ENDIAN);
        readFully(channel, table, crcTableOffset, path);
        long[] w = new long[PagedBitMap.PAGE_LONGS];
        for (int p = 0; p < pageCount; p++) {
            pageBuf.clear();
            readFully(channel, pageBuf, pagesOffset + (long) p * PagedBitMap.PAGE_BYTES, path);
            if ((table.getInt(p * ENTRY_BYTES + 4) & FLAG_PRESENT) == 0
                    || Crc32c.of(pageBuf, 0, PagedBitMap.PAGE_BYTES) != table.getInt(p * ENTRY_BYTES)) {
                damaged.set(p);
                continue;
            }
            for (int i = 0; i < w.length; i++) {
                w[i] = pageBuf.getLong(i * 8);
            }
            into.loadPage(p, w);
        }
    }

    /** Writes every page whose dirty flag is set (clearing the flag first, so a racing change re-dirties it). */
    public synchronized int writeDirty(PagedBitMap map) throws IOException {
        int written = 0;
        for (int p = 0; p < pageCount; p++) {
            if (map.takeDirty(p)) {
                writePage(map, p);
                written++;
            }
        }
        return written;
    }

    /** Writes every page, dirty or not. */
    public synchronized void writeAll(PagedBitMap map) throws IOException {
        for (int p = 0; p < pageCount; p++) {
            map.takeDirty(p);
            writePage(map, p);
        }
    }

    /** Writes page {@code p} and its checksum (not forced). */
    public synchronized void writePage(PagedBitMap map, int p) throws IOException {
        map.copyPage(p, words);
        writeWords(p, words);
    }

    /** Writes page {@code p} from raw words (null: all zero) and marks it present (not forced). */
    public synchronized void writeWords(int p, long[] words) throws IOException {
        pageBuf.clear();
        for (int i = 0; i < PagedBitMap.PAGE_LONGS; i++) {
            pageBuf.putLong(i * 8, words == null ? 0 : words[i]);
        }
        int crc = Crc32c.of(pageBuf, 0, PagedBitMap.PAGE_BYTES);
        try {
            writeFully(channel, pageBuf, pagesOffset + (long) p * PagedBitMap.PAGE_BYTES);
            crcBuf.clear();
            crcBuf.putInt(0, crc).putInt(4, FLAG_PRESENT);
            writeFully(channel, crcBuf, crcTableOffset + (long) ENTRY_BYTES * p);
        } catch (IOException e) {
            throw named(path, e);
        }
    }

    /** {@code e} with the file named: the JDK's write and force errors say only what failed ("No space left on device"). */
    public static IOException named(Path path, IOException e) {
        if (e.getMessage() != null && e.getMessage().contains(path.toString())) {
            return e;
        }
        return new IOException(path + ": " + e.getMessage(), e);
    }

    /** Reads page {@code p} into {@code out} (PAGE_LONGS words) and says whether it is present and intact. */
    public synchronized PageState readPage(int p, long[] out) throws IOException {
        crcBuf.clear();
        readFully(channel, crcBuf, crcTableOffset + (long) ENTRY_BYTES * p, path);
        if ((crcBuf.getInt(4) & FLAG_PRESENT) == 0) {
            return PageState.ABSENT;
        }
        pageBuf.clear();
        readFully(channel, pageBuf, pagesOffset + (long) p * PagedBitMap.PAGE_BYTES, path);
        if (Crc32c.of(pageBuf, 0, PagedBitMap.PAGE_BYTES) != crcBuf.getInt(0)) {
            return PageState.DAMAGED;
        }
        for (int i = 0; i < PagedBitMap.PAGE_LONGS; i++) {
            out[i] = pageBuf.getLong(i * 8);
        }
        return PageState.PRESENT;
    }

    /** Opens an existing file checking only its header (pages are read with {@link #readPage}). */
    public static BitMapFile openPages(Path path, Kind kind, UUID owner, long bits) throws IOException {
        FileChannel ch = FileChannel.open(path, StandardOpenOption.READ, StandardOpenOption.WRITE);
        try {
            BitMapFile f = new BitMapFile(path, ch, bits);
            f.checkHeader(kind, owner);
            return f;
        } catch (IOException | RuntimeException e) {
            ch.close();
            throw e;
        }
    }

    public int pageCount() {
        return pageCount;
    }

    public void force() throws IOException {
        try {
            Forces.forcing(path);
            channel.force(false);
        } catch (IOException e) {
            throw named(path, e);
        }
    }

    public Path path() {
        return path;
    }

    public long bits() {
        return bits;
    }

    @Override
    public void close() throws IOException {
        channel.close();
    }
}
