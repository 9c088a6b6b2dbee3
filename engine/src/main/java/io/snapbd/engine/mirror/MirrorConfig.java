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
 * atomically (byte table in docs/on-disk-format.md). Leg 0 is always the volume's own {@code data.img} with its
 * table {@code leg0.tags}; the file lists the extra legs' URIs, in leg order, each with its <em>id</em>: the leg
 * number its tag table header and its region map record, fixed when the leg is made and never reused
 * ({@code nextId}). Positions change when a leg is removed, ids do not, so {@code mirror remove} is this one
 * atomic replace (docs/mirrors.md, "Adding and removing legs"). Version 2; version 1 (no ids: leg i has id i) is
 * still read. A volume without this file is not mirrored (every volume made before mirrors existed).
 */
public record MirrorConfig(UUID owner, long halfRecords, List<String> extraLegs, List<Integer> ids, int nextId) {

    public static final String FILE = "mirror.legs";
    /** Leg 0's tag table, in the volume's directory. */
    public static final String LOCAL_TABLE = "leg0.tags";
    static final long MAGIC = 0x4c52494d44424e53L;   // "SNBDMIRL" little-endian
    static final int VERSION = 2;
    /** The first version: no ids, leg i's id is i. Read, never written. */
    static final int VERSION_1 = 1;
    static final int BYTES = 4096;
    static final int CRC_OFFSET = BYTES - 4;
    static final int HEADER = 64;
    /** Extra legs at most (leg 0 not counted). */
    public static final int MAX_EXTRA_LEGS = 7;

    public MirrorConfig {
        extraLegs = List.copyOf(extraLegs);
        ids = List.copyOf(ids);
        if (extraLegs.isEmpty() || extraLegs.size() > MAX_EXTRA_LEGS) {
            throw new IllegalArgumentException("a mirrored volume needs 1 to " + MAX_EXTRA_LEGS
                    + " --mirror legs, not " + extraLegs.size());
        }
        if (halfRecords < 2) {
            throw new IllegalArgumentException("half records " + halfRecords);
        }
        String bad = badIds(ids, extraLegs.size(), nextId);
        if (bad != null) {
            throw new IllegalArgumentException(bad);
        }
    }

    /** A new leg list: the legs get ids 1 … n in order. */
    public MirrorConfig(UUID owner, long halfRecords, List<String> extraLegs) {
        this(owner, halfRecords, extraLegs, sequence(extraLegs.size()), extraLegs.size() + 1);
    }

    private static List<Integer> sequence(int n) {
        List<Integer> out = new ArrayList<>();
        for (int i = 1; i <= n; i++) {
            out.add(i);
        }
        return out;
    }

    /** Why {@code ids} cannot go with {@code legs} legs and {@code nextId}, or null: distinct, 1 ≤ id < nextId. */
    private static String badIds(List<Integer> ids, int legs, int nextId) {
        if (ids.size() != legs) {
            return ids.size() + " leg ids for " + legs + " legs";
        }
        for (int i = 0; i < ids.size(); i++) {
            int id = ids.get(i);
            if (id < 1 || id >= nextId) {
                return "leg " + (i + 1) + ": id " + id + " out of range 1 … " + (nextId - 1);
            }
            if (ids.indexOf(id) != i) {
                return "leg id " + id + " twice";
            }
        }
        return null;
    }

    /** The id of the extra leg at position {@code leg} (1 … legs() − 1); leg 0's is 0. */
    public int id(int leg) {
        return leg == 0 ? 0 : ids.get(leg - 1);
    }

    /** This list with leg {@code uri} appended under the next id. */
    public MirrorConfig with(String uri) {
        List<String> u = new ArrayList<>(extraLegs);
        List<Integer> d = new ArrayList<>(ids);
        u.add(uri);
        d.add(nextId);
        return new MirrorConfig(owner, halfRecords, u, d, nextId + 1);
    }

    /** This list without the extra leg at position {@code leg} (1 …); the others keep their ids; null if none is left. */
    public MirrorConfig without(int leg) {
        List<String> u = new ArrayList<>(extraLegs);
        List<Integer> d = new ArrayList<>(ids);
        u.remove(leg - 1);
        d.remove(leg - 1);
        return u.isEmpty() ? null : new MirrorConfig(owner, halfRecords, u, d, nextId);
    }

    /** Legs including leg 0. */
    public int legs() {
        return extraLegs.size() + 1;
    }

    public ByteBuffer encode() {
        ByteBuffer b = ByteBuffer.allocate(BYTES).order(ByteOrder.LITTLE_ENDIAN);
        b.putLong(0, MAGIC).putInt(8, VERSION).putInt(12, extraLegs.size())
                .putLong(16, owner.getMostSignificantBits()).putLong(24, owner.getLeastSignificantBits())
                .putLong(32, halfRecords).putInt(40, nextId);
        int pos = HEADER;
        for (int i = 0; i < extraLegs.size(); i++) {
            byte[] n = extraLegs.get(i).getBytes(StandardCharsets.UTF_8);
            if (n.length == 0 || pos + 6 + n.length > CRC_OFFSET) {
                throw new IllegalArgumentException("mirror leg URIs too long (at most " + (CRC_OFFSET - HEADER)
                        + " bytes in all) or empty");
            }
            b.putInt(pos, ids.get(i));
            b.putShort(pos + 4, (short) n.length);
            b.put(pos + 6, n);
            pos += 6 + n.length;
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
        int version = b.getInt(8);
        if (version != VERSION && version != VERSION_1) {
            throw new CorruptMetadataException(file, "unsupported version " + version + " (this build reads "
                    + VERSION_1 + " and " + VERSION + ")");
        }
        boolean v1 = version == VERSION_1;
        int idBytes = v1 ? 0 : 4;
        int n = b.getInt(12);
        if (n < 1 || n > MAX_EXTRA_LEGS) {
            throw new CorruptMetadataException(file, "leg count " + n + " out of range 1 … " + MAX_EXTRA_LEGS);
        }
        long half = b.getLong(32);
        if (half < 2) {
            throw new CorruptMetadataException(file, "half records " + half + " out of range");
        }
        List<String> legs = new ArrayList<>();
        List<Integer> ids = new ArrayList<>();
        int nextId = v1 ? n + 1 : b.getInt(40);
        int pos = HEADER;
        for (int i = 0; i < n; i++) {
            if (pos + idBytes + 2 > CRC_OFFSET) {
                throw new CorruptMetadataException(file, "leg " + (i + 1) + " lies past the end of the list");
            }
            ids.add(v1 ? i + 1 : b.getInt(pos));
            int len = Short.toUnsignedInt(b.getShort(pos + idBytes));
            if (len == 0 || pos + idBytes + 2 + len > CRC_OFFSET) {
                throw new CorruptMetadataException(file, "leg " + (i + 1) + ": URI length " + len + " out of range");
            }
            byte[] u = new byte[len];
            b.get(pos + idBytes + 2, u);
            legs.add(new String(u, StandardCharsets.UTF_8));
            pos += idBytes + 2 + len;
        }
        String bad = badIds(ids, n, nextId);
        if (bad != null) {
            throw new CorruptMetadataException(file, bad + " (next id " + nextId + ")");
        }
        return new MirrorConfig(new UUID(b.getLong(16), b.getLong(24)), half, legs, ids, nextId);
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
