package io.snapbd.engine.format;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.UUID;

/**
 * The 64-byte file that keeps the durable ceiling of a leased counter: {@code lun.state} ({@code LunState}) and
 * {@code mirror.tags} ({@code TagSource}). Values are handed out from memory below a ceiling that is on disk; a
 * clean close stores the exact values, a crash restarts at the ceiling. Both files share this frame (little-endian):
 *
 * <pre>
 *   0  8  magic          (the file's own)
 *   8  4  version
 *  12  4  clean          1 after a clean close (exact values), 0 while open (ceilings)
 *  16 16  owner          the volume's UUID (most, then least significant half)
 *  32 28  the file's own fields
 *  60  4  CRC32C of bytes 0..59
 * </pre>
 *
 * Byte tables in docs/on-disk-format.md ({@code lun.state}) and docs/mirrors.md ({@code mirror.tags}).
 */
public final class CeilingFile {

    public static final int BYTES = 64;
    public static final int CRC_OFFSET = 60;
    /** Where the file's own fields start. */
    public static final int FIELDS = 32;

    private CeilingFile() {
    }

    /**
     * Reads {@code f} and checks its size, magic, checksum, version and (unless {@code owner} is null) owner;
     * null if it does not exist. The clean flag and the fields are the caller's to check. {@code kind} names the
     * file in the error of a wrong magic or size ("LUN state", "tag counter").
     */
    public static ByteBuffer read(Path f, long magic, int version, UUID owner, String kind) throws IOException {
        if (!Files.exists(f)) {
            return null;
        }
        ByteBuffer b = AtomicFile.readAll(f, 4096).order(ByteOrder.LITTLE_ENDIAN);
        if (b.limit() != BYTES || b.getLong(0) != magic) {
            throw new CorruptMetadataException(f, "bad magic or size (not a snapbd " + kind + " file)");
        }
        if (b.getInt(CRC_OFFSET) != Crc32c.of(b, 0, CRC_OFFSET)) {
            throw new CorruptMetadataException(f, "checksum mismatch");
        }
        if (b.getInt(8) != version) {
            throw new CorruptMetadataException(f, "unsupported version " + b.getInt(8));
        }
        if (owner != null && !new UUID(b.getLong(16), b.getLong(24)).equals(owner)) {
            throw new CorruptMetadataException(f, "belongs to another volume");
        }
        return b;
    }

    /** A new frame with magic, version, clean flag and owner set; the caller puts its fields at 32..59, then {@link #write}. */
    public static ByteBuffer frame(long magic, int version, boolean clean, UUID owner) {
        ByteBuffer b = ByteBuffer.allocate(BYTES).order(ByteOrder.LITTLE_ENDIAN);
        b.putLong(0, magic).putInt(8, version).putInt(12, clean ? 1 : 0)
                .putLong(16, owner.getMostSignificantBits()).putLong(24, owner.getLeastSignificantBits());
        return b;
    }

    /** Sets the checksum of {@code frame} and replaces {@code f} by it atomically; durable on return. */
    public static void write(Path f, ByteBuffer frame) throws IOException {
        frame.putInt(CRC_OFFSET, Crc32c.of(frame, 0, CRC_OFFSET));
        AtomicFile.write(f, frame);
    }
}
