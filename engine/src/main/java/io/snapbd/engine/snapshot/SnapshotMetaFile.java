package io.snapbd.engine.snapshot;

import io.snapbd.engine.bitmap.BitMapFile;
import io.snapbd.engine.bitmap.PagedBitMap;
import io.snapbd.engine.format.AtomicFile;
import io.snapbd.engine.format.CorruptMetadataException;
import io.snapbd.engine.format.Crc32c;
import io.snapbd.engine.io.Forces;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.List;
import java.util.UUID;

import static io.snapbd.engine.format.ChannelIo.readFully;
import static io.snapbd.engine.format.ChannelIo.writeFully;

/**
 * {@code snap-SEQ.meta}: the meta pages frozen for one snapshot (bit map file format, kind {@code SNAPSHOT_META},
 * version 2). Each page is written at most once: its 4096 bytes are written and forced first, and only then its
 * table entry {page CRC, PRESENT, page, entry CRC} is written and forced. So a crash leaves a page absent (never
 * half present), and a present page whose CRC fails, or a table entry whose own CRC fails, was durable once: that
 * is damage, never a torn write. Version-1 files (8-byte entries without a CRC of their own, pages not forced
 * before their entry) are read; one without a failing page is converted to version 2 at open, one with a failing
 * page is left as it is and reported damaged (version 1 cannot tell a torn page from a damaged one).
 * Layout: docs/on-disk-format.md.
 */
final class SnapshotMetaFile implements AutoCloseable {

    static final int VERSION = 2;
    static final int ENTRY_BYTES = 16;
    static final int V1_ENTRY_BYTES = 8;
    static final int FLAG_PRESENT = 1;
    static final int HEADER_BYTES = 4096;
    static final int HEADER_CRC_OFFSET = 60;
    private static final int PAGE = PagedBitMap.PAGE_BYTES;

    enum PageState { PRESENT, ABSENT, DAMAGED }

    private final Path path;
    private final FileChannel channel;
    private final long bits;
    private final int pageCount;
    private final int version;
    private final int entryBytes;
    private final long pagesOffset;
    /** Pages written but whose entries are not yet committed: page → crc. */
    private final List<int[]> uncommitted = new ArrayList<>();
    private final BitSet present = new BitSet();
    private final ByteBuffer pageBuf = ByteBuffer.allocateDirect(PAGE).order(ByteOrder.LITTLE_ENDIAN);
    private final ByteBuffer entryBuf = ByteBuffer.allocate(ENTRY_BYTES).order(ByteOrder.LITTLE_ENDIAN);

    private SnapshotMetaFile(Path path, FileChannel channel, long bits, int version) {
        this.path = path;
        this.channel = channel;
        this.bits = bits;
        this.version = version;
        this.pageCount = (int) PagedBitMap.pageCount(bits);
        this.entryBytes = version == 1 ? V1_ENTRY_BYTES : ENTRY_BYTES;
        this.pagesOffset = HEADER_BYTES + align4k((long) entryBytes * pageCount);
    }

    static long align4k(long n) {
        return (n + 4095) & ~4095L;
    }

    /** Creates the file with every page absent (header and table only; the pages stay a hole) and forces it. */
    static SnapshotMetaFile create(Path path, UUID owner, long bits) throws IOException {
        FileChannel ch = FileChannel.open(path, StandardOpenOption.CREATE_NEW, StandardOpenOption.READ, StandardOpenOption.WRITE);
        try {
            SnapshotMetaFile f = new SnapshotMetaFile(path, ch, bits, VERSION);
            f.writeInitial(ch, owner, null);
            Forces.forcing(path);
            ch.force(true);
            return f;
        } catch (IOException | RuntimeException e) {
            // CREATE_NEW made the file: a create that failed (a full file system) leaves nothing behind
            ch.close();
            Files.deleteIfExists(path);
            if (e instanceof IOException io) {
                throw BitMapFile.named(path, io);
            }
            throw e;
        }
    }

