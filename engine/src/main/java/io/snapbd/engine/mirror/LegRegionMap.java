package io.snapbd.engine.mirror;

import io.snapbd.engine.format.CorruptMetadataException;
import io.snapbd.engine.format.Crc32c;

import java.io.Closeable;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.UUID;

/**
 * The fallback record of a degraded leg's missed writes when its tag table would overflow: one bit per region
 * of 2^region_shift bytes (docs/glossary.md: Symantec DRM, behaviour 29), set and forced before the volume's write
 * is answered, cleared only after the region was copied to the leg and forced. Layout in docs/mirrors.md,
 * "Leg region map". A page whose checksum fails (a write cut short) reads as all set: a crash can only make the
 * resync copy more, never less. {@link MirrorSet} keeps one per degraded leg, {@code legN.rmap} in the volume's
 * directory (on leg 0's file system: the record survives what the current copy survives).
 */
public final class LegRegionMap implements Closeable {

    static final long MAGIC = 0x4d47524c44424e53L;   // "SNBDLRGM" little-endian
    static final int VERSION = 1;
    static final int PAGE = 4096;
    static final int CRC_TABLE = 64;
    static final long BITS_PER_PAGE = PAGE * 8L;
    static final int MAX_PAGES = (PAGE - CRC_TABLE) / 4;

    private final TagStore store;
    private final long volumeSize;
    private final int regionShift;
    private final long regions;
    private final int pages;
    private final long[] words;
    private final List<String> notes = new ArrayList<>();
    private final ByteBuffer page = ByteBuffer.allocate(PAGE).order(ByteOrder.LITTLE_ENDIAN);
    private final ByteBuffer crcBuf = ByteBuffer.allocate(4).order(ByteOrder.LITTLE_ENDIAN);

    private LegRegionMap(TagStore store, long volumeSize, int regionShift) {
        this.store = store;
        this.volumeSize = volumeSize;
        this.regionShift = regionShift;
        this.regions = (volumeSize + (1L << regionShift) - 1) >>> regionShift;
        this.pages = (int) ((regions + BITS_PER_PAGE - 1) / BITS_PER_PAGE);
        this.words = new long[pages * (PAGE / 8)];
    }

    public static long areaBytes(long volumeSize, int regionShift) {
        long regions = (volumeSize + (1L << regionShift) - 1) >>> regionShift;
        return PAGE + (regions + BITS_PER_PAGE - 1) / BITS_PER_PAGE * PAGE;
    }

    /** Formats an empty map (no region set) for leg {@code leg} of volume {@code owner}. */
    public static LegRegionMap create(TagStore store, UUID owner, int leg, long volumeSize, int regionShift) throws IOException {
        if (regionShift < 9 || regionShift > 30 || volumeSize < 1) {
            throw new IllegalArgumentException("region shift " + regionShift + ", volume size " + volumeSize);
        }
        LegRegionMap m = new LegRegionMap(store, volumeSize, regionShift);
        if (m.pages > MAX_PAGES) {
            throw new IllegalArgumentException("a volume of " + volumeSize + " bytes needs regions larger than 2^" + regionShift);
        }
        ByteBuffer h = ByteBuffer.allocate(PAGE).order(ByteOrder.LITTLE_ENDIAN);
        h.putLong(0, MAGIC).putInt(8, VERSION).putInt(12, leg)
                .putLong(16, owner.getMostSignificantBits()).putLong(24, owner.getLeastSignificantBits())
                .putLong(32, volumeSize).putInt(40, regionShift).putInt(44, m.pages);
        h.putInt(60, Crc32c.of(h, 0, 60));
        int zeroCrc = Crc32c.of(new byte[PAGE], 0, PAGE);
        for (int p = 0; p < m.pages; p++) {
            h.putInt(CRC_TABLE + 4 * p, zeroCrc);
        }
        for (int p = 0; p < m.pages; p++) {
            store.write(ByteBuffer.allocate(PAGE), PAGE + (long) p * PAGE);
        }
        store.write(h, 0);
        store.force();
        return m;
    }

