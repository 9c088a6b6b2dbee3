package io.snapbd.engine.bitmap;

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
import java.nio.file.StandardOpenOption;
import java.util.BitSet;
import java.util.UUID;

import static io.snapbd.engine.TestVolumes.flipByte;
import static io.snapbd.engine.TestVolumes.readRaw;
import static io.snapbd.engine.bitmap.PagedBitMap.PAGE_BITS;
import static io.snapbd.engine.bitmap.PagedBitMap.PAGE_BYTES;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class BitMapFileTest {

    private static final UUID OWNER = UUID.fromString("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0");
    private static final long BITS = 3L * PAGE_BITS + 1000;       // 4 pages, the last one partial
    /** 4096 header + 4 KiB page table (4 entries of 8 bytes, padded to 4 KiB) */
    private static final long PAGES_OFFSET = 8192;
    /** Page table entry: CRC-32C (4 bytes) then flags (4 bytes, bit 0 = present). */
    private static final int ENTRY = 8;

    @TempDir
    Path dir;

    private Path file() {
        return dir.resolve("meta.bitmap");
    }

    private BitMapFile create() throws IOException {
        return BitMapFile.create(file(), BitMapFile.Kind.META, OWNER, BITS);
    }

    private BitMapFile open(PagedBitMap into, BitSet damaged) throws IOException {
        return BitMapFile.open(file(), BitMapFile.Kind.META, OWNER, into, damaged);
    }

    @Test
    void headerLayoutIsWhatTheFormatDocumentSays() throws IOException {
        create().close();
        assertEquals(PAGES_OFFSET + 4L * PAGE_BYTES, Files.size(file()));
        ByteBuffer h = ByteBuffer.wrap(readRaw(file(), 0, 4096)).order(ByteOrder.LITTLE_ENDIAN);
        assertEquals("SNBDBMAP", new String(readRaw(file(), 0, 8), StandardCharsets.US_ASCII));
        assertEquals(1, h.getInt(8), "version");
        assertEquals(4096, h.getInt(12), "header bytes");
        assertEquals(BITS, h.getLong(16), "bits");
        assertEquals(4, h.getInt(24), "page count");
        assertEquals(PAGE_BITS, h.getInt(28), "bits per page");
        assertEquals(OWNER.getMostSignificantBits(), h.getLong(32));
        assertEquals(OWNER.getLeastSignificantBits(), h.getLong(40));
        assertEquals(1, h.getInt(48), "kind META");
        assertEquals(PAGES_OFFSET, h.getLong(52), "pages offset");
        assertEquals(Crc32c.of(h, 0, 60), h.getInt(60), "header CRC-32C over bytes 0..59");
        for (int i = 64; i < 4096; i++) {
            assertEquals(0, h.get(i), "reserved header byte " + i);
        }
        int zeroPageCrc = Crc32c.of(new byte[PAGE_BYTES], 0, PAGE_BYTES);
        ByteBuffer table = ByteBuffer.wrap(readRaw(file(), 4096, 4096)).order(ByteOrder.LITTLE_ENDIAN);
        for (int p = 0; p < 4; p++) {
            assertEquals(zeroPageCrc, table.getInt(ENTRY * p), "CRC of empty page " + p);
            assertEquals(1, table.getInt(ENTRY * p + 4), "flags of page " + p + ": present");
        }
        for (int i = 4 * ENTRY; i < 4096; i++) {
            assertEquals(0, table.get(i), "CRC table padding byte " + i);
        }
    }

    @Test
    void kindCodesAreStable() {
        assertEquals(1, BitMapFile.Kind.META.code);
        assertEquals(2, BitMapFile.Kind.INTENT.code);
        assertEquals(3, BitMapFile.Kind.SNAPSHOT_BITS.code);
        assertEquals(4, BitMapFile.Kind.SNAPSHOT_META.code);
        assertEquals(5, BitMapFile.Kind.FREE_CHUNKS.code);
    }

    @Test
    void createThenOpenRoundTripsEveryBit() throws IOException {
        PagedBitMap m = new PagedBitMap(BITS);
        long[] bits = {0, 1, 63, 64, PAGE_BITS - 1, PAGE_BITS, 2L * PAGE_BITS + 12345, BITS - 1};
        try (BitMapFile f = create()) {
            for (long b : bits) {
                m.set(b);
            }
            assertEquals(4, f.writeDirty(m), "every page holds a set bit");
            f.force();
            assertEquals(0, f.writeDirty(m), "nothing is dirty after a write");
            assertEquals(file(), f.path());
            assertEquals(BITS, f.bits());
        }
        PagedBitMap back = new PagedBitMap(BITS);
        BitSet damaged = new BitSet();
        open(back, damaged).close();
        assertTrue(damaged.isEmpty());
        assertEquals(bits.length, back.cardinality());
        for (long b : bits) {
            assertTrue(back.get(b), "bit " + b);
        }
        for (int p = 0; p < back.pages(); p++) {
            assertFalse(back.takeDirty(p), "a loaded map is not dirty");
        }
    }

    @Test
    void writeAllRewritesEveryPage() throws IOException {
        PagedBitMap m = new PagedBitMap(BITS);
        try (BitMapFile f = create()) {
            m.set(5);
            f.writeAll(m);
            assertFalse(m.takeDirty(0), "writeAll takes the dirty flags");
        }
        PagedBitMap back = new PagedBitMap(BITS);
        open(back, new BitSet()).close();
        assertTrue(back.get(5));
    }

    @Test
    void createRefusesAnExistingFile() throws IOException {
        create().close();
        assertThrows(java.nio.file.FileAlreadyExistsException.class, this::create);
    }

    @Test
    void emptyMapRoundTrips() throws IOException {
        BitMapFile.create(file(), BitMapFile.Kind.INTENT, OWNER, 0).close();
        assertEquals(4096, Files.size(file()));
        PagedBitMap m = new PagedBitMap(0);
        BitMapFile.open(file(), BitMapFile.Kind.INTENT, OWNER, m, new BitSet()).close();
        assertEquals(0, m.cardinality());
    }

    @Test
    void wrongKindIsRefusedAndNamesTheFile() throws IOException {
        create().close();
        CorruptMetadataException e = assertThrows(CorruptMetadataException.class, () ->
                BitMapFile.open(file(), BitMapFile.Kind.INTENT, OWNER, new PagedBitMap(BITS), new BitSet()));
        assertTrue(e.getMessage().contains(file().toString()), e.getMessage());
        assertTrue(e.getMessage().contains("kind 1, expected 2 (INTENT)"), e.getMessage());
    }

    @Test
    void wrongOwnerIsRefusedAndNamesTheFile() throws IOException {
        create().close();
        UUID other = new UUID(1, 2);
        CorruptMetadataException e = assertThrows(CorruptMetadataException.class, () ->
                BitMapFile.open(file(), BitMapFile.Kind.META, other, new PagedBitMap(BITS), new BitSet()));
        assertTrue(e.getMessage().contains(file().toString()), e.getMessage());
        assertTrue(e.getMessage().contains("belongs to " + OWNER + ", not " + other), e.getMessage());
    }

    @Test
    void wrongSizeIsRefusedAndNamesTheFile() throws IOException {
        create().close();
        CorruptMetadataException e = assertThrows(CorruptMetadataException.class, () ->
                BitMapFile.open(file(), BitMapFile.Kind.META, OWNER, new PagedBitMap(BITS + 1), new BitSet()));
        assertTrue(e.getMessage().contains(file().toString()), e.getMessage());
        assertTrue(e.getMessage().contains("holds " + BITS + " bits, expected " + (BITS + 1)), e.getMessage());
    }

    @Test
    void flippedPageByteMarksThatPageDamagedAndLoadsItClear() throws IOException {
        PagedBitMap m = new PagedBitMap(BITS);
        try (BitMapFile f = create()) {
            m.set(10);                          // page 0
            m.set(PAGE_BITS + 10);              // page 1
            m.set(2L * PAGE_BITS + 10);         // page 2
            f.writeDirty(m);
        }
        flipByte(file(), PAGES_OFFSET + PAGE_BYTES + 777);      // inside page 1
        PagedBitMap back = new PagedBitMap(BITS);
        BitSet damaged = new BitSet();
        open(back, damaged).close();
        assertEquals(BitSet.valueOf(new long[]{0b10}), damaged, "only page 1 is damaged");
        assertTrue(back.get(10));
        assertFalse(back.get(PAGE_BITS + 10), "a damaged page loads as all clear");
        assertTrue(back.get(2L * PAGE_BITS + 10));
    }

    @Test
    void flippedCrcTableEntryMarksThatPageDamaged() throws IOException {
        create().close();
        flipByte(file(), 4096 + ENTRY * 3 + 2);     // CRC of page 3
        BitSet damaged = new BitSet();
        open(new PagedBitMap(BITS), damaged).close();
        assertEquals(BitSet.valueOf(new long[]{0b1000}), damaged);
    }

    @Test
    void aPageWhoseEntryIsNotPresentIsReportedAndLoadedClear() throws IOException {
        PagedBitMap m = new PagedBitMap(BITS);
        try (BitMapFile f = create()) {
            m.set(2L * PAGE_BITS + 1);
            f.writeDirty(m);
        }
        flipByte(file(), 4096 + ENTRY * 2 + 4);  // flags of page 2: present bit cleared
        PagedBitMap back = new PagedBitMap(BITS);
        BitSet damaged = new BitSet();
        open(back, damaged).close();
        assertEquals(BitSet.valueOf(new long[]{0b100}), damaged);
        assertEquals(0, back.cardinality());
    }

    @Test
    void flippedHeaderByteIsCorruptMetadata() throws IOException {
        create().close();
        flipByte(file(), 20);                   // inside the bit count
        CorruptMetadataException e = assertThrows(CorruptMetadataException.class, () -> open(new PagedBitMap(BITS), new BitSet()));
        assertTrue(e.getMessage().contains(file().toString()), e.getMessage());
        assertTrue(e.getMessage().contains("header checksum mismatch"), e.getMessage());
    }

    @Test
    void flippedMagicIsReportedAsNotABitMap() throws IOException {
        create().close();
        flipByte(file(), 0);
        CorruptMetadataException e = assertThrows(CorruptMetadataException.class, () -> open(new PagedBitMap(BITS), new BitSet()));
        assertTrue(e.getMessage().contains("bad magic"), e.getMessage());
    }

    @Test
    void unknownVersionIsRefused() throws IOException {
        create().close();
        ByteBuffer h = ByteBuffer.wrap(readRaw(file(), 0, 4096)).order(ByteOrder.LITTLE_ENDIAN);
        h.putInt(8, 2);
        h.putInt(60, Crc32c.of(h, 0, 60));
        io.snapbd.engine.TestVolumes.writeRaw(file(), 0, h.array());
        CorruptMetadataException e = assertThrows(CorruptMetadataException.class, () -> open(new PagedBitMap(BITS), new BitSet()));
        assertTrue(e.getMessage().contains("unsupported version 2"), e.getMessage());
    }

    @Test
    void truncatedFileIsCorruptMetadata() throws IOException {
        create().close();
        try (var ch = java.nio.channels.FileChannel.open(file(), StandardOpenOption.WRITE)) {
            ch.truncate(PAGES_OFFSET + PAGE_BYTES + 5);
        }
        CorruptMetadataException e = assertThrows(CorruptMetadataException.class, () -> open(new PagedBitMap(BITS), new BitSet()));
        assertTrue(e.getMessage().contains("truncated"), e.getMessage());
        assertTrue(e.getMessage().contains(file().toString()), e.getMessage());
    }

    @Test
    void writeDirtyWritesOnlyTheDirtyPagesAndTheirChecksums() throws IOException {
        PagedBitMap m = new PagedBitMap(BITS);
        try (BitMapFile f = create()) {
            m.set(1);
            m.set(PAGE_BITS + 1);
            m.set(2L * PAGE_BITS + 1);
            m.set(3L * PAGE_BITS + 1);
            f.writeDirty(m);
        }
        // Scribble over pages 0, 1 and 3 (and their checksums) on disk behind the map's back; a later writeDirty
        // that touches only page 2 must leave the scribbles alone.
        byte[] junk = new byte[PAGE_BYTES];
        java.util.Arrays.fill(junk, (byte) 0x5A);
        for (int p : new int[]{0, 1, 3}) {
            io.snapbd.engine.TestVolumes.writeRaw(file(), PAGES_OFFSET + (long) p * PAGE_BYTES, junk);
        }
        byte[] before = Files.readAllBytes(file());
        PagedBitMap again = new PagedBitMap(BITS);
        BitSet damaged = new BitSet();
        try (BitMapFile f = open(again, damaged)) {
            assertEquals(BitSet.valueOf(new long[]{0b1011}), damaged);
            again.set(2L * PAGE_BITS + 2);
            assertEquals(1, f.writeDirty(again));
        }
        byte[] after = Files.readAllBytes(file());
        for (int i = 0; i < before.length; i++) {
            boolean page2 = i >= PAGES_OFFSET + 2L * PAGE_BYTES && i < PAGES_OFFSET + 3L * PAGE_BYTES;
            boolean crc2 = i >= 4096 + 2 * ENTRY && i < 4096 + 3 * ENTRY;
            if (!page2 && !crc2 && before[i] != after[i]) {
                throw new AssertionError("byte " + i + " outside page 2 and its checksum changed");
            }
        }
        assertFalse(java.util.Arrays.equals(
                java.util.Arrays.copyOfRange(before, (int) (PAGES_OFFSET + 2L * PAGE_BYTES), (int) (PAGES_OFFSET + 3L * PAGE_BYTES)),
                java.util.Arrays.copyOfRange(after, (int) (PAGES_OFFSET + 2L * PAGE_BYTES), (int) (PAGES_OFFSET + 3L * PAGE_BYTES))));
        PagedBitMap back = new PagedBitMap(BITS);
        BitSet damaged2 = new BitSet();
        open(back, damaged2).close();
        assertFalse(damaged2.get(2));
        assertTrue(back.get(2L * PAGE_BITS + 1));
        assertTrue(back.get(2L * PAGE_BITS + 2));
    }

    @Test
    void pageBytesAreLittleEndianWords() throws IOException {
        PagedBitMap m = new PagedBitMap(BITS);
        try (BitMapFile f = create()) {
            m.set(0);
            m.set(9);                // byte 1, bit 1
            m.set(64 + 7);           // byte 8, bit 7
            f.writeDirty(m);
        }
        byte[] page = readRaw(file(), PAGES_OFFSET, 16);
        assertArrayEquals(new byte[]{1, 2, 0, 0, 0, 0, 0, 0, (byte) 0x80, 0, 0, 0, 0, 0, 0, 0}, page);
        ByteBuffer table = ByteBuffer.wrap(readRaw(file(), 4096, ENTRY)).order(ByteOrder.LITTLE_ENDIAN);
        assertEquals(Crc32c.of(readRaw(file(), PAGES_OFFSET, PAGE_BYTES), 0, PAGE_BYTES), table.getInt(0));
        assertEquals(1, table.getInt(4), "a written page is present");
    }
}
