package io.snapbd.engine.snapshot;

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
import java.util.List;
import java.util.UUID;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** {@code restore.marker}: the byte layout docs/on-disk-format.md gives, and every read check. */
class RestoreMarkerTest {

    @TempDir
    Path dir;

    private final UUID owner = new UUID(0x0102030405060708L, 0x1112131415161718L);

    @Test
    void byteLayoutIsWhatTheFormatDocumentSays() throws IOException {
        long before = System.currentTimeMillis() * 1_000_000L;
        RestoreMarker.write(dir, owner, 7, "nightly");
        byte[] f = Files.readAllBytes(dir.resolve("restore.marker"));
        assertEquals(128, f.length);
        ByteBuffer b = ByteBuffer.wrap(f).order(ByteOrder.LITTLE_ENDIAN);
        assertArrayEquals("SNBDRSTR".getBytes(StandardCharsets.US_ASCII), java.util.Arrays.copyOf(f, 8), "magic");
        assertEquals(0x5254535244424E53L, b.getLong(0));
        assertEquals(1, b.getInt(8), "version");
        assertEquals(128, b.getInt(12), "file_bytes");
        assertEquals(owner.getMostSignificantBits(), b.getLong(16));
        assertEquals(owner.getLeastSignificantBits(), b.getLong(24));
        assertEquals(7, b.getLong(32), "snapshot sequence");
        assertTrue(b.getLong(40) >= before && b.getLong(40) % 1_000_000L == 0, "started, ns with ms resolution");
        assertEquals(7, b.getShort(48), "name_length");
        for (int i = 50; i < 60; i++) {
            assertEquals(0, f[i], "reserved byte " + i);
        }
        assertEquals("nightly", new String(f, 64, 7, StandardCharsets.UTF_8));
        for (int i = 71; i < 128; i++) {
            assertEquals(0, f[i], "name padding byte " + i);
        }
        int crc = b.getInt(60);
        b.putInt(60, 0);
        assertEquals(Crc32c.of(b, 0, 128), crc, "CRC-32C of the whole file with the CRC field zero");
        RestoreMarker.Contents c = RestoreMarker.read(dir, owner);
        assertEquals(7, c.seq());
        assertEquals("nightly", c.name());
        RestoreMarker.delete(dir);
        assertFalse(RestoreMarker.exists(dir));
        assertNull(RestoreMarker.read(dir, owner), "no marker: no restore to finish");
    }

    @Test
    void everyReadCheckNamesTheFile() throws IOException {
        Path f = dir.resolve("restore.marker");
        RestoreMarker.write(dir, owner, 3, "s");
        byte[] good = Files.readAllBytes(f);
        String[][] cases = {{"0", "bad magic"}, {"70", "checksum mismatch"}, {"100", "checksum mismatch"}};
        for (String[] c : cases) {
            byte[] bad = good.clone();
            bad[Integer.parseInt(c[0])] ^= 0x5a;
            Files.write(f, bad);
            CorruptMetadataException e = assertThrows(CorruptMetadataException.class, () -> RestoreMarker.read(dir, owner));
            assertTrue(e.getMessage().startsWith(f.toString()) && e.getMessage().contains(c[1]), e.getMessage());
        }
        Files.write(f, java.util.Arrays.copyOf(good, 100));
        assertTrue(assertThrows(CorruptMetadataException.class, () -> RestoreMarker.read(dir, owner)).getMessage().contains("expected 128"));
        Files.write(f, good);
        assertTrue(assertThrows(CorruptMetadataException.class, () -> RestoreMarker.read(dir, UUID.randomUUID()))
                .getMessage().contains("another volume"));
        ByteBuffer v2 = ByteBuffer.wrap(good.clone()).order(ByteOrder.LITTLE_ENDIAN);
        v2.putInt(8, 2).putInt(60, 0);
        v2.putInt(60, Crc32c.of(v2, 0, 128));
        Files.write(f, v2.array());
        assertTrue(assertThrows(CorruptMetadataException.class, () -> RestoreMarker.read(dir, owner))
                .getMessage().contains("unsupported version 2"));
    }

    @Test
    void aMarkerMustNameAnActiveSnapshotOfTheSameName() {
        RestoreMarker.Contents m = new RestoreMarker.Contents(2, "b", 0);
        SnapshotRecord a = new SnapshotRecord(1, "a", 0, SnapshotRecord.State.ACTIVE, null, 0, 0, false);
        SnapshotRecord b = new SnapshotRecord(2, "b", 0, SnapshotRecord.State.ACTIVE, null, 0, 0, false);
        assertNull(RestoreMarker.unresumable(m, List.of(a, b)));
        assertTrue(RestoreMarker.unresumable(m, List.of(a)).contains("does not exist"));
        assertTrue(RestoreMarker.unresumable(m, List.of(a, b.invalid("save volume full"))).contains("invalid (save volume full)"));
        assertTrue(RestoreMarker.unresumable(new RestoreMarker.Contents(2, "x", 0), List.of(a, b)).contains("that sequence is snapshot b"));
    }
}
