package io.snapbd.server.config;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class SizesTest {

    @Test
    void parsesBinarySuffixes() {
        assertEquals(4096, Sizes.parse("4096"));
        assertEquals(512L << 10, Sizes.parse("512K"));
        assertEquals(256L << 20, Sizes.parse("256m"));
        assertEquals(1L << 30, Sizes.parse("1G"));
        assertEquals(1L << 30, Sizes.parse("1GiB"));
        assertEquals(2L << 40, Sizes.parse("2T"));
    }

    @Test
    void rejectsGarbageWithAClearMessage() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Sizes.parse("12Q"));
        assertTrue(e.getMessage().contains("12Q"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> Sizes.parse(""));
        assertThrows(IllegalArgumentException.class, () -> Sizes.parse("-1G"));
        assertThrows(IllegalArgumentException.class, () -> Sizes.parse("99999999999999999999"));
        assertThrows(IllegalArgumentException.class, () -> Sizes.parse("16777216T"));
    }

    @Test
    void formatsReadably() {
        assertEquals("1 GiB", Sizes.format(1L << 30));
        assertEquals("256 MiB", Sizes.format(256L << 20));
        assertEquals("4 KiB", Sizes.format(4096));
        assertEquals("100 B", Sizes.format(100));
    }
}
