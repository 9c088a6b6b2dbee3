package io.snapbd.engine.mirror;

import io.snapbd.engine.format.CorruptMetadataException;
import io.snapbd.engine.format.Crc32c;

import java.io.Closeable;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.UUID;
import java.util.zip.CRC32C;

/**
 * One leg's persistent tag table (docs/glossary.md: Symantec tag table; behaviours 4–7, 9–12): an append
 * log of 64-byte records in a fixed area ({@link TagStore}) that lives with the leg. Layout and reading rules
 * are in docs/mirrors.md, "Tag table format".
 *
 * <p>Records: {@code ENTRY} {tag, offset, length} appended and forced <em>before</em> the leg's data may be
 * written; {@code DONE} (this leg's data for these tags is durable; appended lazily, unforced);
 * {@code RETIRE} (every leg completed these tags; forced per batch). The area holds a 4 KiB header with two
 * header copies and two halves; records go to the active half; compaction writes the live entries into the
 * other half with a new generation, forces, then switches the header, so a crash at any point leaves either
 * the old or the new table. The write path ({@link #record}) allocates nothing and reads nothing.
 *
 * <p>Not thread-safe by itself beyond its own monitor: all mutating methods are synchronized.
 */
public final class TagTable implements Closeable {

    static final long MAGIC = 0x5447415444424e53L;   // "SNBDTAGT" little-endian
    static final int VERSION = 1;
    static final int HEADER_AREA = 4096;
    static final int HEADER_SLOT_BYTES = 64;
    static final int[] HEADER_SLOT_OFFSET = {0, 2048};
    static final int RECORD_BYTES = 64;
    static final int TYPE_ENTRY = 1;
    static final int TYPE_DONE = 2;
    static final int TYPE_RETIRE = 3;
    static final int TAGS_PER_RECORD = 4;
    static final long FLAG_DONE = 1;
    /** Default records per half: 16384 (1 MiB per half, 2 MiB + 4 KiB in all). */
    public static final int DEFAULT_HALF_RECORDS = 16384;

    /** A live entry: a write of {@code length} bytes at {@code offset}, tagged {@code tag}; {@code done}: durable on this leg. */
    public record Entry(long tag, long offset, long length, boolean done) {
        public long end() {
            return offset + length;
        }
    }

    /** What a read-only pass found: the header fields, the live entries, and anything wrong or notable. */
    public record Loaded(UUID owner, int leg, int generation, int activeHalf, long halfRecords, long usedRecords,
                         List<Entry> live, List<String> problems, List<String> notes, boolean tornTail) {
        public boolean damaged() {
            return !problems.isEmpty();
        }
    }

    /** Whose table an area holds: the volume (owner) and leg number its header records. */
    public record Identity(UUID owner, int leg) {
    }

    /**
     * The owner and leg number of the table {@code store} holds (the header copy with a valid magic and checksum and
     * the highest generation), or null when neither copy is one: the area holds no table. Reads the header only;
     * a table whose records are damaged still names its owner. Used before a leg is made, so that another
     * volume's leg is not zeroed (docs/mirrors.md, "Using it").
     */
    public static Identity identify(TagStore store) throws IOException {
        if (store.size() < HEADER_AREA) {
            return null;
        }
        ByteBuffer h = ByteBuffer.allocate(HEADER_AREA).order(ByteOrder.LITTLE_ENDIAN);
        store.read(h, 0);
        Identity best = null;
        int bestGen = -1;
        for (int o : HEADER_SLOT_OFFSET) {
            if (h.getLong(o) == MAGIC && h.getInt(o + 60) == Crc32c.of(h, o, o + 60) && h.getInt(o + 40) > bestGen) {
                bestGen = h.getInt(o + 40);
                best = new Identity(new UUID(h.getLong(o + 16), h.getLong(o + 24)), h.getInt(o + 32));
            }
        }
        return best;
    }

    /** The table cannot take the entry even after compaction: the caller falls back to a region bit map. */
    public static final class TableFullException extends IOException {
        public TableFullException(String m) {
            super(m);
        }
    }

    /** The table holds damage (not a torn tail): its entries cannot be trusted to be complete. */
    public static final class DamagedException extends IOException {
        public DamagedException(String where, String what) {
            super(where + ": " + what);
        }
    }

