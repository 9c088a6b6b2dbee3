package io.snapbd.engine.mirror;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.List;
import java.util.UUID;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The degraded leg's region bit map (docs/glossary.md: Symantec DRM, behaviour 29): durable, region-rounded, crash-safe. */
class LegRegionMapTest {

    @TempDir
    Path dir;

    private final UUID owner = UUID.randomUUID();
    static final long SIZE = (1L << 20) * 3 + 4096;   // not a multiple of the region
    static final int SHIFT = 16;                        // 64 KiB regions

    private Path file() {
        return dir.resolve("leg-1.regions");
    }

    private LegRegionMap reopen() throws IOException {
        return LegRegionMap.open(FileTagStore.open(file(), true), owner, 1);
    }

    /** Symantec behaviour 29: a missed write's regions stay set across a reopen until cleared after the copy. */
    @Test
    void symantec29_missedRegionsSurviveReopenUntilCleared() throws IOException {
        try (LegRegionMap m = LegRegionMap.create(FileTagStore.create(file(), LegRegionMap.areaBytes(SIZE, SHIFT)), owner, 1, SIZE, SHIFT)) {
            m.markMissed(70_000, 10);           // region 1
            m.markMissed(SIZE - 1, 1);          // the last, short region
            m.markMissed(131_072, 65_537);      // regions 2 and 3
        }
        try (LegRegionMap m = reopen()) {
            List<long[]> r = m.missedRanges();
            assertEquals(2, r.size());
            assertArrayEquals(new long[]{65_536, 3 * 65_536}, r.get(0));
            assertArrayEquals(new long[]{(SIZE >>> SHIFT) << SHIFT, SIZE - ((SIZE >>> SHIFT) << SHIFT)}, r.get(1));
            m.clear(65_536, 3 * 65_536);
        }
        try (LegRegionMap m = reopen()) {
            assertEquals(1, m.missedRanges().size());
            assertTrue(m.notes().isEmpty());
        }
    }

    /** A bit page whose write was cut short reads as all missed: the resync copies more, never less. */
    @Test
    void tornPageReadsAsAllMissed() throws IOException {
        LegRegionMap.create(FileTagStore.create(file(), LegRegionMap.areaBytes(SIZE, SHIFT)), owner, 1, SIZE, SHIFT).close();
        try (FileTagStore s = FileTagStore.open(file(), true)) {
            s.write(ByteBuffer.wrap(new byte[]{1}), 4096 + 5);   // page written, its checksum not
        }
        try (LegRegionMap m = reopen()) {
            assertEquals(1, m.notes().size());
            List<long[]> r = m.missedRanges();
            assertEquals(1, r.size());
            assertArrayEquals(new long[]{0, SIZE}, r.get(0));
        }
    }

    @Test
    void foreignOrOutOfRangeIsRefused() throws IOException {
        LegRegionMap.create(FileTagStore.create(file(), LegRegionMap.areaBytes(SIZE, SHIFT)), owner, 1, SIZE, SHIFT).close();
        assertThrows(IOException.class, () -> LegRegionMap.open(FileTagStore.open(file(), true), owner, 0));
        try (LegRegionMap m = reopen()) {
            assertThrows(IllegalArgumentException.class, () -> m.markMissed(SIZE - 1, 2));
        }
    }
}
