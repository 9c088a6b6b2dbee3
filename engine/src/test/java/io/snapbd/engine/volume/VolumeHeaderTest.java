package io.snapbd.engine.volume;

import io.snapbd.engine.format.CorruptMetadataException;
import io.snapbd.engine.format.Crc32c;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.UUID;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class VolumeHeaderTest {

    private static final Path FILE = Path.of("/data/volumes/vol0/volume.meta");
    private static final VolumeHeader H = new VolumeHeader("vol0", UUID.fromString("01234567-89ab-cdef-fedc-ba9876543210"),
            5L << 30, 4096, 256L << 20, 1_700_000_000_123_000_000L, 42, 9,
            VolumeHeader.FLAG_CLEAN | VolumeHeader.FLAG_SPARSE);

    @TempDir
    Path dir;

    @Test
    void encodeDecodeRoundTrip() throws IOException {
        ByteBuffer b = H.encode();
        assertEquals(VolumeHeader.BYTES, b.limit());
        VolumeHeader back = VolumeHeader.decode(FILE, b);
        assertEquals(H, back);
        assertTrue(back.clean());
        assertTrue(back.sparse());
        assertEquals((5L << 30) / 4096, back.blocks());
    }

    @Test
    void nonAsciiNameOfTheMaximumLengthRoundTrips() throws IOException {
        String name = "é".repeat(VolumeHeader.NAME_MAX / 2);         // 2 bytes each in UTF-8
        VolumeHeader h = new VolumeHeader(name, UUID.randomUUID(), 1 << 20, 512, 0, 0, 0, 12, 0);
        VolumeHeader back = VolumeHeader.decode(FILE, h.encode());
        assertEquals(name, back.name());
        assertFalse(back.clean());
        assertFalse(back.sparse());
    }

    @Test
    void nameLongerThanTheFieldIsRefusedOnEncode() {
        VolumeHeader h = new VolumeHeader("x".repeat(VolumeHeader.NAME_MAX + 1), UUID.randomUUID(), 1 << 20, 512, 0, 0, 0, 12, 0);
        assertThrows(IllegalArgumentException.class, h::encode);
    }

    @Test
    void byteLayoutIsWhatTheFormatDocumentSays() {
        ByteBuffer b = H.encode().order(ByteOrder.LITTLE_ENDIAN);
        byte[] magic = new byte[8];
        b.get(0, magic);
        assertEquals("SNBDVOL\0", new String(magic, StandardCharsets.US_ASCII));
        assertEquals(1, b.getInt(8), "version");
        assertEquals(4096, b.getInt(12), "header bytes");
        assertEquals(H.uuid().getMostSignificantBits(), b.getLong(16));
        assertEquals(H.uuid().getLeastSignificantBits(), b.getLong(24));
        assertEquals(5L << 30, b.getLong(32), "size");
        assertEquals(4096, b.getInt(40), "block size");
        assertEquals(3, b.getInt(44), "flags");
        assertEquals(256L << 20, b.getLong(48), "save size");
        assertEquals(1_700_000_000_123_000_000L, b.getLong(56), "created");
        assertEquals(42, b.getLong(64), "open count");
        assertEquals(9, b.getInt(72), "region shift");
        assertEquals(4, b.getShort(76), "name length");
        assertEquals(0, b.getShort(78), "reserved");
        byte[] name = new byte[4];
        b.get(80, name);
        assertEquals("vol0", new String(name, StandardCharsets.UTF_8));
        for (int i = 84; i < 252; i++) {
            assertEquals(0, b.get(i), "padding byte " + i);
        }
        assertEquals(Crc32c.of(b, 0, 252), b.getInt(252), "CRC-32C of bytes 0..251");
        for (int i = 256; i < 4096; i++) {
            assertEquals(0, b.get(i), "reserved byte " + i);
        }
    }

    @Test
    void badMagicIsNamed() {
        ByteBuffer b = H.encode();
        b.put(0, (byte) 'X');
        CorruptMetadataException e = assertThrows(CorruptMetadataException.class, () -> VolumeHeader.decode(FILE, b));
        assertEquals(FILE + ": bad magic (not a snapbd volume header)", e.getMessage());
    }

    @Test
    void flippedByteFailsTheChecksum() {
        for (int pos : new int[]{8, 33, 80, 251, 252}) {
            ByteBuffer b = H.encode();
            b.put(pos, (byte) (b.get(pos) ^ 1));
            CorruptMetadataException e = assertThrows(CorruptMetadataException.class, () -> VolumeHeader.decode(FILE, b),
                    "byte " + pos);
            assertEquals(FILE + ": header checksum mismatch", e.getMessage());
        }
    }

    @Test
    void bytesPastTheChecksumAreNotCovered() throws IOException {
        ByteBuffer b = H.encode();
        b.put(300, (byte) 1);
        assertEquals(H, VolumeHeader.decode(FILE, b));
    }

    @Test
    void unknownVersionIsRefusedWithBothVersions() {
        ByteBuffer b = H.encode().order(ByteOrder.LITTLE_ENDIAN);
        b.putInt(8, 2);
        b.putInt(252, Crc32c.of(b, 0, 252));
        CorruptMetadataException e = assertThrows(CorruptMetadataException.class, () -> VolumeHeader.decode(FILE, b));
        assertEquals(FILE + ": unsupported version 2 (this build reads 1)", e.getMessage());
    }

    @Test
    void truncatedHeaderIsRefused() {
        ByteBuffer b = H.encode();
        b.limit(100);
        CorruptMetadataException e = assertThrows(CorruptMetadataException.class, () -> VolumeHeader.decode(FILE, b));
        assertEquals(FILE + ": truncated: 100 bytes, expected 4096", e.getMessage());
    }

    @Test
    void inconsistentGeometryWithAValidChecksumIsRefused() {
        for (int[] bad : new int[][]{{40, 1000}, {40, 256}, {40, 131072}, {72, 31}}) {
            ByteBuffer b = H.encode().order(ByteOrder.LITTLE_ENDIAN);
            b.putInt(bad[0], bad[1]);
            b.putInt(252, Crc32c.of(b, 0, 252));
            CorruptMetadataException e = assertThrows(CorruptMetadataException.class, () -> VolumeHeader.decode(FILE, b),
                    "field at " + bad[0] + " = " + bad[1]);
            assertTrue(e.getMessage().contains("inconsistent geometry"), e.getMessage());
        }
        ByteBuffer b = H.encode().order(ByteOrder.LITTLE_ENDIAN);
        b.putLong(32, (5L << 30) + 1);
        b.putInt(252, Crc32c.of(b, 0, 252));
        assertThrows(CorruptMetadataException.class, () -> VolumeHeader.decode(FILE, b));
    }

    @Test
    void nameLengthOutOfRangeIsRefused() {
        ByteBuffer b = H.encode().order(ByteOrder.LITTLE_ENDIAN);
        b.putShort(76, (short) 200);
        b.putInt(252, Crc32c.of(b, 0, 252));
        CorruptMetadataException e = assertThrows(CorruptMetadataException.class, () -> VolumeHeader.decode(FILE, b));
        assertTrue(e.getMessage().contains("name length 200"), e.getMessage());
    }

    @Test
    void writeReplacesAtomicallyAndReadGetsItBack() throws IOException {
        Path f = dir.resolve("volume.meta");
        H.write(f);
        assertEquals(4096, Files.size(f));
        assertEquals(H, VolumeHeader.read(f));
        VolumeHeader next = H.withFlags(0).withOpenCount(43);
        next.write(f);
        assertEquals(next, VolumeHeader.read(f));
        assertFalse(Files.exists(dir.resolve("volume.meta.tmp")), "no temporary file is left behind");
        try (var s = Files.list(dir)) {
            assertEquals(1, s.count());
        }
        assertEquals(43, VolumeHeader.read(f).openCount());
        assertEquals(H.createdNanos(), VolumeHeader.read(f).createdNanos());
        assertTrue(Arrays.equals(Files.readAllBytes(f), next.encode().array()));
    }

    @Test
    void readOfAnOversizedFileIsRefused() throws IOException {
        Path f = dir.resolve("volume.meta");
        Files.write(f, new byte[3 * 4096]);
        CorruptMetadataException e = assertThrows(CorruptMetadataException.class, () -> VolumeHeader.read(f));
        assertTrue(e.getMessage().startsWith(f.toString()), e.getMessage());
    }
}