    private final TagStore store;
    private final UUID owner;
    private final int leg;
    private final long halfRecords;
    private int generation;
    private int activeHalf;
    private int headerCrc;
    private long next;          // next slot in the active half
    private long durable;       // slots below this are forced
    private int prevCrc;
    private final ByteBuffer rec = ByteBuffer.allocate(RECORD_BYTES).order(ByteOrder.LITTLE_ENDIAN);
    private final CRC32C crc32c = new CRC32C();
    /** Records appended since open (a ticket counter); records up to {@link #forcedTickets} are durable. */
    private long appended;
    private volatile long forcedTickets;
    private volatile long forces;
    private final Object forceLock = new Object();

    private TagTable(TagStore store, UUID owner, int leg, long halfRecords) {
        this.store = store;
        this.owner = owner;
        this.leg = leg;
        this.halfRecords = halfRecords;
    }

    /** Bytes an area needs for {@code halfRecords} records per half. */
    public static long areaBytes(long halfRecords) {
        return HEADER_AREA + 2 * halfRecords * RECORD_BYTES;
    }

    /** Formats {@code store} (of at least {@link #areaBytes}) as an empty table of leg {@code leg} of volume {@code owner}. */
    public static TagTable create(TagStore store, UUID owner, int leg, long halfRecords) throws IOException {
        if (halfRecords < 2 || halfRecords > (1L << 40)) {
            throw new IllegalArgumentException("halfRecords " + halfRecords);
        }
        if (store.size() < areaBytes(halfRecords)) {
            throw new IOException(store.describe() + ": area of " + store.size() + " bytes is smaller than the "
                    + areaBytes(halfRecords) + " a tag table of " + halfRecords + " records per half needs");
        }
        TagTable t = new TagTable(store, owner, leg, halfRecords);
        store.write(ByteBuffer.allocate(HEADER_AREA), 0);
        store.write(ByteBuffer.allocate(RECORD_BYTES), t.slotPos(0, 0));
        store.write(ByteBuffer.allocate(RECORD_BYTES), t.slotPos(1, 0));
        store.force();
        t.writeHeader(1, 0);
        return t;
    }

    /**
     * Opens the table of leg {@code leg} of volume {@code owner}: reads it, and when a crash left a torn tail,
     * compacts it (a new generation, so new records never land among the torn ones).
     *
     * @throws DamagedException when the table holds damage below its commit point (entries may be lost: the
     *                          leg needs a full copy, see docs/mirrors.md)
     */
    public static TagTable open(TagStore store, UUID owner, int leg) throws IOException {
        Loaded l = read(store);
        Path p = Path.of(store.describe());
        if (!l.owner().equals(owner)) {
            throw new CorruptMetadataException(p, "tag table belongs to volume " + l.owner() + ", not " + owner);
        }
        if (l.leg() != leg) {
            throw new CorruptMetadataException(p, "tag table belongs to leg " + l.leg() + ", not leg " + leg);
        }
        if (l.damaged()) {
            throw new DamagedException(store.describe(), String.join("; ", l.problems()));
        }
        TagTable t = new TagTable(store, owner, leg, l.halfRecords());
        t.generation = l.generation();
        t.activeHalf = l.activeHalf();
        t.headerCrc = headerCrcOf(store, l.generation());
        t.next = l.usedRecords();
        t.durable = t.next;
        if (t.next > 0) {
            ByteBuffer b = ByteBuffer.allocate(RECORD_BYTES).order(ByteOrder.LITTLE_ENDIAN);
            store.read(b, t.slotPos(t.activeHalf, t.next - 1));
            t.prevCrc = b.getInt(60);
        } else {
            t.prevCrc = t.headerCrc;
        }
        if (l.tornTail()) {
            t.compact(Set.of());
        }
        return t;
    }

    /**
     * Read-only: decodes and checks the whole table, never writes ({@link TagTableReader}). Used by {@link #open},
     * the reconciler and fsck.
     */
    public static Loaded read(TagStore store) throws IOException {
        return TagTableReader.read(store);
    }

    private static int headerCrcOf(TagStore store, int generation) throws IOException {
        ByteBuffer h = ByteBuffer.allocate(HEADER_SLOT_BYTES).order(ByteOrder.LITTLE_ENDIAN);
        store.read(h, HEADER_SLOT_OFFSET[generation % 2]);
        return h.getInt(60);
    }

    private long slotPos(int half, long slot) {
        return HEADER_AREA + (half * halfRecords + slot) * RECORD_BYTES;
    }

