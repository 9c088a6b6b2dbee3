package io.snapbd.engine.volume;

import io.snapbd.engine.format.AtomicFile;
import io.snapbd.engine.format.CorruptMetadataException;
import io.snapbd.engine.format.Crc32c;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.UUID;

/**
 * {@code volume.meta}: the identity and state of one volume, 4096 bytes, replaced atomically (write, fsync,
 * rename). Byte layout in docs/on-disk-format.md.
 */
public record VolumeHeader(String name, UUID uuid, long size, int blockSize, long saveSize, long createdNanos,
                           long openCount, int regionShift, int flags) {

    public static final long MAGIC = 0x004c4f5644424e53L;   // "SNBDVOL\0" little-endian
    public static final int VERSION = 1;
    public static final int BYTES = 4096;
    public static final int CRC_OFFSET = 252;
    public static final int NAME_MAX = 128;

    public static final int FLAG_CLEAN = 1;
    public static final int FLAG_SPARSE = 2;

    public boolean clean() {
        return (flags & FLAG_CLEAN) != 0;
    }

    public boolean sparse() {
        return (flags & FLAG_SPARSE) != 0;
    }

    public long blocks() {
        return size / blockSize;
    }

    public VolumeHeader withFlags(int newFlags) {
        return new VolumeHeader(name, uuid, size, blockSize, saveSize, createdNanos, openCount, regionShift, newFlags);
    }

    public VolumeHeader withOpenCount(long n) {
        return new VolumeHeader(name, uuid, size, blockSize, saveSize, createdNanos, n, regionShift, flags);
    }

    public ByteBuffer encode() {
        ByteBuffer b = ByteBuffer.allocate(BYTES).order(ByteOrder.LITTLE_ENDIAN);
        byte[] n = name.getBytes(StandardCharsets.UTF_8);
        if (n.length > NAME_MAX) {
            throw new IllegalArgumentException("volume name longer than " + NAME_MAX + " bytes");
        }
        b.putLong(0, MAGIC).putInt(8, VERSION).putInt(12, BYTES)
                .putLong(16, uuid.getMostSignificantBits()).putLong(24, uuid.getLeastSignificantBits())
                .putLong(32, size).putInt(40, blockSize).putInt(44, flags).putLong(48, saveSize)
                .putLong(56, createdNanos).putLong(64, openCount).putInt(72, regionShift)
                .putShort(76, (short) n.length);
        b.put(80, n);
        b.putInt(CRC_OFFSET, Crc32c.of(b, 0, CRC_OFFSET));
        return b;
    }

    public static VolumeHeader decode(Path file, ByteBuffer b) throws CorruptMetadataException {
        b = b.duplicate().order(ByteOrder.LITTLE_ENDIAN);
        if (b.limit() < BYTES) {
            throw new CorruptMetadataException(file, "truncated: " + b.limit() + " bytes, expected " + BYTES);
        }
        if (b.getLong(0) != MAGIC) {
            throw new CorruptMetadataException(file, "bad magic (not a snapbd volume header)");
        }
        if (b.getInt(CRC_OFFSET) != Crc32c.of(b, 0, CRC_OFFSET)) {
            throw new CorruptMetadataException(file, "header checksum mismatch");
        }
        if (b.getInt(8) != VERSION) {
            throw new CorruptMetadataException(file, "unsupported version " + b.getInt(8) + " (this build reads " + VERSION + ")");
        }
        int nameLen = Short.toUnsignedInt(b.getShort(76));
        if (nameLen > NAME_MAX) {
            throw new CorruptMetadataException(file, "name length " + nameLen + " out of range");
        }
        byte[] n = new byte[nameLen];
        b.get(80, n);
        VolumeHeader h = new VolumeHeader(new String(n, StandardCharsets.UTF_8),
                new UUID(b.getLong(16), b.getLong(24)), b.getLong(32), b.getInt(40), b.getLong(48),
                b.getLong(56), b.getLong(64), b.getInt(72), b.getInt(44));
        if (h.blockSize < 512 || h.blockSize > 65536 || Integer.bitCount(h.blockSize) != 1
                || h.size <= 0 || h.size % h.blockSize != 0 || h.regionShift < 0 || h.regionShift > 30) {
            throw new CorruptMetadataException(file, "inconsistent geometry: size " + h.size + ", block size " + h.blockSize);
        }
        return h;
    }

    public static VolumeHeader read(Path file) throws IOException {
        return decode(file, AtomicFile.readAll(file, 2 * BYTES));
    }

    public void write(Path file) throws IOException {
        AtomicFile.write(file, encode());
    }
}