    /** Writes header and table (every page absent, or present with {@code pages[p]} when given) and the pages. */
    private void writeInitial(FileChannel ch, UUID owner, long[][] pages) throws IOException {
        ByteBuffer header = ByteBuffer.allocate(HEADER_BYTES).order(ByteOrder.LITTLE_ENDIAN);
        header.putLong(0, BitMapFile.MAGIC).putInt(8, VERSION).putInt(12, HEADER_BYTES).putLong(16, bits)
                .putInt(24, pageCount).putInt(28, PagedBitMap.PAGE_BITS)
                .putLong(32, owner.getMostSignificantBits()).putLong(40, owner.getLeastSignificantBits())
                .putInt(48, BitMapFile.Kind.SNAPSHOT_META.code).putLong(52, pagesOffset);
        header.putInt(HEADER_CRC_OFFSET, Crc32c.of(header, 0, HEADER_CRC_OFFSET));
        writeFully(ch, header, 0);
        ByteBuffer table = ByteBuffer.allocate((int) (pagesOffset - HEADER_BYTES)).order(ByteOrder.LITTLE_ENDIAN);
        for (int p = 0; p < pageCount; p++) {
            int crc = 0;
            int flags = 0;
            if (pages != null && pages[p] != null) {
                fill(pageBuf, pages[p]);
                crc = Crc32c.of(pageBuf, 0, PAGE);
                writeFully(ch, pageBuf, pagesOffset + (long) p * PAGE);
                flags = FLAG_PRESENT;
                present.set(p);
            }
            encodeEntry(table, p * ENTRY_BYTES, p, crc, flags);
        }
        writeFully(ch, table, HEADER_BYTES);
        ByteBuffer last = ByteBuffer.allocate(1);
        if (ch.size() < pagesOffset + (long) pageCount * PAGE) {
            writeFully(ch, last, pagesOffset + (long) pageCount * PAGE - 1);
        }
    }

    private static void encodeEntry(ByteBuffer b, int at, int page, int crc, int flags) {
        b.putInt(at, crc).putInt(at + 4, flags).putInt(at + 8, page);
        b.putInt(at + 12, Crc32c.of(b, at, at + 12));
    }

    private static void fill(ByteBuffer buf, long[] words) {
        buf.clear();
        for (int i = 0; i < PagedBitMap.PAGE_LONGS; i++) {
            buf.putLong(i * 8, words == null ? 0 : words[i]);
        }
    }

    /**
     * Opens the file (read and write with {@code writable}) checking its header. A version-1 file that
     * {@code writable} callers open is converted to version 2 (atomic replace) unless one of its pages fails its
     * checksum; then it stays version 1, read only, and those pages read as {@link PageState#DAMAGED}.
     */
    static SnapshotMetaFile open(Path path, UUID owner, long bits, boolean writable) throws IOException {
        FileChannel ch = FileChannel.open(path, writable ? new StandardOpenOption[]{StandardOpenOption.READ, StandardOpenOption.WRITE}
                : new StandardOpenOption[]{StandardOpenOption.READ});
        SnapshotMetaFile f;
        try {
            ByteBuffer header = ByteBuffer.allocate(HEADER_BYTES).order(ByteOrder.LITTLE_ENDIAN);
            readFully(ch, header, 0, path);
            int version = checkHeader(path, header, owner, bits);
            f = new SnapshotMetaFile(path, ch, bits, version);
            if (header.getLong(52) != f.pagesOffset) {
                throw new CorruptMetadataException(path, "page offset " + header.getLong(52) + ", expected " + f.pagesOffset);
            }
            long need = f.pagesOffset;
            if (ch.size() < need) {
                throw new CorruptMetadataException(path, "file is truncated at byte " + ch.size());
            }
            for (int p = 0; p < f.pageCount; p++) {
                if (f.entryState(p) == PageState.PRESENT) {
                    f.present.set(p);
                }
            }
        } catch (IOException | RuntimeException e) {
            ch.close();
            throw e;
        }
        if (f.version == 1 && writable) {
            return f.convert(owner);
        }
        return f;
    }