    /** Writes header copy {@code gen % 2} for generation {@code gen} with active half {@code half}, forced. */
    private void writeHeader(int gen, int half) throws IOException {
        ByteBuffer h = ByteBuffer.allocate(HEADER_SLOT_BYTES).order(ByteOrder.LITTLE_ENDIAN);
        h.putLong(0, MAGIC).putInt(8, VERSION).putInt(12, RECORD_BYTES)
                .putLong(16, owner.getMostSignificantBits()).putLong(24, owner.getLeastSignificantBits())
                .putInt(32, leg).putInt(36, half).putInt(40, gen).putLong(48, halfRecords);
        int crc = Crc32c.of(h, 0, 60);
        h.putInt(60, crc);
        store.write(h, HEADER_SLOT_OFFSET[gen % 2]);
        store.force();
        generation = gen;
        activeHalf = half;
        headerCrc = crc;
        next = 0;
        durable = 0;
        prevCrc = crc;
    }

    /** Encodes one record into {@link #rec} for slot {@link #next} and writes it; no force. */
    private void append(int type, int count, long a, long b2, long c, long d, long committed) throws IOException {
        rec.clear();
        rec.putShort(0, (short) type).putShort(2, (short) count).putInt(4, generation)
                .putLong(8, next).putLong(16, committed)
                .putLong(24, a).putLong(32, b2).putLong(40, c).putLong(48, d)
                .putInt(56, prevCrc);
        crc32c.reset();
        crc32c.update(rec.array(), 0, 60);
        int crc = (int) crc32c.getValue();
        rec.putInt(60, crc);
        store.write(rec, slotPos(activeHalf, next));
        prevCrc = crc;
        next++;
        appended++;
    }

    private void ensureRoom(long records, Set<Long> retiring) throws IOException {
        if (next + records <= halfRecords) {
            return;
        }
        compact(retiring);
        if (next + records > halfRecords) {
            throw new TableFullException(store.describe() + ": tag table full (" + next + " live entries of "
                    + halfRecords + " slots)");
        }
    }

    /**
     * Records {tag, offset, length} durably (written and forced) before the caller writes this leg's data.
     * Entry first: once the data write has been issued, any of its pages may reach the leg (a memory mapping is
     * written back by the kernel whenever it likes), so an entry written after it could be missing for data that
     * is there; with the entry first, every byte that can differ between legs is covered by an entry.
     */
    public void record(long tag, long offset, long length) throws IOException {
        commit(append(tag, offset, length));
    }

    /**
     * Group commit, first half: writes the ENTRY {tag, offset, length} without forcing it and returns a ticket for
     * {@link #commit}. The record's {@code committed} is the durable point when it was written (the start of its
     * batch), as the format requires. The caller must not write this leg's data before {@code commit} returned.
     */
    public synchronized long append(long tag, long offset, long length) throws IOException {
        if (tag < 1 || offset < 0 || length < 1) {
            throw new IllegalArgumentException("entry tag " + tag + " offset " + offset + " length " + length);
        }
        ensureRoom(1, Set.of());
        append(TYPE_ENTRY, 1, tag, offset, length, 0, durable);
        return appended;
    }

    /**
     * Group commit, second half: returns once the record behind {@code ticket} is durable. One force covers
     * every record appended before it started, so N writers that append concurrently cost one or two forces of
     * the table, not N (docs/mirrors.md, "Group commit").
     */
    public void commit(long ticket) throws IOException {
        if (forcedTickets >= ticket) {
            return;
        }
        synchronized (forceLock) {
            if (forcedTickets >= ticket) {
                return;
            }
            long target;
            int gen;
            long slot;
            synchronized (this) {
                target = appended;
                gen = generation;
                slot = next;
            }
            store.force();
            forces++;
            synchronized (this) {
                if (generation == gen && durable < slot) {
                    durable = slot;
                }
                if (forcedTickets < target) {
                    forcedTickets = target;
                }
            }
        }
    }

    /** Forces of the table run by {@link #commit} (for statistics and tests). */
    public long commitForces() {
        return forces;
    }

    /**
     * This leg's data for {@code tags[0..n)} is durable (the caller forced it): appended, not forced; a DONE lost in
     * a crash only costs a copy of that range later. Must never be written before the data is durable.
     */
    public synchronized void markDone(long[] tags, int n) throws IOException {
        appendTags(TYPE_DONE, tags, n, false);
    }

    /** Retires a batch: every leg completed {@code tags[0..n)}; appended and forced. */
    public void retire(long[] tags, int n) throws IOException {
        commit(retireAppend(tags, n));
    }

