package io.snapbd.engine.snapshot;

import io.snapbd.engine.format.AtomicFile;
import io.snapbd.engine.format.CorruptMetadataException;
import io.snapbd.engine.format.Crc32c;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.UUID;

/**
 * {@code restore.marker}: a restore of production from a snapshot has begun and not finished. Written (atomic
 * replace, forced) before the restore changes the first production block, deleted (and the directory forced)
 * after production's data and meta bit map are durable. While it exists, opening the volume finishes the restore
 * before anything else can use it: restoring is idempotent, so a crash at any point, even during that resumption,
 * leaves production either untouched (no marker yet) or exactly the snapshot's content once the volume opens.
 * Layout in docs/on-disk-format.md.
 */
public final class RestoreMarker {

    public static final String FILE = "restore.marker";
    static final long MAGIC = 0x5254535244424e53L;   // "SNBDRSTR" little-endian
    static final int VERSION = 1;
    static final int BYTES = 128;
    static final int CRC_OFFSET = 60;
    static final int NAME_OFFSET = 64;
    static final int NAME_MAX = 64;

    /** What the marker records: the snapshot being restored, and when the restore began (ns since the epoch). */
    public record Contents(long seq, String name, long startedNanos) {
    }

    private RestoreMarker() {
    }

    public static Path file(Path dir) {
        return dir.resolve(FILE);
    }

    public static boolean exists(Path dir) {
        return Files.exists(file(dir));
    }

    /** Writes the marker durably (file and directory forced) before the restore changes anything. */
    public static void write(Path dir, UUID owner, long seq, String name) throws IOException {
        byte[] n = name.getBytes(StandardCharsets.UTF_8);
        if (n.length > NAME_MAX) {
            throw new IllegalArgumentException("snapshot name longer than " + NAME_MAX + " bytes");
        }
        ByteBuffer b = ByteBuffer.allocate(BYTES).order(ByteOrder.LITTLE_ENDIAN);
        b.putLong(0, MAGIC).putInt(8, VERSION).putInt(12, BYTES)
                .putLong(16, owner.getMostSignificantBits()).putLong(24, owner.getLeastSignificantBits())
                .putLong(32, seq).putLong(40, System.currentTimeMillis() * 1_000_000L)
                .putShort(48, (short) n.length);
        b.put(NAME_OFFSET, n);
        b.putInt(CRC_OFFSET, Crc32c.of(b, 0, BYTES));    // computed with the CRC field still zero
        AtomicFile.write(file(dir), b);
    }

    /** The marker of an unfinished restore, or null when there is none. */
    public static Contents read(Path dir, UUID owner) throws IOException {
        Path f = file(dir);
        if (!Files.exists(f)) {
            return null;
        }
        ByteBuffer b = AtomicFile.readAll(f, 4096).order(ByteOrder.LITTLE_ENDIAN);
        if (b.limit() < 16 || b.getLong(0) != MAGIC) {
            throw new CorruptMetadataException(f, "bad magic (not a snapbd restore marker)");
        }
        if (b.limit() != BYTES) {
            throw new CorruptMetadataException(f, "file is " + b.limit() + " bytes, expected " + BYTES);
        }
        int stored = b.getInt(CRC_OFFSET);
        b.putInt(CRC_OFFSET, 0);
        if (stored != Crc32c.of(b, 0, BYTES)) {
            throw new CorruptMetadataException(f, "checksum mismatch");
        }
        if (b.getInt(8) != VERSION) {
            throw new CorruptMetadataException(f, "unsupported version " + b.getInt(8) + " (this build reads " + VERSION + ")");
        }
        if (!new UUID(b.getLong(16), b.getLong(24)).equals(owner)) {
            throw new CorruptMetadataException(f, "belongs to another volume");
        }
        int len = Short.toUnsignedInt(b.getShort(48));
        if (len == 0 || len > NAME_MAX) {
            throw new CorruptMetadataException(f, "bad snapshot name length " + len);
        }
        byte[] n = new byte[len];
        b.get(NAME_OFFSET, n);
        return new Contents(b.getLong(32), new String(n, StandardCharsets.UTF_8), b.getLong(40));
    }

    /** Removes the marker once the restore is durable; the directory is forced so the removal is too. */
    public static void delete(Path dir) throws IOException {
        if (Files.deleteIfExists(file(dir))) {
            AtomicFile.fsyncDirectory(dir);
        }
    }

    /**
     * Why the marker cannot be acted on, or null when it names an active snapshot of this volume: the snapshot
     * table must list {@code m.seq()} as active under the same name.
     */
    public static String unresumable(Contents m, List<SnapshotRecord> table) {
        for (SnapshotRecord r : table) {
            if (r.seq() == m.seq()) {
                if (!r.name().equals(m.name())) {
                    return "names snapshot " + m.name() + " (sequence " + m.seq() + ") but that sequence is snapshot " + r.name();
                }
                return r.state() == SnapshotRecord.State.ACTIVE ? null
                        : "names snapshot " + m.name() + " (sequence " + m.seq() + "), which is invalid (" + r.reason() + ")";
            }
        }
        return "names snapshot " + m.name() + " (sequence " + m.seq() + "), which does not exist";
    }

    /**
     * fsck: a marker that cannot be read, or that names no active snapshot, is a problem (the volume will not
     * open); a good one is a note (the next open finishes the restore).
     */
    public static void check(Path dir, UUID owner, List<String> problems, List<String> notes) {
        Contents m;
        try {
            m = read(dir, owner);
        } catch (IOException e) {
            problems.add(e.getMessage());
            return;
        }
        if (m == null) {
            return;
        }
        String why;
        try {
            why = unresumable(m, SnapshotTable.read(dir.resolve(SnapshotSet.TABLE_FILE), owner).snapshots());
        } catch (IOException e) {
            return;     // the table's own check reports it
        }
        if (why != null) {
            problems.add(FILE + ": " + why + ": the interrupted restore cannot be finished and production is partly restored");
        } else {
            notes.add(FILE + ": a restore from snapshot " + m.name() + " was interrupted; production is partly restored "
                    + "until the next open finishes it");
        }
    }
}
