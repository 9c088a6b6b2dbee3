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
import java.util.ArrayList;
import java.util.List;
import java.util.UUID;

/**
 * {@code snapshots.meta}: the snapshot queue of a volume, oldest first, with the next sequence number.
 * Replaced atomically on every change. Layout in docs/on-disk-format.md.
 */
final class SnapshotTable {

    static final long MAGIC = 0x50414e5344424e53L;   // "SNBDSNAP" little-endian
    static final int VERSION = 1;
    static final int HEADER_BYTES = 64;
    static final int ENTRY_BYTES = 256;
    static final int CRC_OFFSET = 60;
    static final int NAME_MAX = 64;
    static final int REASON_MAX = 120;

    record Contents(long nextSeq, List<SnapshotRecord> snapshots) {
    }

    private SnapshotTable() {
    }

    static void write(Path file, UUID owner, long nextSeq, List<SnapshotRecord> snapshots) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(HEADER_BYTES + ENTRY_BYTES * snapshots.size()).order(ByteOrder.LITTLE_ENDIAN);
        b.putLong(0, MAGIC).putInt(8, VERSION).putInt(12, HEADER_BYTES)
                .putLong(16, owner.getMostSignificantBits()).putLong(24, owner.getLeastSignificantBits())
                .putLong(32, nextSeq).putInt(40, snapshots.size()).putInt(44, ENTRY_BYTES);
        for (int i = 0; i < snapshots.size(); i++) {
            SnapshotRecord s = snapshots.get(i);
            int o = HEADER_BYTES + i * ENTRY_BYTES;
            byte[] name = s.name().getBytes(StandardCharsets.UTF_8);
            byte[] reason = s.reason() == null ? new byte[0] : s.reason().getBytes(StandardCharsets.UTF_8);
            if (name.length > NAME_MAX) {
                throw new IllegalArgumentException("snapshot name longer than " + NAME_MAX + " bytes");
            }
            int rlen = Math.min(reason.length, REASON_MAX);
            b.putLong(o, s.seq()).putLong(o + 8, s.createdNanos()).putInt(o + 16, s.state().code)
                    .putLong(o + 24, s.lunCounter()).putLong(o + 32, s.lunTimestamp()).putInt(o + 40, s.lunEnabled() ? 1 : 0)
                    .putShort(o + 44, (short) name.length).putShort(o + 46, (short) rlen);
            b.put(o + 48, name);
            b.put(o + 48 + NAME_MAX, reason, 0, rlen);
        }
        b.putInt(CRC_OFFSET, 0);
        b.putInt(CRC_OFFSET, Crc32c.of(b, 0, b.capacity()));
        AtomicFile.write(file, b);
    }

    static Contents read(Path file, UUID owner) throws IOException {
        if (!Files.exists(file)) {
            return new Contents(1, List.of());
        }
        ByteBuffer b = AtomicFile.readAll(file, HEADER_BYTES + ENTRY_BYTES * 65536).order(ByteOrder.LITTLE_ENDIAN);
        if (b.limit() < HEADER_BYTES || b.getLong(0) != MAGIC) {
            throw new CorruptMetadataException(file, "bad magic (not a snapbd snapshot table)");
        }
        int stored = b.getInt(CRC_OFFSET);
        b.putInt(CRC_OFFSET, 0);
        if (stored != Crc32c.of(b, 0, b.limit())) {
            throw new CorruptMetadataException(file, "checksum mismatch");
        }
        if (b.getInt(8) != VERSION) {
            throw new CorruptMetadataException(file, "unsupported version " + b.getInt(8));
        }
        if (!new UUID(b.getLong(16), b.getLong(24)).equals(owner)) {
            throw new CorruptMetadataException(file, "belongs to another volume");
        }
        int count = b.getInt(40);
        if (b.getInt(44) != ENTRY_BYTES || b.limit() != HEADER_BYTES + (long) count * ENTRY_BYTES) {
            throw new CorruptMetadataException(file, "size does not match " + count + " entries");
        }
        List<SnapshotRecord> list = new ArrayList<>();
        for (int i = 0; i < count; i++) {
            int o = HEADER_BYTES + i * ENTRY_BYTES;
            int nlen = Short.toUnsignedInt(b.getShort(o + 44));
            int rlen = Short.toUnsignedInt(b.getShort(o + 46));
            if (nlen > NAME_MAX || rlen > REASON_MAX) {
                throw new CorruptMetadataException(file, "entry " + i + " has bad string lengths");
            }
            byte[] name = new byte[nlen];
            byte[] reason = new byte[rlen];
            b.get(o + 48, name);
            b.get(o + 48 + NAME_MAX, reason);
            list.add(new SnapshotRecord(b.getLong(o), new String(name, StandardCharsets.UTF_8), b.getLong(o + 8),
                    SnapshotRecord.State.of(b.getInt(o + 16)), rlen == 0 ? null : new String(reason, StandardCharsets.UTF_8),
                    b.getLong(o + 24), b.getLong(o + 32), b.getInt(o + 40) != 0));
        }
        return new Contents(b.getLong(32), list);
    }
}
