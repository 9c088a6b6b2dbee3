package io.snapbd.engine.mirror;

import io.snapbd.engine.format.AtomicFile;
import io.snapbd.engine.format.CorruptMetadataException;
import io.snapbd.engine.format.Crc32c;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.UUID;

/**
 * {@code mirror.legs}: which legs a mirrored volume has, 4096 bytes in the volume's directory, replaced
 * atomically, version 1 (byte table in docs/on-disk-format.md). Leg 0 is always the volume's own
 * {@code data.img} with its table {@code leg0.tags}; the file lists the extra legs' URIs, in leg order. A volume
 * without this file is not mirrored (every volume made before mirrors existed).
 */
public record MirrorConfig(UUID owner, long halfRecords, List<String> extraLegs) {

    public static final String FILE = "mirror.legs";
    /** Leg 0's tag table, in the volume's directory. */
    public static final String LOCAL_TABLE = "leg0.tags";
    static final long MAGIC = 0x4c52494d44424e53L;   // "SNBDMIRL" little-endian
    static final int VERSION = 1;
    static final int BYTES = 4096;
    static final int CRC_OFFSET = BYTES - 4;
    static final int HEADER = 64;
    /** Extra legs at most (leg 0 not counted). */
    public static final int MAX_EXTRA_LEGS = 7;

    public MirrorConfig {
        extraLegs = List.copyOf(extraLegs);
        if (extraLegs.isEmpty() || extraLegs.size() > MAX_EXTRA_LEGS) {
            throw new IllegalArgumentException("a mirrored volume needs 1 to " + MAX_EXTRA_LEGS
                    + " --mirror legs, not " + extraLegs.size());
        }
        if (halfRecords < 2) {
            throw new IllegalArgumentException("half records " + halfRecords);
        }
    }

    /** Legs including leg 0. */
    public int legs() {
        return extraLegs.size() + 1;
    }

    public ByteBuffer encode() {
        ByteBuffer b = ByteBuffer.allocate(BYTES).order(ByteOrder.LITTLE_ENDIAN);
        b.putLong(0, MAGIC).putInt(8, VERSION).putInt(12, extraLegs.size())
                .putLong(16, owner.getMostSignificantBits()).putLong(24, owner.getLeastSignificantBits())
                .putLong(32, halfRecords);
        int pos = HEADER;
        for (String u : extraLegs) {
            byte[] n = u.getBytes(StandardCharsets.UTF_8);
            if (n.length == 0 || pos + 2 + n.length > CRC_OFFSET) {
                throw new IllegalArgumentException("mirror leg URIs too long (at most " + (CRC_OFFSET - HEADER)
                        + " bytes in all) or empty");
            }
            b.putShort(pos, (short) n.length);
            b.put(pos + 2, n);
            pos += 2 + n.length;
        }
        b.putInt(CRC_OFFSET, Crc32c.of(b, 0, CRC_OFFSET));
        return b;
    }

    public static MirrorConfig decode(Path file, ByteBuffer b) throws CorruptMetadataException {
        b = b.duplicate().order(ByteOrder.LITTLE_ENDIAN);
        if (b.limit() != BYTES || b.getLong(0) != MAGIC) {
            throw new CorruptMetadataException(file, "bad magic or size (not a snapbd mirror leg list)");
        }
        if (b.getInt(CRC_OFFSET) != Crc32c.of(b, 0, CRC_OFFSET)) {
            throw new CorruptMetadataException(file, "checksum mismatch");
        }
        if (b.getInt(8) != VERSION) {
            throw new CorruptMetadataException(file, "unsupported version " + b.getInt(8) + " (this build reads " + VERSION + ")");
        }
        int n = b.getInt(12);
        if (n < 1 || n > MAX_EXTRA_LEGS) {
            throw new CorruptMetadataException(file, "leg count " + n + " out of range 1 … " + MAX_EXTRA_LEGS);
        }
        long half = b.getLong(32);
        if (half < 2) {
            throw new CorruptMetadataException(file, "half records " + half + " out of range");
        }
        List<String> legs = new ArrayList<>();
        int pos = HEADER;
        for (int i = 0; i < n; i++) {
            int len = Short.toUnsignedInt(b.getShort(pos));
            if (len == 0 || pos + 2 + len > CRC_OFFSET) {
                throw new CorruptMetadataException(file, "leg " + (i + 1) + ": URI length " + len + " out of range");
            }
            byte[] u = new byte[len];
            b.get(pos + 2, u);
            legs.add(new String(u, StandardCharsets.UTF_8));
            pos += 2 + len;
        }
        return new MirrorConfig(new UUID(b.getLong(16), b.getLong(24)), half, legs);
    }

    /** The volume's leg list, or null when the volume is not mirrored; checks the owner when given. */
    public static MirrorConfig read(Path dir, UUID owner) throws IOException {
        Path f = dir.resolve(FILE);
        if (!Files.exists(f)) {
            return null;
        }
        MirrorConfig c = decode(f, AtomicFile.readAll(f, 2 * BYTES));
        if (owner != null && !c.owner().equals(owner)) {
            throw new CorruptMetadataException(f, "belongs to volume " + c.owner() + ", not " + owner);
        }
        return c;
    }

    public void write(Path dir) throws IOException {
        AtomicFile.write(dir.resolve(FILE), encode());
    }
}
