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
    void rejectsBlanksAnywhere() {
        for (String s : new String[] {" 1M", "1M ", "1 M", "\t1M", "1M\n", " ", "1 GiB"}) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Sizes.parse(s), "'" + s + "'");
            assertTrue(e.getMessage().contains("'" + s + "'") && e.getMessage().contains("no blanks"), e.getMessage());
        }
    }

    @Test
    void rejectsDecimalLookingUnitsAsAmbiguous() {
        for (String s : new String[] {"1MB", "1mb", "4KB", "2GB", "1TB", "1Mb"}) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Sizes.parse(s), s);
            assertTrue(e.getMessage().contains("'" + s + "'") && e.getMessage().contains("ambiguous"), e.getMessage());
        }
        // A bare B, an iB without a letter, a doubled suffix: none is a size.
        for (String s : new String[] {"512B", "512iB", "1MM", "1MiBB", "1.5G", "0x10", "+1M"}) {
            assertThrows(IllegalArgumentException.class, () -> Sizes.parse(s), s);
        }
        assertEquals(1L << 20, Sizes.parse("1MiB"));
        assertEquals(1L << 20, Sizes.parse("1m"));
        assertEquals(4L << 10, Sizes.parse("4kib"));
    }

    @Test
    void formatsReadably() {
        assertEquals("1 GiB", Sizes.format(1L << 30));
        assertEquals("256 MiB", Sizes.format(256L << 20));
        assertEquals("4 KiB", Sizes.format(4096));
        assertEquals("100 B", Sizes.format(100));
    }
}