    /** Rewrites a version-1 file as version 2 if every present page is intact; else keeps it (read only). */
    private SnapshotMetaFile convert(UUID owner) throws IOException {
        long[][] pages = new long[pageCount][];
        long[] words = new long[PagedBitMap.PAGE_LONGS];
        for (int p = 0; p < pageCount; p++) {
            PageState st = readPage(p, words);
            if (st == PageState.DAMAGED) {
                return this;
            }
            if (st == PageState.PRESENT) {
                pages[p] = words.clone();
            }
        }
        Path tmp = path.resolveSibling(path.getFileName() + ".tmp");
        Files.deleteIfExists(tmp);
        SnapshotMetaFile f;
        try (FileChannel out = FileChannel.open(tmp, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE)) {
            SnapshotMetaFile w = new SnapshotMetaFile(tmp, out, bits, VERSION);
            w.writeInitial(out, owner, pages);
            Forces.forcing(tmp);
            out.force(true);
        }
        channel.close();
        Files.move(tmp, path, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        AtomicFile.fsyncDirectory(path.getParent());
        return open(path, owner, bits, true);
    }

    private static int checkHeader(Path path, ByteBuffer header, UUID owner, long bits) throws CorruptMetadataException {
        if (header.getLong(0) != BitMapFile.MAGIC) {
            throw new CorruptMetadataException(path, "bad magic (not a snapbd bit map)");
        }
        if (header.getInt(HEADER_CRC_OFFSET) != Crc32c.of(header, 0, HEADER_CRC_OFFSET)) {
            throw new CorruptMetadataException(path, "header checksum mismatch");
        }
        int version = header.getInt(8);
        if (version != 1 && version != VERSION) {
            throw new CorruptMetadataException(path, "unsupported version " + version + " (this build reads 1 and 2)");
        }
        int kind = header.getInt(48);
        if (kind != BitMapFile.Kind.SNAPSHOT_META.code) {
            throw new CorruptMetadataException(path, "kind " + kind + ", expected " + BitMapFile.Kind.SNAPSHOT_META.code + " (SNAPSHOT_META)");
        }
        UUID stored = new UUID(header.getLong(32), header.getLong(40));
        if (!stored.equals(owner)) {
            throw new CorruptMetadataException(path, "belongs to " + stored + ", not " + owner);
        }
        if (header.getLong(16) != bits) {
            throw new CorruptMetadataException(path, "holds " + header.getLong(16) + " bits, expected " + bits);
        }
        return version;
    }

    /** The state page {@code p}'s table entry claims (DAMAGED: the entry itself fails its checksum). */
    private synchronized PageState entryState(int p) throws IOException {
        entryBuf.clear().limit(entryBytes);
        readFully(channel, entryBuf, HEADER_BYTES + (long) entryBytes * p, path);
        if (version != 1 && (entryBuf.getInt(12) != Crc32c.of(entryBuf, 0, 12) || entryBuf.getInt(8) != p)) {
            return PageState.DAMAGED;
        }
        int flags = entryBuf.getInt(4);
        if (version != 1 && (flags & ~FLAG_PRESENT) != 0) {
            return PageState.DAMAGED;
        }
        return (flags & FLAG_PRESENT) != 0 ? PageState.PRESENT : PageState.ABSENT;
    }

    /** Reads page {@code p} into {@code out} (PAGE_LONGS words) and says whether it is present, absent or damaged. */
    synchronized PageState readPage(int p, long[] out) throws IOException {
        PageState st = entryState(p);
        if (st != PageState.PRESENT) {
            return st;
        }
        int crc = entryBuf.getInt(0);
        pageBuf.clear();
        readFully(channel, pageBuf, pagesOffset + (long) p * PAGE, path);
        if (Crc32c.of(pageBuf, 0, PAGE) != crc) {
            return PageState.DAMAGED;
        }
        for (int i = 0; i < PagedBitMap.PAGE_LONGS; i++) {
            out[i] = pageBuf.getLong(i * 8);
        }
        return PageState.PRESENT;
    }

    /**
     * Writes the 4096 bytes of absent page {@code p} (null: all zero); its entry is written by {@link #commit}.
     * Pages are written once: a present page is never rewritten.
     */
    synchronized void writeWords(int p, long[] words) throws IOException {
        if (version != VERSION) {
            throw new IOException(path + ": version-" + version + " file with damaged pages is read only");
        }
        if (present.get(p)) {
            throw new IllegalStateException(path + ": page " + p + " is already present");
        }
        fill(pageBuf, words);
        int crc = Crc32c.of(pageBuf, 0, PAGE);
        writeFully(channel, pageBuf, pagesOffset + (long) p * PAGE);
        uncommitted.add(new int[]{p, crc});
    }

    /** Forces the pages written since the last commit, then writes their entries (PRESENT) and forces again. */
    synchronized void commit() throws IOException {
        if (uncommitted.isEmpty()) {
            return;
        }
        Forces.forcing(path);
        channel.force(false);
        for (int[] u : uncommitted) {
            entryBuf.clear();
            encodeEntry(entryBuf, 0, u[0], u[1], FLAG_PRESENT);
            writeFully(channel, entryBuf, HEADER_BYTES + (long) ENTRY_BYTES * u[0]);
        }
        Forces.forcing(path);
        channel.force(false);
        for (int[] u : uncommitted) {
            present.set(u[0]);
        }
        uncommitted.clear();
    }

    int pageCount() {
        return pageCount;
    }

    int version() {
        return version;
    }

    Path path() {
        return path;
    }

    long bits() {
        return bits;
    }

    @Override
    public void close() throws IOException {
        channel.close();
    }
}
