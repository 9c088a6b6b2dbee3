package io.snapbd.engine.mirror;

import io.snapbd.engine.format.CeilingFile;
import io.snapbd.engine.format.CorruptMetadataException;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.UUID;
import java.util.concurrent.atomic.AtomicLong;

/**
 * The per-volume tag counter of a mirrored volume (docs/glossary.md: Symantec behaviours 1 and 11): every
 * write, TRIM and WRITE_ZEROES takes the next tag, and no tag is ever handed out twice, across clean
 * restarts and crashes alike.
 *
 * <p>The same lease pattern as {@code LunState}, in the same file frame ({@link CeilingFile}): tags handed out
 * are always below a <em>ceiling</em> that is durable in {@code mirror.tags}. {@link #next} is a lock-free
 * increment; only when it reaches the ceiling does it raise the ceiling by {@link #LEASE} and force the file
 * (atomic replace) before the tag is returned. A clean close stores the exact next tag; after a crash the
 * counter restarts at the ceiling, above every tag handed out before. Tag 0 is never handed out (it means
 * "no tag").
 */
public final class TagSource {

    public static final String FILE = "mirror.tags";
    static final long MAGIC = 0x5347415444424e53L;   // "SNBDTAGS" little-endian
    static final int VERSION = 1;
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
        ByteBuffer b = CeilingFile.read(f, MAGIC, VERSION, owner, "tag counter");
        if (b == null) {
            return null;
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
            CeilingFile.write(file, CeilingFile.frame(MAGIC, VERSION, clean, owner).putLong(32, clean ? counter.get() : newCeiling));
            ceiling = newCeiling;
        }
    }
}
