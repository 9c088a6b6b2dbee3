package io.snapbd.engine.mirror;

import io.snapbd.engine.format.AtomicFile;
import io.snapbd.engine.format.CorruptMetadataException;
import io.snapbd.engine.format.Crc32c;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.UUID;
import java.util.concurrent.atomic.AtomicLong;

/**
 * The per-volume tag counter of a mirrored volume (docs/glossary.md: Symantec behaviours 1 and 11): every
 * write, TRIM and WRITE_ZEROES takes the next tag, and no tag is ever handed out twice, across clean
 * restarts and crashes alike.
 *
 * <p>The same lease pattern as {@code LunState}: tags handed out are always below a <em>ceiling</em> that is
 * durable in {@code mirror.tags}. {@link #next} is a lock-free increment; only when it reaches the ceiling does
 * it raise the ceiling by {@link #LEASE} and force the file (atomic replace) before the tag is returned. A clean
 * close stores the exact next tag; after a crash the counter restarts at the ceiling, above every tag handed
 * out before. Tag 0 is never handed out (it means "no tag").
 */
public final class TagSource {

    public static final String FILE = "mirror.tags";
    static final long MAGIC = 0x5347415444424e53L;   // "SNBDTAGS" little-endian
    static final int VERSION = 1;
    static final int BYTES = 64;
    static final int CRC_OFFSET = 60;
    /** Tags granted per forced write of the ceiling. */
    public static final long LEASE = 1L << 20;

    /** The fields of a {@code mirror.tags} file as {@link #read} decodes and checks them. */
    public record Stored(boolean clean, long next) {
    }

    private final Path file;
    private final UUID owner;
    private final long lease;
    private final AtomicLong counter;
    private final Object persistLock = new Object();
    private volatile long ceiling;
    private final boolean recoveredFromCrash;

    private TagSource(Path file, UUID owner, long lease, long next, boolean crashed) {
        this.file = file;
        this.owner = owner;
        this.lease = lease;
        this.counter = new AtomicLong(next);
        this.ceiling = next;
        this.recoveredFromCrash = crashed;
    }

    /** Opens (or, when absent, creates) the tag source of the volume {@code owner} in {@code dir}. */
    public static TagSource open(Path dir, UUID owner) throws IOException {
        return open(dir, owner, LEASE);
    }

    static TagSource open(Path dir, UUID owner, long lease) throws IOException {
        if (lease < 1) {
            throw new IllegalArgumentException("lease " + lease);
        }
        Path f = dir.resolve(FILE);
        Stored st = read(f, owner);
        TagSource s = st == null ? new TagSource(f, owner, lease, 1, false)
                : new TagSource(f, owner, lease, st.next(), !st.clean());
        // From now on the file says "not clean" and holds a ceiling above anything handed out.
        s.persist(false, s.counter.get() + lease);
        return s;
    }

    /** Reads and checks {@code mirror.tags} without changing it; null if absent. Used by {@link #open} and fsck. */
    public static Stored read(Path f, UUID owner) throws IOException {
        if (!Files.exists(f)) {
            return null;
        }
        ByteBuffer b = AtomicFile.readAll(f, 4096).order(ByteOrder.LITTLE_ENDIAN);
        if (b.limit() != BYTES || b.getLong(0) != MAGIC) {
            throw new CorruptMetadataException(f, "bad magic or size (not a snapbd tag counter file)");
        }
        if (b.getInt(CRC_OFFSET) != Crc32c.of(b, 0, CRC_OFFSET)) {
            throw new CorruptMetadataException(f, "checksum mismatch");
        }
        if (b.getInt(8) != VERSION) {
            throw new CorruptMetadataException(f, "unsupported version " + b.getInt(8));
        }
        if (owner != null && !new UUID(b.getLong(16), b.getLong(24)).equals(owner)) {
            throw new CorruptMetadataException(f, "belongs to another volume");
        }
        int clean = b.getInt(12);
        if (clean != 0 && clean != 1) {
            throw new CorruptMetadataException(f, "clean flag out of range: " + clean);
        }
        long next = b.getLong(32);
        if (next < 1) {
            throw new CorruptMetadataException(f, "next tag " + next + " is below 1");
        }
        return new Stored(clean == 1, next);
    }

    /** The next tag: unique for the life of the volume. Lock-free except once per {@link #LEASE} tags. */
    public long next() throws IOException {
        long t = counter.getAndIncrement();
        if (t >= ceiling) {
            synchronized (persistLock) {
                if (t >= ceiling) {
                    persist(false, Math.max(ceiling, t + 1) + lease - 1);
                }
            }
        }
        return t;
    }

    public boolean recoveredFromCrash() {
        return recoveredFromCrash;
    }

    /** Stores the exact next tag and marks the file clean (clean stop; no tag may be taken afterwards). */
    public void closeClean() throws IOException {
        synchronized (persistLock) {
            persist(true, ceiling);
        }
    }

    /** Writes the file durably, then publishes the new ceiling. Clean: the exact next tag; else the ceiling. */
    private void persist(boolean clean, long newCeiling) throws IOException {
        synchronized (persistLock) {
            ByteBuffer b = ByteBuffer.allocate(BYTES).order(ByteOrder.LITTLE_ENDIAN);
            b.putLong(0, MAGIC).putInt(8, VERSION).putInt(12, clean ? 1 : 0)
                    .putLong(16, owner.getMostSignificantBits()).putLong(24, owner.getLeastSignificantBits())
                    .putLong(32, clean ? counter.get() : newCeiling);
            b.putInt(CRC_OFFSET, Crc32c.of(b, 0, CRC_OFFSET));
            AtomicFile.write(file, b);
            ceiling = newCeiling;
        }
    }
}
