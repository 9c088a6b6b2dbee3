package io.snapbd.engine.mirror;

import io.snapbd.engine.format.CorruptMetadataException;
import io.snapbd.engine.format.Crc32c;
import org.junit.jupiter.api.Test;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.List;
import java.util.UUID;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** {@code mirror.legs} version 2 (leg ids) round trip, version 1 still read, bad ids refused (docs/on-disk-format.md). */
class MirrorConfigTest {

    private static final Path F = Path.of("mirror.legs");
    private final UUID owner = UUID.randomUUID();

    @Test
    void idsSurviveARemovalAndAreNeverReused() throws Exception {
        MirrorConfig c = new MirrorConfig(owner, 16384, List.of("/a", "/b", "/c"));
        assertEquals(List.of(1, 2, 3), c.ids());
        MirrorConfig d = c.without(1).with("/d");
        assertEquals(List.of("/b", "/c", "/d"), d.extraLegs());
        assertEquals(List.of(2, 3, 4), d.ids());
        assertEquals(5, d.nextId());
        assertEquals(3, d.id(2));
        assertEquals(0, d.id(0));
        MirrorConfig back = MirrorConfig.decode(F, d.encode());
        assertEquals(d, back);
        assertEquals(2, d.encode().order(ByteOrder.LITTLE_ENDIAN).getInt(8), "written as version 2");
    }

    /** A list written by the previous version (1: no ids) still opens: leg i has id i. */
    @Test
    void version1IsStillRead() throws Exception {
        ByteBuffer b = ByteBuffer.allocate(4096).order(ByteOrder.LITTLE_ENDIAN);
        b.putLong(0, MirrorConfig.MAGIC).putInt(8, 1).putInt(12, 2)
                .putLong(16, owner.getMostSignificantBits()).putLong(24, owner.getLeastSignificantBits()).putLong(32, 16384);
        int pos = 64;
        for (String u : List.of("/x.leg", "nbd://h/e")) {
            byte[] n = u.getBytes(StandardCharsets.UTF_8);
            b.putShort(pos, (short) n.length);
            b.put(pos + 2, n);
            pos += 2 + n.length;
        }
        b.putInt(4092, Crc32c.of(b, 0, 4092));
        MirrorConfig c = MirrorConfig.decode(F, b);
        assertEquals(List.of("/x.leg", "nbd://h/e"), c.extraLegs());
        assertEquals(List.of(1, 2), c.ids());
        assertEquals(3, c.nextId());
    }

    @Test
    void badIdsAreRefusedNamingTheFile() {
        ByteBuffer b = new MirrorConfig(owner, 16384, List.of("/a", "/b"), List.of(2, 1), 3).encode()
                .order(ByteOrder.LITTLE_ENDIAN);
        b.putInt(64 + 6 + 2, 2);                     // the second leg's id made equal to the first's
        b.putInt(4092, Crc32c.of(b, 0, 4092));
        CorruptMetadataException e = assertThrows(CorruptMetadataException.class, () -> MirrorConfig.decode(F, b));
        assertTrue(e.getMessage().contains("mirror.legs") && e.getMessage().contains("twice"), e.getMessage());
        b.putInt(64, 9);                             // and out of range (next id 3)
        b.putInt(4092, Crc32c.of(b, 0, 4092));
        assertThrows(CorruptMetadataException.class, () -> MirrorConfig.decode(F, b));
        assertThrows(IllegalArgumentException.class, () -> new MirrorConfig(owner, 16384, List.of("/a"), List.of(0), 1));
    }
}
