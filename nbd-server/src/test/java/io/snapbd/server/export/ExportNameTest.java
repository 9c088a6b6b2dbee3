package io.snapbd.server.export;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

class ExportNameTest {

    @Test
    void volumeAndSnapshotNamesRoundTrip() {
        ExportName v = ExportName.parse("vol0");
        assertEquals("vol0", v.volume());
        assertNull(v.snapshot());
        assertFalse(v.isSnapshot());
        assertEquals("vol0", v.toString());

        ExportName s = ExportName.parse("vol0@monday");
        assertEquals("vol0", s.volume());
        assertEquals("monday", s.snapshot());
        assertTrue(s.isSnapshot());
        assertEquals("vol0@monday", s.toString());
        assertEquals(s, ExportName.ofSnapshot("vol0", "monday"));
        assertEquals("vol0@monday", ExportName.format("vol0", "monday"));
    }

    @Test
    void theFirstAtSeparatesAndBelongsToComparesWholeVolumeNames() {
        ExportName odd = ExportName.parse("a@b@c");
        assertEquals("a", odd.volume());
        assertEquals("b@c", odd.snapshot());
        assertEquals("", ExportName.parse("@x").volume());

        assertTrue(ExportName.parse("vol0@s").belongsTo("vol0"));
        assertTrue(ExportName.parse("vol0").belongsTo("vol0"));
        assertFalse(ExportName.parse("vol01@s").belongsTo("vol0"));
        assertFalse(ExportName.parse("vol01").belongsTo("vol0"));
    }
}