    /** Opens the map; pages failing their checksum read as all set (noted in {@link #notes}). */
    public static LegRegionMap open(TagStore store, UUID owner, int leg) throws IOException {
        Path p = Path.of(store.describe());
        ByteBuffer h = ByteBuffer.allocate(PAGE).order(ByteOrder.LITTLE_ENDIAN);
        store.read(h, 0);
        if (h.getLong(0) != MAGIC) {
            throw new CorruptMetadataException(p, "bad magic (not a snapbd leg region map)");
        }
        if (h.getInt(60) != Crc32c.of(h, 0, 60)) {
            throw new CorruptMetadataException(p, "header checksum mismatch");
        }
        if (h.getInt(8) != VERSION) {
            throw new CorruptMetadataException(p, "unsupported version " + h.getInt(8));
        }
        if (!new UUID(h.getLong(16), h.getLong(24)).equals(owner) || h.getInt(12) != leg) {
            throw new CorruptMetadataException(p, "belongs to another volume or leg");
        }
        // The geometry is checked before anything is sized by it: a damaged size or shift made the page array's
        // length negative or huge (NegativeArraySizeException, OutOfMemoryError) instead of refusing the area.
        long volumeSize = h.getLong(32);
        int shift = h.getInt(40);
        if (volumeSize < 1 || shift < 9 || shift > 30
                || (((volumeSize - 1) >>> shift) + BITS_PER_PAGE) / BITS_PER_PAGE > MAX_PAGES) {
            throw new CorruptMetadataException(p, "volume size " + volumeSize + " and region shift " + shift
                    + " do not fit a region map (shift 9 … 30, at most " + MAX_PAGES + " pages)");
        }
        LegRegionMap m = new LegRegionMap(store, volumeSize, shift);
        if (h.getInt(44) != m.pages || m.pages > MAX_PAGES || store.size() < areaBytes(m.volumeSize, m.regionShift)) {
            throw new CorruptMetadataException(p, "page count " + h.getInt(44) + " does not fit the geometry or the area");
        }
        for (int pg = 0; pg < m.pages; pg++) {
            m.page.clear();
            store.read(m.page, PAGE + (long) pg * PAGE);
            if (Crc32c.of(m.page, 0, PAGE) != h.getInt(CRC_TABLE + 4 * pg)) {
                m.notes.add("page " + pg + " fails its checksum (a write cut short): all its regions count as missed");
                for (int w = 0; w < PAGE / 8; w++) {
                    m.words[pg * (PAGE / 8) + w] = -1L;
                }
            } else {
                for (int w = 0; w < PAGE / 8; w++) {
                    m.words[pg * (PAGE / 8) + w] = m.page.getLong(w * 8);
                }
            }
        }
        // bits past the last region are never set
        for (long r = m.regions; r < (long) m.pages * BITS_PER_PAGE; r++) {
            m.words[(int) (r >>> 6)] &= ~(1L << (r & 63));
        }
        return m;
    }

    public List<String> notes() {
        return List.copyOf(notes);
    }

    /** Records that the leg missed a write of {@code length} bytes at {@code offset}: durable on return. */
    public synchronized void markMissed(long offset, long length) throws IOException {
        update(offset, length, true);
    }

    /** Records several missed ranges ({offset, length} pairs) with one force. */
    public synchronized void markMissed(List<long[]> ranges) throws IOException {
        int from = Integer.MAX_VALUE;
        int to = -1;
        for (long[] r : ranges) {
            long off = Math.max(0, Math.min(r[0], volumeSize));
            long end = Math.min(r[0] + r[1], volumeSize);
            if (end <= off) {
                continue;
            }
            for (long reg = off >>> regionShift; reg <= (end - 1) >>> regionShift; reg++) {
                int w = (int) (reg >>> 6);
                long bit = 1L << (reg & 63);
                if ((words[w] & bit) == 0) {
                    words[w] |= bit;
                    int pg = (int) (reg / BITS_PER_PAGE);
                    from = Math.min(from, pg);
                    to = Math.max(to, pg);
                }
            }
        }
        if (to >= 0) {
            writePages(from, to);
        }
    }

    /** Bytes the set regions cover (clipped to the volume): what a resync copies for them. */
    public synchronized long missedBytes() {
        long b = 0;
        for (long[] r : missedRanges()) {
            b += r[1];
        }
        return b;
    }

    /** The regions covering that range were copied to the leg and forced: clears them, durably. */
    public synchronized void clear(long offset, long length) throws IOException {
        update(offset, length, false);
    }

    private void update(long offset, long length, boolean set) throws IOException {
        if (offset < 0 || length < 1 || offset + length > volumeSize) {
            throw new IllegalArgumentException("range " + offset + "+" + length + " outside the volume of " + volumeSize);
        }
        long first = offset >>> regionShift;
        long last = (offset + length - 1) >>> regionShift;
        int dirtyFrom = Integer.MAX_VALUE;
        int dirtyTo = -1;
        for (long r = first; r <= last; r++) {
            int w = (int) (r >>> 6);
            long bit = 1L << (r & 63);
            boolean isSet = (words[w] & bit) != 0;
            if (isSet != set) {
                words[w] ^= bit;
                int pg = (int) (r / BITS_PER_PAGE);
                dirtyFrom = Math.min(dirtyFrom, pg);
                dirtyTo = Math.max(dirtyTo, pg);
            }
        }
        if (dirtyTo < 0) {
            return;
        }
        writePages(dirtyFrom, dirtyTo);
    }

    private void writePages(int dirtyFrom, int dirtyTo) throws IOException {
        for (int pg = dirtyFrom; pg <= dirtyTo; pg++) {
            page.clear();
            for (int w = 0; w < PAGE / 8; w++) {
                page.putLong(w * 8, words[pg * (PAGE / 8) + w]);
            }
            store.write(page, PAGE + (long) pg * PAGE);
            crcBuf.clear();
            crcBuf.putInt(0, Crc32c.of(page, 0, PAGE));
            store.write(crcBuf, CRC_TABLE + 4L * pg);
        }
        store.force();
    }

    /** The missed ranges, merged, in ascending order: {offset, length} pairs clipped to the volume. */
    public synchronized List<long[]> missedRanges() {
        List<long[]> out = new ArrayList<>();
        long start = -1;
        for (long r = 0; r <= regions; r++) {
            boolean set = r < regions && (words[(int) (r >>> 6)] & (1L << (r & 63))) != 0;
            if (set && start < 0) {
                start = r;
            } else if (!set && start >= 0) {
                long off = start << regionShift;
                long end = Math.min(r << regionShift, volumeSize);
                out.add(new long[]{off, end - off});
                start = -1;
            }
        }
        return out;
    }

    public long regionBytes() {
        return 1L << regionShift;
    }

    @Override
    public void close() throws IOException {
        store.close();
    }
}