    /**
     * Group commit of a RETIRE batch, first half: appends the RETIRE records for {@code tags[0..n)} without forcing
     * them and returns the ticket for {@link #commit} (the force then runs outside the table's lock, so changes
     * appending their ENTRY meanwhile are not held up); 0 when a compaction retired them durably already.
     */
    public synchronized long retireAppend(long[] tags, int n) throws IOException {
        long before = generation;
        appendTags(TYPE_RETIRE, tags, n, false);
        return generation != before ? 0 : appended;
    }

    private void appendTags(int type, long[] tags, int n, boolean force) throws IOException {
        if (n == 0) {
            return;
        }
        long needed = (n + TAGS_PER_RECORD - 1) / TAGS_PER_RECORD;
        if (next + needed > halfRecords) {
            Set<Long> s = new HashSet<>();
            if (type == TYPE_RETIRE) {
                for (int i = 0; i < n; i++) {
                    s.add(tags[i]);
                }
                compact(s);   // the compaction itself retires them
                return;
            }
            ensureRoom(needed, s);
        }
        long committed = durable;
        for (int i = 0; i < n; i += TAGS_PER_RECORD) {
            int c = Math.min(TAGS_PER_RECORD, n - i);
            append(type, c, tags[i], c > 1 ? tags[i + 1] : 0, c > 2 ? tags[i + 2] : 0, c > 3 ? tags[i + 3] : 0, committed);
        }
        if (force) {
            store.force();
            durable = next;
            forcedTickets = appended;
        }
    }

    /** The live entries, read back from the store (the table keeps no copy in memory). */
    public synchronized List<Entry> live() throws IOException {
        store.force();
        durable = next;
        forcedTickets = appended;
        return read(store).live();
    }

    /** Rewrites the live entries (minus {@code retiring}) into the other half as a new generation. */
    public synchronized void compact() throws IOException {
        compact(Set.of());
    }

    /** Retires every tag in {@code tags} by compaction (one rewrite, however many tags). */
    public synchronized void retireAll(Collection<Long> tags) throws IOException {
        compact(new HashSet<>(tags));
    }

    private void compact(Set<Long> retiring) throws IOException {
        store.force();
        durable = next;
        forcedTickets = appended;
        List<Entry> live = new ArrayList<>();
        for (Entry e : read(store).live()) {
            if (!retiring.contains(e.tag())) {
                live.add(e);
            }
        }
        if (live.size() > halfRecords) {
            throw new TableFullException(store.describe() + ": " + live.size() + " live entries do not fit "
                    + halfRecords + " slots");
        }
        int gen = generation + 1;
        int half = 1 - activeHalf;
        // Encode the new half with the chain seeded by the new header's crc (computed before the header is written).
        ByteBuffer h = ByteBuffer.allocate(HEADER_SLOT_BYTES).order(ByteOrder.LITTLE_ENDIAN);
        h.putLong(0, MAGIC).putInt(8, VERSION).putInt(12, RECORD_BYTES)
                .putLong(16, owner.getMostSignificantBits()).putLong(24, owner.getLeastSignificantBits())
                .putInt(32, leg).putInt(36, half).putInt(40, gen).putLong(48, halfRecords);
        int hcrc = Crc32c.of(h, 0, 60);
        int n = live.size();
        ByteBuffer out = ByteBuffer.allocate((n + 1) * RECORD_BYTES).order(ByteOrder.LITTLE_ENDIAN);
        int prev = hcrc;
        for (int i = 0; i < n; i++) {
            Entry e = live.get(i);
            int r = i * RECORD_BYTES;
            out.putShort(r, (short) TYPE_ENTRY).putShort(r + 2, (short) 1).putInt(r + 4, gen)
                    .putLong(r + 8, i).putLong(r + 16, n)
                    .putLong(r + 24, e.tag()).putLong(r + 32, e.offset()).putLong(r + 40, e.length())
                    .putLong(r + 48, e.done() ? FLAG_DONE : 0).putInt(r + 56, prev);
            prev = Crc32c.of(out, r, r + 60);
            out.putInt(r + 60, prev);
        }
        // slot n stays zero: a record of generation gen cannot be there, but a zero slot makes the end plain
        out.limit((int) Math.min(n + 1L, halfRecords) * RECORD_BYTES);
        store.write(out, slotPos(half, 0));
        store.force();
        writeHeader(gen, half);
        next = n;
        durable = n;
        prevCrc = prev;
    }

    /** Records currently used in the active half (entries, DONE and RETIRE records). */
    public synchronized long usedRecords() {
        return next;
    }

    public long halfRecords() {
        return halfRecords;
    }

    public int leg() {
        return leg;
    }

    public String describe() {
        return store.describe();
    }

    @Override
    public void close() throws IOException {
        store.close();
    }
}
